"""``idle_timeout``/``max_lifetime``: a cluster stops itself on every host, leaves nothing, and says why.

On the real sshd hosts (all this machine): the scheduler's preload closes
the cluster with no launcher running; every tree's leader removes its run
files but the logs; ``status`` afterwards reports the reason, ``stop``
succeeds saying so, and launching the inventory again starts it anew.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import os
import time

import pytest

import launcher
from launcher.store import state
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory, wait_until


def _inventory(tmp_path, sshd, name, extra):
    return ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1, cluster_extra=extra)


def _files_left(name):
    """Every file left under the cluster's run directories and default spill space (this test's HOME/TMPDIR)."""
    roots = [os.path.expanduser(f"~/.pyku-launch/{name}"), os.path.join(os.environ["TMPDIR"], f"pyku-launch-{os.getuid()}")]
    return sorted(os.path.relpath(os.path.join(d, f), os.path.expanduser("~")) if d.startswith(os.path.expanduser("~"))
                  else os.path.join(d, f) for root in roots for d, _, fs in os.walk(root) for f in fs)


@pytest.mark.parametrize("value, words", [
    ('idle_timeout = "soon"', 'cluster.idle_timeout: must be a duration like "2h"'),
    ('idle_timeout = "5s"', "cluster.idle_timeout: must be at least 10 s"),
    ("max_lifetime = 3", "cluster.max_lifetime: must be at least 10 s"),
    ("max_lifetime = true", "cluster.max_lifetime: must be a duration"),
])
def test_limits_that_are_not_durations_of_at_least_10_s_are_exit_2(tmp_path, value, words):
    inv = tmp_path / "h.toml"
    inv.write_text(f'[cluster]\n{value}\n[scheduler]\naddress = "127.0.0.2"\n[[host]]\naddress = "127.0.0.3"\n')
    r = cli("launch", str(inv))
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_busy_client_keeps_an_idle_cluster_alive_then_it_stops_itself_everywhere(sshd, tmp_path):
    name = "idler"
    inv = _inventory(tmp_path, sshd, name, 'idle_timeout = "20s"')
    rec = launcher.launch(inv)
    try:
        with launcher.connect(name) as client:
            # Busy for longer than idle_timeout: one task that runs until the test lets it end.
            release, began = tmp_path / "release", time.monotonic()
            task = client.submit(subprocess.run, ["sh", "-c", f"until [ -e {release} ]; do sleep 0.2; done"],
                                 pure=False)
            assert wait_until(lambda: client.processing() and any(client.processing().values()), 30)
            # Meanwhile a colleague looks: who is connected, since when, what runs.
            st = cli("status", "--name", name, "--json")
            out = json.loads(st.stdout)
            me = f"{getpass.getuser()}@{socket.gethostname()}"
            assert [c["who"] for c in out["clients"]] == [me], out
            assert out["clients"][0]["since"] <= time.time() and out["tasks"]["processing"] == 1, out
            text = cli("status", "--name", name).stdout
            assert f"client     {me} since " in text and "1 processing, 0 queued" in text, text
            time.sleep(max(0.0, 28 - (time.monotonic() - began)))
            release.touch()
            assert task.result(timeout=60).returncode == 0
            st = cli("status", "--name", name, "--json")
            assert json.loads(st.stdout)["state"] == "running", st.stdout
        done = time.monotonic()
        # Idle now: within idle_timeout and the check's second, plus a loaded machine's slack.
        assert wait_until(lambda: not session_members(rec), 60), session_members(rec)
        gone_after = time.monotonic() - done
        assert gone_after > 15, gone_after  # not before it was idle for idle_timeout
        assert cluster_processes(name) == []
        # Nothing but the logs is left on any host: no spill space, no keys, no scheduler file.
        left = _files_left(name)
        assert left and all(f.endswith(".log") for f in left), left

        st = cli("status", "--name", name, "--json")
        out = json.loads(st.stdout)
        assert st.returncode == 6 and out["state"] == "stopped", st.stdout
        assert out["stopped"]["reason"].startswith("idle for 20 s (last task "), out
        text = cli("status", "--name", name)
        assert "stopped: idle for 20 s (last task" in text.stdout, text.stdout

        r = cli("stop", "--name", name)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"cluster '{name}' had stopped itself (idle for 20 s" in r.stdout, r.stdout
        assert state.read(name) is None
        left = _files_left(name)
        assert left and all(f.endswith(".log") for f in left), left  # the logs stay for a post-mortem
        assert cli("stop", "--name", name).returncode == 0  # and again: nothing to stop
    finally:
        launcher.stop(name)


def test_max_lifetime_stops_it_in_any_case_and_a_relaunch_starts_it_again(sshd, tmp_path):
    from distributed import fire_and_forget

    name = "mortal"
    inv = _inventory(tmp_path, sshd, name, 'max_lifetime = "25s"')
    rec = launcher.launch(inv)
    try:
        with launcher.connect(name) as client:  # busy, with nobody waiting for it: does not matter
            fire_and_forget(client.submit(time.sleep, 300, pure=False))
            assert wait_until(lambda: any(client.processing().values()), 30)
        assert wait_until(lambda: not session_members(rec), 90), session_members(rec)
        st = json.loads(cli("status", "--name", name, "--json").stdout)
        assert st["state"] == "stopped" and st["stopped"]["reason"].startswith("max_lifetime 25 s reached"), st
        again = launcher.launch(inv)  # the inventory again: a new cluster
        assert {h.token for h in again.hosts}.isdisjoint(h.token for h in rec.hosts)
        assert session_members(again)  # it runs (until its own max_lifetime)
    finally:
        launcher.stop(name)
    assert cluster_processes(name) == [] and state.read(name) is None
