"""Real OpenSSH servers on loopback addresses, for tests and benchmarks.

One ``/usr/sbin/sshd -D -e -f <config>`` process per address 127.0.0.2,
127.0.0.3, ... each with its own ed25519 host key, all listening on the same
unprivileged port, all accepting one ed25519 client key for the current user.
Everything (keys, configs, known_hosts, logs) lives in one temporary
directory that :meth:`SSHTestbed.close` removes.

This is a plain module of the package (no pytest import), so tests, benchmark
scripts and users import it alike::

    from launcher.testing.sshd import start_testbed
    with start_testbed(n_hosts=3) as tb:
        ...  # tb.hosts[0].address, tb.hosts[0].port, tb.identity, tb.known_hosts

Only loopback addresses (127.0.0.0/8) are ever bound or connected to.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import getpass
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from . import ROOT, isolation

__all__ = ["SSHHost", "SSHTestbed", "SSHDError", "start_testbed", "sshd_available", "free_port"]

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = "/run/sshd"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5


class SSHDError(RuntimeError):
    """sshd could not be configured or started; the message carries the log tail."""


# --------------------------------------------------------------------------- helpers


def _sshd_binary() -> str | None:
    if os.access(SSHD, os.X_OK):
        return SSHD
    return shutil.which("sshd")


# Addresses of test hosts living in network namespaces this process created
# (launcher/testing/netns.py registers them): the only non-loopback targets allowed.
NAMESPACED: dict[str, str] = {}


def _check_loopback(address: str) -> None:
    if address in NAMESPACED:
        return
    if not ipaddress.ip_address(address).is_loopback:  # the network rule of this project
        raise ValueError(f"refusing non-loopback address {address!r}")


def _addresses(n_hosts: int, first: int) -> list[str]:
    if n_hosts < 1 or first < 1 or first + n_hosts - 1 > 254:
        raise ValueError(f"cannot place {n_hosts} hosts from 127.0.0.{first}")
    return [f"127.0.0.{first + i}" for i in range(n_hosts)]


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``address`` right now (racy by nature)."""
    _check_loopback(address)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _port_free_on_all(addresses: list[str]) -> int:
    """A port that can be bound on every address at the same time."""
    # A fresh namespace has every port free; only this namespace's addresses can be tried.
    addresses = [a for a in addresses if a not in NAMESPACED] or ["127.0.0.1"]
    for _ in range(50):
        socks = []
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
            ok = True
            for address in addresses[1:]:
                t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(t)
                try:
                    t.bind((address, port))
                except OSError:
                    ok = False
                    break
            if ok:
                return port
        finally:
            for s in socks:
                s.close()
    raise SSHDError(f"no port free on all of {addresses}")


def _keygen(path: str, comment: str) -> str:
    """Create an ed25519 key without passphrase; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path],
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    with open(path + ".pub") as f:
        return f.read().strip()


def _q(path: str) -> str:
    """Quote a path for sshd_config / ssh_config."""
    if any(c in path for c in ' \t"'):
        if '"' in path:
            raise ValueError(f"unusable path for sshd_config: {path!r}")
        return f'"{path}"'
    return path


def _ensure_privsep_dir() -> None:
    """sshd running as root refuses to start without /run/sshd."""
    if os.geteuid() != 0 or os.path.isdir(PRIVSEP_DIR):
        return
    os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
    os.chmod(PRIVSEP_DIR, 0o755)


def _tail(path: str, lines: int = 30) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def proc_start_time(pid: int) -> str | None:
    """Start time of a live process (field 22 of its stat), None if gone or a zombie.

    With the pid it identifies a process: a pid reused later has another one.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if rest[0] == "Z" else rest[19]


def descendants(pids) -> list[tuple[int, str]]:
    """(pid, starttime) of every live descendant of the given pids (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [c for p in pids for c in children.get(p, [])]
    while todo:
        p = todo.pop()
        start = proc_start_time(p)
        if start is not None:
            out.append((p, start))
        todo.extend(children.get(p, []))
    return out


def _alive(pid: int, start: str | None = None) -> bool:
    """True if ``pid`` exists, is no zombie and (if given) started at ``start``."""
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: sshd ends if the test process is killed
    except Exception:
        pass


def _banner(address: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as s:
        data = b""
        while b"\n" not in data:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
        return data


# --------------------------------------------------------------------------- API


@dataclass
class SSHHost:
    address: str  # "127.0.0.2"
    port: int
    pid: int
    host_key_pub: str  # path of the host's public key
    log: str = ""  # path of the sshd log (stderr of sshd -e)
    config: str = ""  # path of the sshd_config


@dataclass
class SSHTestbed:
    hosts: list[SSHHost]
    user: str  # current user name (root in CI)
    identity: str  # path of the client private key (ed25519, no passphrase)
    known_hosts: str  # "[127.0.0.N]:PORT ssh-ed25519 ..." for every host
    ssh_config: str  # minimal ssh_config to use instead of ~/.ssh/config
    directory: str  # temp dir holding all of the above
    start_seconds: float = 0.0
    _procs: list[subprocess.Popen] = field(default_factory=list, repr=False, compare=False)
    _remove_directory: bool = field(default=True, repr=False, compare=False)
    _closed: bool = field(default=False, repr=False, compare=False)

    # ---- client side helpers

    @property
    def port(self) -> int:
        """The port shared by every host."""
        return self.hosts[0].port

    @property
    def addresses(self) -> list[str]:
        return [h.address for h in self.hosts]

    @staticmethod
    def python() -> str:
        """The interpreter to run on the hosts: the one running this process."""
        return sys.executable

    @staticmethod
    def env_line() -> str:
        """Shell line that gives remote commands this process's PATH/python.

        sshd resets the environment (PATH=/usr/local/sbin:...:/bin), so a bare
        ``python3`` over ssh is whatever the login scripts or /usr/bin provide.
        Use as ``bash -l -c '<env_line> && <python> ...'``.  The directory is
        ``dirname(sys.executable)`` unresolved, so a virtualenv keeps working.
        """
        line = "export PATH=" + shlex.quote(os.path.dirname(sys.executable)) + ":$PATH"
        # The checkout under test first, so a second work tree (git worktree)
        # tests its own launcher and pyku on the hosts, not the installed one.
        line += " && export PYTHONPATH=" + shlex.quote(str(ROOT)) + '"${PYTHONPATH:+:$PYTHONPATH}"'
        # Inside a test: its own HOME, TMPDIR and process mark (launcher.testing.isolation).
        private = isolation.exports()
        return f"{line} && {private}" if private else line


    def ssh_argv(self, host: SSHHost | str, *command: str, known_hosts: str | None = None) -> list[str]:
        """argv for the OpenSSH client with strict host-key checking."""
        address = host.address if isinstance(host, SSHHost) else host
        _check_loopback(address)
        return [
            "ssh", "-F", self.ssh_config,
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes",
            "-i", self.identity,
            "-p", str(self.port),
            f"{self.user}@{address}",
            *command,
        ]  # fmt: skip

    def connect_kwargs(self, **extra) -> dict:
        """Keyword arguments for ``asyncssh.connect(address, **kwargs)``."""
        kwargs = dict(
            port=self.port,
            username=self.user,
            client_keys=[self.identity],
            known_hosts=self.known_hosts,
            config=[self.ssh_config],
            agent_path=None,
        )
        kwargs.update(extra)
        return kwargs

    def log_tail(self, host: SSHHost | int = 0, lines: int = 30) -> str:
        h = self.hosts[host] if isinstance(host, int) else host
        return _tail(h.log, lines)

    # ---- lifecycle

    def close(self) -> None:
        """Stop every sshd (and its connection processes) by pid, remove the directory."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        procs = self._procs or []
        # Connection processes setsid() and outlive a SIGTERMed listener: find them first.
        family = [(c, s) for p in procs if p.poll() is None for c, s in descendants([p.pid])]
        for p in procs:
            if p.poll() is None:
                _kill(p.pid, signal.SIGTERM)
        for c, s in family:
            if _alive(c, s):
                _kill(c, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill(p.pid, signal.SIGKILL)
                p.wait()
        while any(_alive(c, s) for c, s in family) and time.monotonic() < deadline:
            time.sleep(0.02)
        for c, s in family:
            if _alive(c, s):
                _kill(c, signal.SIGKILL)
        if self._remove_directory:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SSHTestbed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __hash__(self) -> int:
        return id(self)


_live: set[SSHTestbed] = set()


@atexit.register
def _close_all() -> None:  # safety net: never leave an sshd behind
    for tb in list(_live):
        with contextlib.suppress(Exception):
            tb.close()


def sshd_available() -> str | None:
    """None if real sshd test hosts can be started here, else the reason why not."""
    if not sys.platform.startswith("linux"):
        return f"the sshd test hosts need Linux (127.0.0.N loopback aliases), not {sys.platform}"
    if _sshd_binary() is None:
        return f"no sshd binary ({SSHD} missing; apt-get install openssh-server)"
    for tool in ("ssh-keygen", "ssh"):
        if shutil.which(tool) is None:
            return f"no {tool} binary (apt-get install openssh-client)"
    try:
        port = _port_free_on_all(_addresses(3, 2))
    except (OSError, SSHDError) as e:
        return f"cannot bind 127.0.0.2-127.0.0.4 ({e}): cannot start the real OpenSSH test hosts"
    if port < 1024 and os.geteuid() != 0:
        return "not root and no unprivileged port: cannot start the real OpenSSH test hosts"
    if os.geteuid() == 0 and not os.path.isdir(PRIVSEP_DIR) and not os.access(os.path.dirname(PRIVSEP_DIR), os.W_OK):
        return f"sshd needs {PRIVSEP_DIR} and it cannot be created"
    return None


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _sshd_config(address: str, port: int, directory: str, host_key: str, log_level: str) -> str:
    return f"""\
# generated by launcher/testing/sshd.py: a test host on {address}
ListenAddress {address}:{port}
AddressFamily inet
HostKey {_q(host_key)}
PidFile none
AuthorizedKeysFile {_q(os.path.join(directory, "authorized_keys"))}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PermitUserEnvironment no
MaxSessions 100
MaxStartups 100:30:200
MaxAuthTries 6
LoginGraceTime 30
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding yes
AllowStreamLocalForwarding yes
Subsystem sftp internal-sftp
LogLevel {log_level}
"""


def start_testbed(
    n_hosts: int = 3,
    first: int = 2,
    port: int | None = None,
    directory: str | None = None,
    *,
    log_level: str = "VERBOSE",
    timeout: float = READY_TIMEOUT,
    addresses: list[str] | None = None,
) -> SSHTestbed:
    """Start ``n_hosts`` sshd on 127.0.0.<first>... and return the testbed.

    ``port`` fixes the shared port (no retry); by default a port free on every
    address is picked, retried if another process takes it first.
    ``directory``: use this directory instead of a fresh temp dir; it is removed
    at close only if this function created it.
    ``addresses``: explicit host addresses instead of 127.0.0.<first>...; an
    address registered in :data:`NAMESPACED` gets its sshd started inside
    that network namespace (``ip netns exec``).
    The result is a context manager (``with start_testbed() as tb:``).
    """
    t0 = time.monotonic()
    sshd = _sshd_binary()
    if sshd is None:
        raise SSHDError(f"no sshd binary ({SSHD})")
    if addresses is None:
        addresses = _addresses(n_hosts, first)
    for a in addresses:
        _check_loopback(a)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="sshd-testbed-")
        remove = True
    else:
        remove = not os.path.exists(directory)
        os.makedirs(directory, exist_ok=True)
        directory = os.path.abspath(directory)
    tb = SSHTestbed(
        hosts=[],
        user=getpass.getuser(),
        identity=os.path.join(directory, "id_ed25519"),
        known_hosts=os.path.join(directory, "known_hosts"),
        ssh_config=os.path.join(directory, "ssh_config"),
        directory=directory,
        _remove_directory=remove,
    )
    _live.add(tb)
    try:
        _start(tb, sshd, addresses, port, log_level, timeout)
    except BaseException:
        tb.close()
        raise
    tb.start_seconds = time.monotonic() - t0
    return tb


def _make_keys(tb: SSHTestbed, addresses: list[str]) -> dict[str, str]:
    """The client key (authorized on every host), an empty ssh_config, a host key per address."""
    d = tb.directory
    client_pub = _keygen(tb.identity, f"{tb.user}@sshd-testbed")
    _write(os.path.join(d, "authorized_keys"), client_pub + "\n", 0o600)
    _write(
        tb.ssh_config,
        "# generated by launcher/testing/sshd.py: use with ssh -F so ~/.ssh/config and /etc/ssh/ssh_config are ignored\n",
    )
    host_keys = {}
    for address in addresses:
        key = os.path.join(d, f"ssh_host_ed25519_key-{address}")
        _keygen(key, f"host-{address}")
        host_keys[address] = key
    return host_keys


def _write_known_hosts(tb: SSHTestbed) -> None:
    lines = []
    for h in tb.hosts:
        with open(h.host_key_pub) as f:
            keytype, blob = f.read().split()[:2]
        lines.append(f"[{h.address}]:{h.port} {keytype} {blob}\n")
    _write(tb.known_hosts, "".join(lines))


def _start(tb: SSHTestbed, sshd: str, addresses: list[str], port: int | None, log_level: str, timeout: float) -> None:
    d = tb.directory
    host_keys = _make_keys(tb, addresses)
    _ensure_privsep_dir()

    fixed = port is not None
    for attempt in range(1 if fixed else PORT_ATTEMPTS):
        p = port if fixed else _port_free_on_all(addresses)
        hosts, procs = [], []
        for address in addresses:
            config = os.path.join(d, f"sshd_config-{address}")
            log = os.path.join(d, f"sshd-{address}.log")
            _write(config, _sshd_config(address, p, d, host_keys[address], log_level))
            if attempt == 0 and address == addresses[0]:
                check = subprocess.run([sshd, "-t", "-f", config], capture_output=True, text=True, stdin=subprocess.DEVNULL)
                if check.returncode != 0:
                    raise SSHDError(f"sshd -t -f {config} failed ({check.returncode}): {check.stderr.strip()}")
            with open(log, "ab") as logf:
                prefix = ["ip", "netns", "exec", NAMESPACED[address]] if address in NAMESPACED else []
                proc = subprocess.Popen(
                    [*prefix, sshd, "-D", "-e", "-f", config],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=logf,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if threading.current_thread() is threading.main_thread() else None,
                )
            procs.append(proc)
            tb._procs.append(proc)
            hosts.append(SSHHost(address, p, proc.pid, host_keys[address] + ".pub", log, config))
        tb.hosts = hosts
        failed = _wait_ready(hosts, procs, timeout)
        if failed is None:
            break
        host, reason = failed
        tail = _tail(host.log)
        in_use = "Address already in use" in tail
        for proc in procs:  # stop this attempt's processes, keep the directory
            if proc.poll() is None:
                _kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                _kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if not in_use or fixed or attempt == PORT_ATTEMPTS - 1:
            raise SSHDError(f"sshd on {host.address}:{host.port} not ready: {reason}\n--- {host.log} (tail)\n{tail}")
        for h in hosts:  # port race lost: start over with a fresh port and fresh logs
            with contextlib.suppress(OSError):
                os.unlink(h.log)
    _write_known_hosts(tb)


def _wait_ready(hosts: list[SSHHost], procs: list[subprocess.Popen], timeout: float) -> tuple[SSHHost, str] | None:
    """None when every host answers with an SSH banner, else (host, reason)."""
    deadline = time.monotonic() + timeout
    pending = list(zip(hosts, procs))
    last: dict[str, str] = {}
    while pending:
        for host, proc in list(pending):
            rc = proc.poll()
            if rc is not None:
                return host, f"sshd exited with code {rc}"
            try:
                banner = _banner(host.address, host.port, timeout=1.0)
            except OSError as e:
                last[host.address] = f"{type(e).__name__}: {e}"
                continue
            if banner.startswith(b"SSH-2.0-"):
                pending.remove((host, proc))
            else:
                last[host.address] = f"unexpected banner {banner[:80]!r}"
        if not pending:
            return None
        if time.monotonic() > deadline:
            host = pending[0][0]
            return host, f"no SSH banner within {timeout:.0f}s ({last.get(host.address, 'no attempt')})"
        time.sleep(0.02)
    return None


@contextlib.contextmanager
def testbed(*args, **kwargs):
    """``with testbed(3) as tb:`` — same as ``with start_testbed(3) as tb:``."""
    tb = start_testbed(*args, **kwargs)
    try:
        yield tb
    finally:
        tb.close()


if __name__ == "__main__":  # python -m launcher.testing.sshd: start, print, wait for Ctrl-C
    reason = sshd_available()
    if reason:
        sys.exit(reason)
    with start_testbed(int(sys.argv[1]) if len(sys.argv) > 1 else 3) as tb:
        print(f"started in {tb.start_seconds:.3f}s: {tb}")
        print("try:", shlex.join(tb.ssh_argv(tb.hosts[0], "true")))
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
