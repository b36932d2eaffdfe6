"""A damaged state file never loses a running cluster: the last good copy is restored, or the
record is kept and `stop --inventory` finds the cluster's processes on every host without it."""

from __future__ import annotations

import json
import logging
import os

import launcher
from launcher.store import state
from launcher.store.records import ClusterRecord
from launcher.testing.clusters import cli, session_members, ssh_inventory


def test_a_damaged_record_is_restored_from_its_last_good_copy(state_dir, caplog):
    record = ClusterRecord(name="copied", phase="running", launcher_pid=1, inventory="/x/hosts.toml",
                           inventory_sha256="", protocol="tls")
    state.write(record)
    path = state.state_path("copied")
    path.write_text(path.read_text()[:20])  # a record cut short
    with caplog.at_level(logging.WARNING, logger="launcher"):
        assert state.read("copied") == record
    assert "restored the last good copy" in caplog.text
    assert path.with_name("copied.json.corrupt").read_text() == json.dumps(
        record.to_json(), indent=1)[:20]  # the damaged file is kept, not removed
    state.remove("copied")
    assert list(state_dir.glob("pyku-launch/copied*")) == []


def _damage(name: str) -> None:
    """Cut the record and its copy in half, as a full disk or a bad edit might."""
    for path in (state.state_path(name), state.state_path(name).with_name(f"{name}.json.bak")):
        text = path.read_text()
        path.write_text(text[: len(text) // 2])


def test_a_corrupt_record_is_kept_and_the_inventory_sweep_ends_the_cluster(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="sweepme", workers=(1,))
    neighbour = ssh_inventory(tmp_path / "other.toml", sshd, name="sweepme-w", workers=(2,))
    rec, other = launcher.launch(inv), launcher.launch(neighbour)
    try:
        running = sorted(session_members(rec))
        assert running
        _damage("sweepme")

        r = cli("stop", "--name", "sweepme")  # refuses, keeps the record, says what to do
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "corrupt state file" in r.stderr and f"pyku-launch stop --inventory {inv}" in r.stderr
        assert state.state_path("sweepme").exists() and sorted(session_members(rec)) == running

        r = cli(str(inv))  # nor does a launch start a second cluster in the same directories
        assert r.returncode == 1 and "corrupt state file" in r.stderr
        assert sorted(session_members(rec)) == running
        assert cli("status", "--name", "sweepme").returncode == 1

        r = cli("stop", "--inventory", str(inv))
        assert r.returncode == 0, r.stderr
        assert session_members(rec) == []
        assert not state.state_path("sweepme").exists() and state.known_names() == ["sweepme-w"]
        run_root = os.path.dirname(os.path.dirname(os.path.dirname(rec.hosts[0].log)))
        assert not os.path.exists(f"{run_root}/sweepme")

        # a cluster whose name merely starts the same is not touched
        assert launcher.status("sweepme-w")["state"] == "running"
    finally:
        if state.state_path("sweepme").exists():
            launcher.stop(inventory=inv)
        launcher.stop("sweepme-w")
    assert session_members(other) == []
