"""``launcher.connect()``: a ``distributed.Client`` for a launched cluster."""

from __future__ import annotations

import functools
import getpass
import os
import re
import socket
import sys

from launcher.security import share
from launcher.store import state
from launcher.reach import tunnel as _tunnel
from launcher.errors import InventoryError, LaunchError
from launcher.remote.commands import scheduler_host_port
from launcher.config.validate import NAME


def resolve_name(name: str | None) -> str:
    """The cluster meant: ``name``, else ``$PYKU_CLUSTER``, else the only one known."""
    if name == "":  # not "the only cluster": an empty value is a mistake (an unset shell variable)
        raise InventoryError("the cluster name is empty (pass a name, or leave --name out for the only cluster)")
    name = name or os.environ.get("PYKU_CLUSTER")
    if name:
        if not re.fullmatch(NAME, name):
            raise InventoryError(f"{name!r} is not a cluster name (a letter, then letters, digits, _ or -)")
        return name
    names = state.known_names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise NothingLaunched("no launched cluster is known: run pyku-launch HOSTS.toml first")
    raise InventoryError(f"several clusters are known ({', '.join(names)}): "
                         f"pass name=... (or --name), or set PYKU_CLUSTER")


class NothingLaunched(LaunchError):
    """No cluster name given and none known: ``status`` says "not launched", ``stop`` has nothing to do."""


def connect(name: str | None = None, timeout: float = 30, *, path: str | os.PathLike | None = None,
            tunnel: bool | None = None, **client_kwargs):
    """Connect to a cluster started by ``pyku-launch`` and return the Client.

    Parameters
    ----------
    name
        The cluster's name (``[cluster] name``), or the path of a connection
        file (``pyku-launch share``). Optional when ``PYKU_CLUSTER`` (a name
        or a file) is set or exactly one cluster is known.
    timeout
        Seconds to wait for the scheduler.
    path
        A connection file: no launcher state is needed.
    tunnel
        True: reach the scheduler through an SSH tunnel to its host
        (:mod:`launcher.tunnel`), which lives as long as the Client. None
        (default): tunnel only if the scheduler's port does not answer from
        here (a one-line notice says so). False: never.
    **client_kwargs
        Passed on to :class:`distributed.Client`.
    """
    target = name or os.environ.get("PYKU_CLUSTER")
    if path is None and target and share.is_connection_file(target):
        path = target
    if path is not None:
        conn = share.load(path)
        via = _tunnel.default_spec(conn.scheduler_host) if conn.scheduler_host else None
        return _client(conn.scheduler, conn.security(), via, tunnel, timeout, client_kwargs,
                       f"{path}: the scheduler of '{conn.name}'", "ask its owner whether it is still up")
    name = resolve_name(name)
    rec = running_record(name)
    srec = rec.scheduler_host
    via = srec.spec if srec is not None and srec.spec.transport == "ssh" else None
    return _client(rec.scheduler, rec.security(), via, tunnel, timeout, client_kwargs,
                   f"cluster '{name}': the scheduler", f"pyku-launch status --name {name} tells whether it is still up")


def running_record(name: str):
    """The record of the running cluster ``name``; LaunchError saying why there is none to connect to
    (a launch or stop at work, not launched, left half-launched)."""
    rec = state.read(name)
    busy = state.holder(name)
    if busy and (rec is None or not rec.running):
        raise LaunchError(f"cluster '{name}' is {state.busy_words(busy)}: connect once it is done")
    if rec is None:
        raise LaunchError(f"cluster '{name}' is not launched (known: {', '.join(state.known_names()) or 'none'})")
    if not rec.running:
        raise LaunchError(f"cluster '{name}' was left half-launched: pyku-launch stop --name {name}, then launch again")
    return rec


def _client(address: str, security, via, tunnel: bool | None, timeout: float, kwargs: dict,
            what: str, hint: str):
    """A Client for ``address``, directly or through an SSH tunnel to its host ``via``."""
    from distributed import Client

    host, port = scheduler_host_port(address)
    if tunnel is None:
        tunnel = via is not None and not _tunnel.answers(host, port)
        if tunnel:
            print(f"pyku-launch: {address} does not answer from here: tunnelling through {via.address} over SSH",
                  file=sys.stderr)
    if tunnel and via is None:
        raise LaunchError(f"{what} runs on this machine: there is no host to tunnel through")
    forward = _tunnel.Tunnel(via, host, int(port)).start(timeout) if tunnel else None
    # The scheduler lists who is connected by this name (launcher/remote/usage.py, pyku-launch status).
    kwargs = {"name": f"{getpass.getuser()}@{socket.gethostname()}", **kwargs}
    try:
        if forward is None:
            return Client(address, security=security, timeout=timeout, **kwargs)
        proto = address.split("://", 1)[0]
        client = _tunnelled_client_class()(f"{proto}://{forward.address}", security=security,
                                           timeout=timeout, **kwargs)
        client.tunnel = forward
        return client
    except BaseException as e:
        if forward is not None:
            forward.close()
        if isinstance(e, (PermissionError, ImportError)):  # the revocation check (launcher/revocation.py)
            raise LaunchError(f"{what} refused us: {e}") from None
        if isinstance(e, OSError):
            raise LaunchError(f"{what} at {address} does not answer ({e}); {hint}") from None
        raise


@functools.cache
def _tunnelled_client_class():
    from distributed import Client

    class TunnelledClient(Client):
        """A Client whose scheduler connection runs through an SSH tunnel it owns (closed with it)."""

        tunnel = None

        def close(self, *args, **kwargs):
            try:
                return super().close(*args, **kwargs)
            finally:
                if self.tunnel is not None:
                    self.tunnel.close()

    return TunnelledClient
