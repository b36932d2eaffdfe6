"""The real-OpenSSH fixture itself: strict host keys, remote python, clean teardown."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time

import asyncssh
import pytest

from launcher.testing import missing
from launcher.testing.sshd import SSHDError, _alive, descendants, sshd_available, start_testbed

_UNAVAILABLE = sshd_available()


@pytest.fixture(autouse=True)
def _needs_sshd():
    if _UNAVAILABLE is not None:
        missing(f"cannot start the real OpenSSH test hosts: {_UNAVAILABLE}")

REMOTE_PY = 'python3 -c "import distributed, sys; print(sys.executable)"'


def _remote(testbed) -> str:
    return "bash -l -c " + shlex.quote(f"{testbed.env_line()} && {REMOTE_PY}")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _pub(path: str) -> str:
    with open(path) as f:
        return " ".join(f.read().split()[:2])


def test_asyncssh_strict_known_hosts_runs_our_python(sshd):
    async def main():
        results = []
        for host in sshd.hosts:
            async with asyncssh.connect(host.address, **sshd.connect_kwargs(port=host.port)) as conn:
                server_key = conn.get_server_host_key().export_public_key().decode().strip()
                r = await conn.run(_remote(sshd), check=False, timeout=60)
                results.append((host, server_key, r))
        return results

    for host, server_key, r in asyncio.run(main()):
        assert server_key == _pub(host.host_key_pub), host  # reached that host's own sshd
        assert r.exit_status == 0, (host, r.stderr)
        remote_exe = r.stdout.strip()
        # python3 next to sys.executable: the same interpreter, not /usr/bin/python3
        assert os.path.dirname(remote_exe) == os.path.dirname(sys.executable), remote_exe
        assert os.path.realpath(remote_exe) == os.path.realpath(sys.executable)


def test_openssh_client_strict_host_key_checking(sshd):
    for host in sshd.hosts:
        argv = [
            "ssh", "-F", sshd.ssh_config,
            "-o", f"UserKnownHostsFile={sshd.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-i", sshd.identity,
            "-p", str(host.port),
            f"{sshd.user}@{host.address}", "true",
        ]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        r = subprocess.run(sshd.ssh_argv(host, _remote(sshd)), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert os.path.realpath(r.stdout.strip()) == os.path.realpath(sys.executable)


def test_empty_known_hosts_is_refused(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    host = sshd.hosts[0]

    async def main():
        async with asyncssh.connect(**{"host": host.address, **sshd.connect_kwargs(known_hosts=str(empty))}):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(main())

    r = subprocess.run(
        sshd.ssh_argv(host, "true", known_hosts=str(empty)),
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 255 and "Host key verification failed" in r.stderr, r.stderr


def test_hosts_have_different_host_keys(sshd, tmp_path):
    keys = [_pub(h.host_key_pub) for h in sshd.hosts]
    assert len(set(keys)) == len(keys) == 3
    assert [h.address for h in sshd.hosts] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert len({h.port for h in sshd.hosts}) == 1 and sshd.hosts[0].port >= 1024
    with open(sshd.known_hosts) as f:
        assert f.read().splitlines() == [f"[{h.address}]:{h.port} {_pub(h.host_key_pub)}" for h in sshd.hosts]

    # host 127.0.0.3's key listed for 127.0.0.2 must not verify 127.0.0.2
    swapped = tmp_path / "known_hosts"
    h2, h3 = sshd.hosts[0], sshd.hosts[1]
    swapped.write_text(f"[{h2.address}]:{h2.port} {_pub(h3.host_key_pub)}\n")

    async def main():
        async with asyncssh.connect(h2.address, **sshd.connect_kwargs(known_hosts=str(swapped))):
            pass

    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        asyncio.run(main())


def test_sftp_and_many_channels(sshd):
    host = sshd.hosts[0]

    async def main():
        async with asyncssh.connect(host.address, **sshd.connect_kwargs()) as conn:
            async with conn.start_sftp_client() as sftp:
                names = await sftp.listdir(sshd.directory)
            runs = await asyncio.gather(*(conn.run(f"echo {i}", check=True) for i in range(40)))
            return names, [r.stdout.strip() for r in runs]

    names, outs = asyncio.run(main())
    assert "known_hosts" in names
    assert outs == [str(i) for i in range(40)]


def test_close_stops_sshd_and_sessions_and_frees_port():
    with start_testbed(n_hosts=2, first=20) as tb:
        assert tb.start_seconds < 10
        pids, port, directory = [h.pid for h in tb.hosts], tb.port, tb.directory
        # an open session: its per-connection sshd outlives a SIGTERMed listener unless close() kills it
        session = subprocess.Popen(tb.ssh_argv(tb.hosts[0], "sleep 600"), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            for _ in range(200):
                family = descendants([pids[0]])
                if any(_comm(p) == "sleep" for p, _ in family):
                    break
                time.sleep(0.05)
            else:
                pytest.fail("remote sleep never started")
        finally:
            tb.close()
            session.wait(30)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for pid, start in family:  # the connection's sshd processes and the remote sleep
        assert not _alive(pid, start), (pid, _comm(pid))
    assert not os.path.exists(directory)
    for address in ("127.0.0.20", "127.0.0.21"):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((address, port))
            s.listen()
    tb.close()  # idempotent


def test_atexit_safety_net_stops_forgotten_testbeds():
    script = (
        "from launcher.testing import sshd\n"
        "tb = sshd.start_testbed(n_hosts=2, first=25)\n"
        "print(tb.directory, *[h.pid for h in tb.hosts])\n"  # exits without close()
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    directory, *pids = r.stdout.split()
    assert not os.path.exists(directory)
    for pid in map(int, pids):
        assert not _alive(pid), pid


def test_start_failure_reports_the_sshd_log():
    with socket.socket() as s:
        s.bind(("127.0.0.30", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SSHDError, match="(?s)127.0.0.30.*Address already in use"):
            start_testbed(n_hosts=1, first=30, port=port)


def test_state_dir_and_free_port(state_dir, free_port):
    assert os.environ["XDG_STATE_HOME"] == str(state_dir) and state_dir.is_dir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port))
