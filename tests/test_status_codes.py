"""`status` tells running, degraded, down and not launched apart by its exit code, and `--json`
always prints JSON; `stop` of nothing is not an error."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

import launcher
from launcher.store import state
from launcher.remote.agent import _members
from launcher.cli import main
from launcher.store.records import ClusterRecord
from launcher.testing.clusters import ROOT, session_members, ssh_inventory, wait_until

CODES = {"running": 0, "degraded": 4, "launching": 5, "down": 6, "not launched": 7, "corrupt": 1}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), prog_name="pyku-launch", catch_exceptions=False)


def _status(*args: str) -> tuple[int, dict]:
    r = invoke("status", "--json", *args)
    return r.exit_code, json.loads(r.stdout)


def test_nothing_launched(state_dir):
    for args in ([], ["--name", "never"]):
        code, st = _status(*args)
        assert (code, st["state"]) == (CODES["not launched"], "not launched")
        r = invoke("status", *args)
        assert r.exit_code == CODES["not launched"] and "Traceback" not in r.output
        r = invoke("stop", *args)
        assert r.exit_code == 0 and "nothing to stop" in r.stderr


def test_json_even_for_an_ambiguous_name_or_a_corrupt_record(state_dir):
    for name in ("one", "two"):
        state.write(ClusterRecord(name=name, phase="running", launcher_pid=1, inventory="/x/hosts.toml",
                                  inventory_sha256="", protocol="tls"))
    code, st = _status()
    assert code == 2 and st["state"] == "error" and "several clusters are known (one, two)" in st["error"]
    for damaged in ("two.json", "two.json.bak"):  # the record and its last good copy
        (state_dir / "pyku-launch" / damaged).write_text("{not json")
    code, st = _status("--name", "two")
    assert (code, st["state"]) == (CODES["corrupt"], "corrupt")


def _kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # gone with its parent already
            pass


def test_running_degraded_down(sshd, state_dir, tmp_path):
    name = "codes"
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1, 2), death_timeout=60)
    rec = launcher.launch(inv)
    try:
        code, st = _status("--name", name)
        assert (code, st["state"]) == (0, "running")

        # one host's workers are gone (their whole tree, so no nanny restarts them)
        gone = next(h for h in rec.hosts if h.role == "workers")
        _kill(_members(gone.token))
        assert wait_until(lambda: _status("--name", name)[1]["state"] == "degraded", 30)
        assert _status("--name", name)[0] == CODES["degraded"]
        assert invoke("status", "--name", name).exit_code == CODES["degraded"]

        sched = next(h for h in rec.hosts if h.role == "scheduler")
        _kill(_members(sched.token))
        code, st = _status("--name", name)
        assert (code, st["state"]) == (CODES["down"], "down")
    finally:
        launcher.stop(name)
    assert session_members(rec) == []


def test_a_launch_under_way_is_launching_not_half_launched(sshd, state_dir, tmp_path):
    name = "underway"
    slow = f"env = '{sshd.env_line()}; sleep 4'"  # this host's login takes a while
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1, 2), host_extra={2: slow})
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(inv)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen = []
    try:
        def launching():
            code, st = _status("--name", name)
            seen.append((st["state"], st.get("detail")))
            return code == CODES["launching"]

        assert wait_until(launching, 30, interval=0.1), seen
        assert re.fullmatch(rf"launching \(pid {proc.pid}, step (connect|preflight|scheduler and workers)\)",
                            seen[-1][1]), seen[-1]
        with pytest.raises(launcher.LaunchError, match=rf"is launching \(pid {proc.pid}, step "):
            launcher.connect(name)
        assert proc.wait(120) == 0
        assert {s for s, _ in seen} <= {"not launched", "launching"}  # never "half-launched"
        assert _status("--name", name)[0] == CODES["running"]
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(60)
        rec = state.read(name)
        launcher.stop(name)
    assert rec is None or session_members(rec) == []
