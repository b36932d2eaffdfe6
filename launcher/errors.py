"""Errors a user can cause, each with the exit code the CLI returns for it.

The CLI prints ``str(error)`` as one line and exits with ``error.exit_code``;
anything that is not a :class:`LaunchError` is a bug and keeps its traceback.
"""


class LaunchError(Exception):
    """A runtime failure: a host unreachable, a process that did not start.

    ``host`` (an address) is the host it happened on, if one; ``message``
    says what, without the host. ``str()`` is ``"<host>: <message>"``, the
    one line the CLI prints.
    """

    exit_code = 1

    def __init__(self, message: str, *, host: str | None = None):
        super().__init__(f"{host}: {message}" if host else message)
        self.host, self.message = host, message


class InventoryError(LaunchError):
    """The inventory (or a command-line argument) is invalid; nothing was contacted."""

    exit_code = 2


class PreflightError(LaunchError):
    """The hosts do not match the client (versions, memory, ports); nothing was started."""

    exit_code = 3


def by_cause(failures: dict[str, str], shown: int = 4) -> str:
    """One line for many hosts' failures, grouped by cause.

    ``failures`` maps a host's address to its message; a message that starts
    with the address (``"10.0.0.1: connection refused"``) is stripped of it so
    that equal causes group: ``64 hosts: connection refused on port 22
    (10.0.0.1, 10.0.0.2, 10.0.0.3 … 10.0.0.64)``. At most ``shown`` addresses
    are listed per cause (the first ones and the last), so the line stays
    short for thousands of hosts.
    """
    groups: dict[str, list[str]] = {}
    for address, message in failures.items():
        groups.setdefault(message.removeprefix(f"{address}: "), []).append(address)
    parts = []
    for cause, hosts in groups.items():
        if len(hosts) == 1:
            parts.append(f"{hosts[0]}: {cause}")
            continue
        names = ", ".join(hosts) if len(hosts) <= shown else \
            f"{', '.join(hosts[:shown - 1])} … {hosts[-1]}"
        parts.append(f"{len(hosts)} hosts: {cause} ({names})")
    return "; ".join(parts)


class NeedsRecreate(LaunchError):
    """An inventory change only a new scheduler can follow (``--recreate``); nothing was changed."""

    exit_code = 2
