"""A colleague connects with a shared file; revoked and expired certificates are refused — on real sshd hosts."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_security import KEY_MARKERS, _Watcher

import launcher
from launcher import LaunchError
from launcher.security import share
from launcher.store import state
from launcher.security import tls
from launcher.testing.clusters import cli, session_members, ssh_inventory


@pytest.fixture
def running(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="shared", workers=(1, 2), nworkers=1)
    rec = launcher.launch(inv)
    yield rec
    launcher.stop("shared")
    assert session_members(rec) == []


def _as_other_user(tmp_path: Path, code: str, **env) -> subprocess.CompletedProcess:
    """Run ``code`` as a colleague would: another HOME, an empty state directory of their own."""
    home = tmp_path / "colleague"
    (home / "state").mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != "PYKU_CLUSTER"}
    env = {**base, "HOME": str(home), "XDG_STATE_HOME": str(home / "state"), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_a_colleague_connects_with_a_shared_file_and_computes(running, tmp_path, sshd):
    watcher = _Watcher(sshd)
    watcher.start()
    try:
        out = tmp_path / "bob.json"
        r = cli("share", "--for", "bob", "--days", "2", "-o", str(out))
        assert r.returncode == 0, r.stderr
        assert "bob" in r.stdout and stat.S_IMODE(out.stat().st_mode) == 0o600
        data = json.loads(out.read_text())
        assert data["scheduler"] == running.scheduler and data["label"] == "bob"
        assert data["tls"]["cert"] != running.tls.cert  # a new certificate, not the owner's

        code = ("import launcher, sys\n"
                "from launcher.store import state\n"
                "assert state.known_names() == [], state.known_names()\n"
                "with launcher.connect(sys.argv[1] if len(sys.argv) > 1 else None) as c:\n"
                "    ws = c.scheduler_info(n_workers=-1)['workers']\n"
                "    print(sum(c.gather(c.map(lambda x: x * x, range(10)))), len(ws))\n")
        by_path = _as_other_user(tmp_path, code.replace("sys.argv[1] if len(sys.argv) > 1 else None",
                                                        repr(str(out))))
        assert by_path.returncode == 0, by_path.stderr
        assert by_path.stdout.split() == ["285", "2"]
        by_env = _as_other_user(tmp_path, code, PYKU_CLUSTER=str(out))
        assert by_env.returncode == 0, by_env.stderr
        assert by_env.stdout.split() == ["285", "2"]
    finally:
        watcher.done.set()
        watcher.join()
    assert watcher.leaks == []

    st = launcher.status("shared")
    [entry] = st["shares"]
    assert (entry["label"], entry["state"]) == ("bob", "valid")
    assert entry["expires"] == data["expires"]
    # no private key in any log, on any host (the share's key or any other)
    for h in running.hosts:
        rundir = Path(os.path.expanduser(h.rundir))
        for log in rundir.glob("*.log"):
            text = log.read_bytes()
            assert not any(m in text for m in KEY_MARKERS), log


def test_a_readable_connection_file_warns(running, tmp_path):
    out = tmp_path / "open.json"
    launcher.api.share("shared", "carol", out)
    out.chmod(0o644)
    with pytest.warns(UserWarning, match=r"readable by others \(mode 0644\).*chmod 600"):
        with launcher.connect(path=out) as client:
            assert client.submit(lambda: 3).result() == 3


def test_revoked_and_expired_certificates_are_refused(running, tmp_path):
    from distributed import Client
    from distributed.core import rpc

    revoked, expiring = tmp_path / "dave.json", tmp_path / "erin.json"
    launcher.api.share("shared", "dave", revoked)
    launcher.api.share("shared", "erin", expiring, days=3 / 86400)  # three seconds
    with launcher.connect(path=revoked) as client:
        address, worker = next(iter(client.scheduler_info(n_workers=-1)["workers"].items()))

    r = cli("revoke", "dave", "--name", "shared")
    assert r.returncode == 0, r.stderr
    with pytest.raises(LaunchError, match=r"certificate 'dave' \(serial [0-9A-F]+\) was revoked on "):
        launcher.connect(path=revoked, timeout=10)
    # a worker and its nanny refuse it too (a client may talk to them directly)
    sec = share.load(revoked).security()

    async def identity(address):
        async with rpc(address, connection_args=sec.get_connection_args("client")) as r:
            return await r.identity()

    for server in (address, worker["nanny"]):
        with pytest.raises(PermissionError, match="'dave'.*was revoked"):
            asyncio.run(identity(server))

    time.sleep(4)
    with pytest.raises(LaunchError, match=r"the certificate for 'erin' expired on "):
        launcher.connect(path=expiring, timeout=10)
    # the scheduler refuses it too, not only connect()'s own check
    material = tls.Material(**json.loads(expiring.read_text())["tls"])
    with pytest.raises((OSError, TimeoutError)):
        Client(running.scheduler, security=tls.security(material), timeout=5)

    states = {s["label"]: s["state"] for s in launcher.status("shared")["shares"]}
    assert states == {"dave": "revoked", "erin": "expired"}
    with launcher.connect("shared") as client:  # the owner is not affected
        assert client.submit(lambda: 1).result() == 1


def test_revoke_unknown_label_names_the_issued_ones(running):
    launcher.api.share("shared", "frank", Path(os.environ["TMPDIR"]) / "f.json")
    r = cli("revoke", "nobody", "--name", "shared")
    assert r.returncode == 1
    assert "has no share for 'nobody' (issued: frank)" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_state_dir_on_a_shared_folder_serves_another_machine(sshd, tmp_path, monkeypatch):
    """Two state directories (two machines' ``$XDG_STATE_HOME``) pointing at one folder, as an NFS home."""
    shared = tmp_path / "nfs"
    shared.mkdir(mode=0o700)
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    for m in (machine_a, machine_b):
        m.mkdir()
        (m / "pyku-launch").symlink_to(shared)
    monkeypatch.setenv("XDG_STATE_HOME", str(machine_a))
    rec = launcher.launch(ssh_inventory(tmp_path / "h.toml", sshd, name="nfs", workers=(1,), nworkers=1))
    try:
        monkeypatch.setenv("XDG_STATE_HOME", str(machine_b))
        assert state.known_names() == ["nfs"]
        assert launcher.status("nfs")["state"] == "running"
        with launcher.connect("nfs") as client:
            assert client.submit(lambda: 2).result() == 2
        launcher.api.share("nfs", "gina", tmp_path / "g.json")
        monkeypatch.setenv("XDG_STATE_HOME", str(machine_a))
        assert [s["label"] for s in launcher.status("nfs")["shares"]] == ["gina"]
        monkeypatch.setenv("XDG_STATE_HOME", str(machine_b))
    finally:
        launcher.stop("nfs")
    assert session_members(rec) == []
    assert list(shared.glob("*.json")) == []
