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


class NeedsRecreate(LaunchError):
    """An inventory change only a new scheduler can follow (``--recreate``); nothing was changed."""

    exit_code = 2
