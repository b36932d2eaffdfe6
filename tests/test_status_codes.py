"""`status` tells running, degraded, down and not launched apart by its exit code, and `--json`
always prints JSON; `stop` of nothing is not an error."""

from __future__ import annotations

import json
import os
import signal

from click.testing import CliRunner

import launcher
from launcher import state
from launcher.cli import main
from clusters import session_members, ssh_inventory, wait_until

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
    state.write("one", {"hosts": []})
    state.write("two", {"hosts": []})
    code, st = _status()
    assert code == 2 and st["state"] == "error" and "several clusters are known (one, two)" in st["error"]
    (state_dir / "pyku-launch" / "two.json").write_text("{not json")
    code, st = _status("--name", "two")
    assert (code, st["state"]) == (CODES["corrupt"], "corrupt")


def test_running_degraded_down(sshd, state_dir, tmp_path):
    name = "codes"
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1, 2), death_timeout=60)
    rec = launcher.launch(inv)
    try:
        code, st = _status("--name", name)
        assert (code, st["state"]) == (0, "running")

        # one host's workers are gone (their whole tree, so no nanny restarts them)
        from launcher.agent import _members

        gone = next(h for h in rec["hosts"] if h["role"] == "workers")
        for pid in _members(gone["token"]):
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: _status("--name", name)[1]["state"] == "degraded", 30)
        assert _status("--name", name)[0] == CODES["degraded"]
        assert invoke("status", "--name", name).exit_code == CODES["degraded"]

        sched = next(h for h in rec["hosts"] if h["role"] == "scheduler")
        for pid in _members(sched["token"]):
            os.kill(pid, signal.SIGKILL)
        code, st = _status("--name", name)
        assert (code, st["state"]) == (CODES["down"], "down")
    finally:
        launcher.stop(name)
    assert session_members(rec) == []
