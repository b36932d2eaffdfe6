"""Launch a Dask cluster on the hosts of an inventory, over SSH.

Python API (the CLI ``pyku-launch`` is a thin layer over it)::

    from launcher import launch, connect, status, stop
    launch("hosts/localhost.toml")
    client = connect()
    stop()
"""

# One verb, one module (launcher/launch.py, stop.py, status.py) and one API
# function of the same name. The modules are imported first, so that the
# package attributes ``launcher.launch`` etc. end up as the API functions.
from . import launch as _launch_module, status as _status_module, stop as _stop_module  # noqa: F401
from .api import check, launch, logs, status, stop  # noqa: E402
from .client import connect
from .errors import InventoryError, LaunchError, PreflightError

__all__ = ["check", "connect", "launch", "logs", "status", "stop",
           "InventoryError", "LaunchError", "PreflightError"]
