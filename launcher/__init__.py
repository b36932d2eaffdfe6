"""Launch a Dask cluster on the hosts of an inventory, over SSH.

Python API (the CLI ``pyku-launch`` is a thin layer over it)::

    from launcher import launch, connect, status, stop
    launch("hosts/localhost.toml")
    client = connect()
    stop()

``launcher.Cluster(name)`` is the same cluster as a dask ``Cluster``
(``scale``, ``adapt``, the Jupyter widget).
"""

# One verb, one module (launcher/verbs/launch.py, stop.py, status.py) and one
# API function of the same name (launcher.api), exported here.
from launcher.api import check, launch, logs, status, stop
from launcher.reach.client import connect
from launcher.errors import InventoryError, LaunchError, PreflightError



def __getattr__(name):
    # launcher.Cluster imports distributed (about a second): only when asked for.
    if name == "Cluster":
        from launcher.cluster import Cluster

        return Cluster
    raise AttributeError(f"module 'launcher' has no attribute {name!r}")


__all__ = ["Cluster", "check", "connect", "launch", "logs", "status", "stop",
           "InventoryError", "LaunchError", "PreflightError"]
