"""``pyku-launch dashboard``: the scheduler's dashboard through an SSH tunnel.

On a TLS cluster the dashboard (plain HTTP, no login, with every process's
logs) binds to the scheduler host's loopback (``[cluster] dashboard =
"closed"``, the default): only someone who can log in to that host reaches
it. This opens a :class:`launcher.tunnel.Tunnel` to it and gives the local
URL, like ``ray dashboard``.
"""

from __future__ import annotations

from launcher.store import state
from launcher.errors import LaunchError
from launcher.store.records import ClusterRecord
from launcher.remote.commands import scheduler_host_port
from launcher.reach.tunnel import Tunnel

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _where(rec: ClusterRecord):
    """(host, port) the dashboard listens on, and the scheduler's host record."""
    if not rec.dashboard:
        raise LaunchError(f"cluster '{rec.name}' has no dashboard (is bokeh installed on the scheduler host?)")
    host, port = scheduler_host_port(rec.dashboard.split("/status")[0])
    srec = rec.scheduler_host
    return host, int(port), srec


def reach(rec: ClusterRecord) -> str:
    """How to reach the dashboard, in one line (the summary and ``status``)."""
    if not rec.dashboard:
        return "disabled"
    host, _, srec = _where(rec)
    if host in LOOPBACK and srec.spec.transport == "ssh":
        return f"on {srec.address}'s loopback only: pyku-launch dashboard --name {rec.name}"
    return rec.dashboard


def open_tunnel(name: str, local_port: int = 0, timeout: float = 30) -> tuple[Tunnel | None, str]:
    """A started tunnel to the dashboard of ``name`` and its local URL (no tunnel if it is local)."""
    rec = state.read(name)
    if rec is None or not rec.running:
        raise LaunchError(f"cluster '{name}' is not running")
    host, port, srec = _where(rec)
    if srec.spec.transport != "ssh":
        return None, rec.dashboard
    tunnel = Tunnel(srec.spec, host, port, local_port).start(timeout)
    return tunnel, f"http://{tunnel.address}/status"


def hold(tunnel: Tunnel) -> None:
    """Keep the tunnel open until Ctrl-C, SIGTERM or SIGHUP, then close it."""
    import signal
    import threading

    done = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: done.set())
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        tunnel.close()
