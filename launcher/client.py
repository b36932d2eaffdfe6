"""``launcher.connect()``: a ``distributed.Client`` for a launched cluster."""

from __future__ import annotations

import os
import re

from . import state
from .errors import InventoryError, LaunchError
from .validate import NAME


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


def connect(name: str | None = None, timeout: float = 30, **client_kwargs):
    """Connect to a cluster started by ``pyku-launch`` and return the Client.

    Parameters
    ----------
    name
        The cluster's name (``[cluster] name``). Optional when ``PYKU_CLUSTER``
        is set or exactly one cluster is known.
    timeout
        Seconds to wait for the scheduler.
    **client_kwargs
        Passed on to :class:`distributed.Client`.
    """
    from distributed import Client

    name = resolve_name(name)
    rec = state.read(name)
    busy = state.holder(name)
    if busy and (rec is None or not rec.running):
        raise LaunchError(f"cluster '{name}' is {state.busy_words(busy)}: connect once it is done")
    if rec is None:
        raise LaunchError(f"cluster '{name}' is not launched (known: {', '.join(state.known_names()) or 'none'})")
    if not rec.running:
        raise LaunchError(f"cluster '{name}' was left half-launched: pyku-launch stop --name {name}, then launch again")
    try:
        return Client(rec.scheduler, security=rec.security(), timeout=timeout, **client_kwargs)
    except OSError as e:
        raise LaunchError(f"cluster '{name}': cannot reach the scheduler at {rec.scheduler} ({e}); "
                          f"pyku-launch status --name {name} tells whether it is still up") from None
