"""Launch a Dask cluster on the hosts of an inventory, over SSH.

Python API (the CLI ``pyku-launch`` is a thin layer over it)::

    from launcher import launch, connect, status, stop
    launch("hosts/localhost.toml")
    client = connect()
    stop()
"""

from .api import check, launch, logs, status, stop
from .client import connect
from .errors import InventoryError, LaunchError, PreflightError

__all__ = ["check", "connect", "launch", "logs", "status", "stop",
           "InventoryError", "LaunchError", "PreflightError"]
