"""TLS by default, strict host keys, no injection, no secrets in sight — on the real sshd hosts."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launcher
from launcher import LaunchError, InventoryError, state
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory


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
    from launcher import tls
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
            time.sleep(6)
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


def test_no_key_material_in_process_arguments_or_environment(running):
    pids = session_members(running)
    assert pids
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        assert b"-----BEGIN" not in cmdline, cmdline[:200]
    for pid in pids:
        assert b"-----BEGIN" not in Path(f"/proc/{pid}/environ").read_bytes()


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


MARKER = "/tmp/pyku-launch-injected"


@pytest.mark.parametrize("section, key, value", [
    ("host", "address", f"127.0.0.3; touch {MARKER}"),
    ("host", "listen", f"127.0.0.3; touch {MARKER}"),
    ("ssh", "user", f"root$(touch {MARKER})"),
    ("cluster", "name", f"x;touch {MARKER}"),
])
def test_injection_rejected_at_validation(sshd, state_dir, tmp_path, section, key, value):
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
    assert not os.path.exists(MARKER)


@pytest.mark.parametrize("key, value", [
    ("python", f"python3; touch {MARKER}"),
    ("local_directory", f"{{tmp}}/x; touch {MARKER}"),
    ("python", f"$(touch {MARKER})"),
])
def test_injection_inert_where_values_are_quoted(sshd, state_dir, tmp_path, key, value):
    value = value.replace("{tmp}", str(tmp_path))
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="inert", workers=(1,), host_extra={1: f"{key} = '{value}'"})
    try:
        launcher.launch(inv, timeout=10)
    except LaunchError:
        pass  # a python that does not exist is refused: fine, as long as nothing ran
    finally:
        if state.read("inert"):
            launcher.stop("inert")
    assert not os.path.exists(MARKER)
    assert cluster_processes("inert") == []


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
