"""The user's story on real OpenSSH hosts: launch, compute, status, stop, nothing left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

import launcher
from launcher.store import state
from launcher.testing.clusters import ROOT, agent_processes, cli, cluster_processes, session_members, ssh_inventory, wait_until


def _hosts_of_workers(client) -> set[str]:
    """Which hosts' workers ran a batch of tasks."""
    def where(i):
        import time as _t
        from distributed import get_worker
        _t.sleep(0.05)
        return get_worker().address

    addrs = client.gather(client.map(where, range(40), pure=False))
    return {a.split("://")[1].rsplit(":", 1)[0] for a in addrs}


def test_launch_compute_status_stop(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="story")
    rec = launcher.launch(inv)
    assert rec.scheduler.startswith("tls://127.0.0.2:")
    assert len(session_members(rec)) >= 1 + 2 * 3  # scheduler; per host: nanny process, forkserver, workers
    assert cluster_processes("story")  # the check after stop sees this checkout's processes
    # The per-host agents end with the command: only the cluster stays.
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()

    with launcher.connect() as client:
        assert _hosts_of_workers(client) == {"127.0.0.3", "127.0.0.4"}
        info = client.scheduler_info(n_workers=-1)
        assert len(info["workers"]) == 4
        assert {w["memory_limit"] for w in info["workers"].values()} == {2**30}

    st = launcher.status()
    assert st["state"] == "running"
    workers = {h["address"]: h for h in st["hosts"] if h["role"] == "workers"}
    assert {a: (h["expected"], h["live"]) for a, h in workers.items()} == {
        "127.0.0.3": (2, 2), "127.0.0.4": (2, 2)}

    mode = os.stat(state.state_path("story")).st_mode & 0o777
    assert mode == 0o600

    summary = launcher.stop()
    assert summary["stopped"] >= 7
    assert session_members(rec) == []
    assert cluster_processes("story") == []
    assert not state.state_path("story").exists()
    assert not (state_dir / "pyku-launch" / "story.lock").exists()
    # Only the logs stay, for a post-mortem (pyku-launch logs; stop --purge or the next launch removes them).
    left = [os.path.join(d, f) for d, _, fs in os.walk(os.path.expanduser("~/.pyku-launch/story")) for f in fs]
    assert left and all(f.endswith(".log") for f in left), left
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()


def test_cluster_outlives_the_launching_process(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="outlive", workers=(1,))
    r = cli(str(inv), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "scheduler  tls://127.0.0.2:" in r.stdout
    assert "connect(" in r.stdout and "pyku-launch stop" in r.stdout
    rec = state.read("outlive")
    try:
        # the launcher process is gone; the cluster computes
        with launcher.connect("outlive") as client:
            assert client.submit(sum, [1, 2, 3]).result() == 6
        r = cli("status", "--json")
        assert r.returncode == 0
        st = json.loads(r.stdout)
        assert st["state"] == "running" and st["hosts"][1]["live"] == 2
    finally:
        r = cli("stop")
    assert r.returncode == 0, r.stderr
    assert "none left" in r.stdout
    assert session_members(rec) == []


def test_double_launch_and_double_stop(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="twice", workers=(1,))
    first = launcher.launch(inv)
    try:
        pids = sorted(session_members(first))
        r = cli(str(inv))
        assert r.returncode == 0, r.stderr
        assert "already running" in r.stdout
        assert state.read("twice").scheduler == first.scheduler  # nothing changed
        assert sorted(session_members(state.read("twice"))) == pids  # nothing started or restarted
    finally:
        launcher.stop("twice")
    r = cli("stop", "--name", "twice")
    assert r.returncode == 0, r.stderr
    assert "not running" in r.stderr + r.stdout
    assert session_members(first) == []


def test_stop_after_scheduler_killed(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="killed", workers=(1,))
    rec = launcher.launch(inv)
    sched = next(h for h in rec.hosts if h.role == "scheduler")
    os.kill(sched.pid, signal.SIGKILL)
    assert wait_until(lambda: launcher.status("killed")["state"] == "down", 15)
    summary = launcher.stop("killed")
    assert session_members(rec) == []
    assert not state.state_path("killed").exists()
    # the name is free again
    rec2 = launcher.launch(inv)
    assert launcher.status("killed")["state"] == "running"
    launcher.stop("killed")
    assert session_members(rec2) == []
    assert summary["unreachable"] == {}


def test_unknown_host_key_refused_nothing_started(sshd, state_dir, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="hostkey", workers=(1, 2),
                        host_extra={2: f'known_hosts = "{empty}"'})
    r = cli(str(inv))
    assert r.returncode == 1
    line = r.stderr.strip().splitlines()[-1]
    assert "127.0.0.4" in line and "unknown" in line and "SHA256:" in line
    assert "Traceback" not in r.stderr
    assert state.read("hostkey") is None
    assert cluster_processes("hostkey") == []


@pytest.mark.parametrize("body, key", [
    ('[cluster]\nname = "x"\n[scheduler]\naddress = "127.0.0.2"\n[[host]]\naddress = "127.0.0.3"\nnworkers = "ten"\n',
     "host[1].nworkers"),
    ('[cluster]\nname = "x"\n[scheduler]\naddress = "127.0.0.2"\n[[host]]\naddress = "127.0.0.3; touch /tmp/x"\n',
     "host[1].address"),
    ('[cluster]\nnmae = "x"\n[scheduler]\naddress = "127.0.0.2"\n[[host]]\naddress = "127.0.0.3"\n',
     "cluster.nmae"),
    ('[cluster\n', "line 1"),
    ("", "empty"),
])
def test_bad_inventory_is_one_line_exit_2(tmp_path, state_dir, body, key):
    path = tmp_path / "hosts.toml"
    path.write_text(body)
    r = cli(str(path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and str(path) in lines[0]
    assert "Traceback" not in r.stderr


def _localhost_inventory(tmp_path, name: str = "local"):
    """The shipped file with ports 0, so a user's own cluster on 8786 does not collide."""
    text = (ROOT / "hosts" / "localhost.toml").read_text()
    text = text.replace("port = 8786", "port = 0").replace("dashboard_port = 8787", "dashboard_port = 0")
    text = text.replace('name = "local"', f'name = "{name}"')
    inv = tmp_path / "localhost.toml"
    inv.write_text(text)
    return inv


def test_localhost_default_launches_and_computes(state_dir, tmp_path):
    inv = _localhost_inventory(tmp_path)
    rec = launcher.launch(inv)
    try:
        assert all(h.spec.transport == "local" for h in rec.hosts)
        with launcher.connect() as client:
            assert client.submit(lambda: 6 * 7).result() == 42
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
    finally:
        launcher.stop()
    assert session_members(rec) == []


def test_ctrl_c_in_a_terminal_rolls_back_a_local_launch(state_dir, tmp_path):
    # Ctrl-C signals the terminal's whole foreground process group; the local
    # agent must outlive it, or the launcher could not stop what it started.
    inv = _localhost_inventory(tmp_path, name="ctrlc")
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv)], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "[4/4] workers" in line:  # the scheduler and workers are being started
            os.killpg(proc.pid, signal.SIGINT)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + err
    assert "interrupted" in err and "could not stop" not in err, err
    assert state.read("ctrlc") is None
    assert cluster_processes("ctrlc") == []
    assert wait_until(lambda: not agent_processes(), 10), agent_processes()
