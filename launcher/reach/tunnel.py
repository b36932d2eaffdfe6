"""SSH local port forwards: to a scheduler behind a firewall, or to a closed dashboard.

A :class:`Tunnel` connects to a host over SSH (the inventory's settings,
host keys checked as in every step, :func:`launcher.remote.sshconnect.ssh_connect`)
and forwards a port on this machine's loopback to an address as seen *from
that host*. It runs in a background thread with its own event loop, so a
synchronous ``distributed.Client`` can use it, and is closed by
:meth:`Tunnel.close`, by the Client that owns it, or at interpreter exit.

TLS stays end to end: the forward carries the TLS bytes unchanged, and the
client checks the scheduler's certificate against the cluster's CA as
before. distributed does not check host names (its contexts set
``check_hostname = False``: a cluster CA certifies peers, not names), so
connecting to ``127.0.0.1:<local port>`` verifies exactly as a direct
connection does.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import socket
import threading

from launcher.errors import LaunchError
from launcher.config.inventory import HostSpec
from launcher.remote.commands import scheduler_host_port
from launcher.remote.sshconnect import ssh_connect


class Tunnel:
    """A forward ``127.0.0.1:<local_port>`` -> ``dest_host:dest_port`` through ``spec``'s host.

    Parameters
    ----------
    spec
        The host to go through (SSH settings as in the inventory).
    dest_host, dest_port
        Where to go, as seen from that host.
    local_port
        0: any free port (see :attr:`local_port` once started).
    """

    def __init__(self, spec: HostSpec, dest_host: str, dest_port: int, local_port: int = 0):
        self.spec, self.dest = spec, (dest_host, int(dest_port))
        self.local_port = local_port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30) -> Tunnel:
        """Open the SSH connection and the forward; LaunchError naming the host if that fails."""
        self._thread = threading.Thread(target=self._run, name=f"pyku-tunnel-{self.spec.address}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.close()
            raise LaunchError(f"no SSH tunnel within {timeout:g} s", host=self.spec.address)
        if self._error is not None:
            self._thread.join()
            raise self._error
        atexit.register(self.close)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.local_port}"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start() if it is still waiting
            self._error = self._error or e
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            conn = await ssh_connect(self.spec)
        except LaunchError as e:
            self._error = e
            return
        try:
            listener = await conn.forward_local_port("127.0.0.1", self.local_port, *self.dest)
        except OSError as e:
            conn.close()
            self._error = LaunchError(f"cannot forward 127.0.0.1:{self.local_port}: {e}", host=self.spec.address)
            return
        self.local_port = listener.get_port()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            listener.close()
            conn.close()
            await conn.wait_closed()

    def close(self) -> None:
        """End the forward and the SSH connection; nothing is left. Safe to call twice."""
        atexit.unregister(self.close)
        loop, thread = self._loop, self._thread
        if loop is not None and self._stop is not None:
            try:
                loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop has already ended
                pass
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


async def answers_async(host: str, port: int | str, timeout: float = 3) -> bool:
    """:func:`answers`, without blocking the event loop."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


@contextlib.asynccontextmanager
async def reachable(address: str, spec: HostSpec | None):
    """``address`` (``proto://host:port``) as this machine reaches it, for the ``async with`` block.

    Itself if its port answers from here; else, when ``spec`` is a host
    reached over SSH, a forward through it (``proto://127.0.0.1:<port>``),
    closed at the end of the block. Used by the launch (to see the workers
    arrive), ``status`` and the check for a running cluster.
    """
    host, port = scheduler_host_port(address)
    if spec is None or spec.transport != "ssh" or await answers_async(host, port):
        yield address
        return
    conn = await ssh_connect(spec)
    try:
        listener = await conn.forward_local_port("127.0.0.1", 0, host, int(port))
        yield f"{address.split('://', 1)[0]}://127.0.0.1:{listener.get_port()}"
    finally:
        conn.close()
        await conn.wait_closed()


def recorded_scheduler(rec):
    """:func:`reachable` for a launched cluster's recorded scheduler (an ``async with``)."""
    srec = rec.scheduler_host
    return reachable(rec.scheduler, srec.spec if srec else None)


def answers(host: str, port: int, timeout: float = 3) -> bool:
    """Whether something accepts TCP connections at ``host:port`` from here."""
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
        return True
    except OSError:
        return False


def default_spec(address: str) -> HostSpec:
    """A host reached with the user's own SSH settings (``~/.ssh/config``), as for a connection file."""
    return HostSpec(address=address, label=address, transport="ssh", user=None, port=None, identity=None,
                    known_hosts=None, ssh_config=None, accept_new=False, env=None, python=None, shell="bash",
                    nworkers=1, nthreads=1, memory_limit=None, reserve=None, local_directory=None,
                    listen=None, connect_timeout=10.0)
