"""Output nobody reads (``| head -1``, ``>&-``) ends the printing, never the launch."""

from __future__ import annotations

import subprocess
import sys

import launcher
from launcher.store import state
from launcher.testing.clusters import ROOT, session_members, ssh_inventory


def _shell(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT, timeout=180)


def test_a_launch_piped_into_head_keeps_running(sshd, state_dir, tmp_path):
    name = "headpipe"
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, workers=(1,))
    cli = f"{sys.executable} -m launcher.cli"
    r = _shell(f"set -o pipefail; {cli} {inv} 2>&1 | head -1; echo \"exit ${{PIPESTATUS[0]}}\"")
    rec = state.read(name)
    try:
        assert r.stdout.splitlines()[0].endswith("[1/4] connect: 2 hosts"), r.stdout
        assert r.stdout.splitlines()[-1] == "exit 0", r.stdout + r.stderr
        assert rec is not None and rec.running
        assert launcher.status(name)["state"] == "running"

        # stdout and stderr closed outright: the command still does its work
        r = _shell(f"{cli} status --name {name} >&- 2>&-; echo \"exit $?\"")
        assert r.stdout.strip() == "exit 0"
    finally:
        if rec is not None:
            launcher.stop(name)
    assert session_members(rec) == []
