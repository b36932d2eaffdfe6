"""TLS by default, strict host keys, no injection, no secrets in sight — on the real sshd hosts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import launcher
from launcher import LaunchError
from launcher.store import state
from launcher.testing import isolation
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory, wait_until
from launcher.testing.sshd import descendants


@pytest.fixture
def running(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="sec", workers=(1,))
    rec = launcher.launch(inv)
    yield rec
    launcher.stop("sec")
    assert session_members(rec) == []


def test_anonymous_client_is_refused(running):
    from distributed import Client

    assert running.scheduler.startswith("tls://")
    with pytest.raises((OSError, TimeoutError)):
        Client(running.scheduler.replace("tls://", "tcp://"), timeout=3)
    from launcher.security import tls
    foreign = tls.make_cluster_material("intruder")["client"]
    with pytest.raises((OSError, TimeoutError)):
        # TLS, trusting the cluster's CA, but holding a certificate of another CA
        Client(running.scheduler, timeout=3,
               security=tls.security(tls.Material(running.tls.ca, foreign.cert, foreign.key)))
    with launcher.connect("sec") as client:  # the cluster's own material works
        assert client.submit(lambda: 1).result() == 1


def test_foreign_worker_cannot_join(sshd, running, tmp_path):
    other = launcher.launch(ssh_inventory(tmp_path / "o.toml", sshd, name="other", workers=(2,), nworkers=1))
    try:
        rundir = os.path.expanduser(next(h.rundir for h in other.hosts if h.role == "workers"))
        ca = tmp_path / "this-cluster-ca.pem"  # it trusts this cluster, but holds the other's certificate
        ca.write_text(running.tls.ca)
        log = open(tmp_path / "foreign.log", "w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", running.scheduler, "--nthreads", "1",
             "--no-nanny", "--no-dashboard", "--host", "127.0.0.1", "--name", "intruder", "--death-timeout", "8",
             "--local-directory", str(tmp_path / "intruder"),
             "--tls-ca-file", str(ca), "--tls-cert", f"{rundir}/cert.pem", "--tls-key", f"{rundir}/key.pem"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            # Its first attempt was refused (TLS handshake with the other CA's
            # certificate): it logs that it waits, and keeps being refused.
            log_text = lambda: (tmp_path / "foreign.log").read_text()  # noqa: E731
            assert wait_until(lambda: "Waiting to connect" in log_text(), 60), log_text()
            with launcher.connect("sec") as client:
                names = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
            assert "intruder" not in names and len(names) == 2
            text = (tmp_path / "foreign.log").read_text()
            assert "Waiting to connect" in text and "Registered to" not in text
        finally:
            proc.kill()
            proc.wait()
            log.close()
    finally:
        launcher.stop("other")


KEY_MARKERS = (b"-----BEGIN", b"PRIVATE KEY")


class _Watcher(threading.Thread):
    """Reads the argv and environment of every process of this test, every 10 ms, while a launch runs.

    This test's processes are those carrying its mark (agents, scheduler,
    nannies, workers, local children) and every descendant of the test
    sshds (the SSH sessions and the login shells before they export the mark).
    """

    def __init__(self, sshd):
        super().__init__(daemon=True)
        self.roots, self.seen, self.leaks, self.done = [h.pid for h in sshd.hosts], set(), [], threading.Event()

    def run(self):
        while not self.done.is_set():
            pids = {pid for pid, _ in isolation.marked_processes()} | {pid for pid, _ in descendants(self.roots)}
            for pid in pids:
                for what in ("cmdline", "environ"):
                    try:
                        data = Path(f"/proc/{pid}/{what}").read_bytes()
                    except OSError:
                        continue
                    self.seen.add(pid)
                    if any(m in data for m in KEY_MARKERS):
                        self.leaks.append((pid, what, data[:200]))
            time.sleep(0.01)


def test_no_key_material_in_any_argv_or_environment_during_launch(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="watched", workers=(1,))
    watcher = _Watcher(sshd)
    watcher.start()
    try:
        rec = launcher.launch(inv)
        with launcher.connect("watched") as client:
            assert client.submit(lambda: 1).result() == 1
        launcher.stop("watched")
    finally:
        watcher.done.set()
        watcher.join()
    assert watcher.leaks == []
    # it did look: the agents, sessions, scheduler and workers of the launch
    assert len(watcher.seen) >= 8, watcher.seen
    assert session_members(rec) == []


def test_dry_run_shows_no_key_material(sshd, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="dry", workers=(1,))
    r = cli("--dry-run", str(inv))
    assert r.returncode == 0, r.stderr
    assert "dask" in r.stdout and not any(m.decode() in r.stdout + r.stderr for m in KEY_MARKERS)


def test_file_modes(running, state_dir):
    assert stat.S_IMODE(os.stat(state.state_dir()).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state.state_path("sec")).st_mode) == 0o600
    for h in running.hosts:
        rundir = Path(os.path.expanduser(h.rundir))
        assert stat.S_IMODE(rundir.stat().st_mode) == 0o700
        for name in ("ca.pem", "cert.pem", "key.pem"):
            assert stat.S_IMODE((rundir / name).stat().st_mode) == 0o600
        for log in rundir.glob("*.log"):
            assert b"-----BEGIN" not in log.read_bytes()


def test_changed_host_key_refused_even_with_accept_new(sshd, state_dir, tmp_path):
    # host 127.0.0.3's line carries 127.0.0.4's key: a changed key
    lines = Path(sshd.known_hosts).read_text().splitlines()
    key_of = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines if ln.strip()}
    port = sshd.port
    forged = tmp_path / "known_hosts"
    forged.write_text("".join(
        f"{h} {key_of[f'[127.0.0.4]:{port}'] if h == f'[127.0.0.3]:{port}' else k}\n" for h, k in key_of.items()))
    for extra in ("", "accept_new = true"):
        inv = ssh_inventory(tmp_path / "h.toml", sshd, name="changed", workers=(1,),
                            ssh_extra=extra, host_extra={1: f'known_hosts = "{forged}"'})
        with pytest.raises(LaunchError) as e:
            launcher.launch(inv)
        assert "127.0.0.3" in str(e.value) and "CHANGED" in str(e.value) and "SHA256:" in str(e.value)
        assert cluster_processes("changed") == [] and state.read("changed") is None


def test_accept_new_records_unknown_key(sshd, state_dir, tmp_path):
    partial = tmp_path / "known_hosts"
    port = sshd.port
    partial.write_text("".join(ln + "\n" for ln in Path(sshd.known_hosts).read_text().splitlines()
                               if not ln.startswith(f"[127.0.0.3]:{port}")))
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="acceptnew", workers=(1,),
                        host_extra={1: f'known_hosts = "{partial}"'})
    with pytest.raises(LaunchError, match="unknown"):
        launcher.check(inv)
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="acceptnew", workers=(1,), ssh_extra="accept_new = true",
                        host_extra={1: f'known_hosts = "{partial}"'})
    launcher.check(inv)
    recorded = [ln for ln in partial.read_text().splitlines() if ln.startswith(f"[127.0.0.3]:{port} ")]
    host_key = Path(sshd.hosts[1].host_key_pub).read_text().split()[:2]
    assert len(recorded) == 1 and recorded[0].split()[1:3] == host_key


@pytest.mark.parametrize("section, key, value", [
    ("host", "address", "127.0.0.3; touch {marker}"),
    ("host", "listen", "127.0.0.3; touch {marker}"),
    ("ssh", "user", "root$(touch {marker})"),
    ("cluster", "name", "x;touch {marker}"),
])
def test_injection_rejected_at_validation(sshd, state_dir, tmp_path, section, key, value):
    marker = tmp_path / "injected"
    value = value.format(marker=marker)
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="inj", workers=(1,))
    text = inv.read_text()
    if section == "host":
        text += f'{key} = "{value}"\n' if key != "address" else ""
        text = text.replace('address = "127.0.0.3"', f'address = "{value}"') if key == "address" else text
    elif section == "cluster":
        text = text.replace('name = "inj"', f'name = "{value}"')
    else:
        text = text.replace(f'user = "{sshd.user}"', f'user = "{value}"')
    inv.write_text(text)
    r = cli(str(inv))
    assert r.returncode == 2 and key in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("value", ["python3; touch {marker}", "$(touch {marker})", "`touch {marker}`"])
def test_python_with_shell_syntax_is_one_program_name(sshd, state_dir, tmp_path, value):
    """``python`` is quoted: no program of that whole name exists, so the host is refused, and nothing ran."""
    marker = tmp_path / "injected"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="inert", workers=(1,),
                        host_extra={1: f"python = '{value.format(marker=marker)}'"})
    with pytest.raises(LaunchError) as e:
        launcher.launch(inv, timeout=10)
    assert "127.0.0.3" in str(e.value)
    assert not marker.exists()
    assert state.read("inert") is None and cluster_processes("inert") == []


def test_local_directory_with_shell_syntax_is_one_directory_name(sshd, state_dir, tmp_path):
    """``local_directory`` is passed as one argument: the directory gets that literal name."""
    marker = tmp_path / "injected"
    spill = tmp_path / f"x; touch {marker}"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="inert", workers=(1,), nworkers=1,
                        host_extra={1: f"local_directory = '{spill}'"})
    rec = launcher.launch(inv)
    try:
        with launcher.connect("inert") as client:
            [where] = client.run(lambda dask_worker: dask_worker.local_directory).values()
        assert where.startswith(str(spill) + "/"), where
    finally:
        launcher.stop("inert")
    assert not marker.exists()
    assert session_members(rec) == []


def test_changed_key_of_an_ssh_config_alias_refused_with_accept_new(sshd, state_dir, tmp_path):
    """The key is checked (and never re-accepted) under the name, port and file the config gives."""
    port = sshd.port
    lines = Path(sshd.known_hosts).read_text().splitlines()
    key_of = {ln.split()[0]: ln.split(None, 1)[1] for ln in lines if ln.strip()}
    forged = tmp_path / "known_hosts"
    forged.write_text("".join(
        f"{h} {key_of[f'[127.0.0.4]:{port}'] if h == f'[127.0.0.3]:{port}' else k}\n" for h, k in key_of.items()))
    config = tmp_path / "ssh_config"
    config.write_text(f"Host walias\n    HostName 127.0.0.3\n    Port {port}\n    UserKnownHostsFile {forged}\n")
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="aliaskey", workers=(1,), ssh_extra="accept_new = true")
    text = inv.read_text().replace('address = "127.0.0.3"', 'address = "walias"')
    # walias's known_hosts comes from the config; the scheduler keeps the testbed's
    text = text.replace(f'known_hosts = "{sshd.known_hosts}"\n', "").replace(
        f'config = "{sshd.ssh_config}"', f'config = "{config}"').replace(
        'address = "127.0.0.2"', f'address = "127.0.0.2"\nknown_hosts = "{sshd.known_hosts}"')
    inv.write_text(text)
    before = forged.read_text()
    with pytest.raises(LaunchError) as e:
        launcher.check(inv)
    assert "walias" in str(e.value) and "CHANGED" in str(e.value) and str(forged) in str(e.value)
    assert forged.read_text() == before  # nothing recorded
    assert not os.path.exists(os.path.expanduser("~/.ssh/known_hosts")) or "127.0.0." not in Path(
        os.path.expanduser("~/.ssh/known_hosts")).read_text()
