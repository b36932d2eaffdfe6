"""The state record: what a launch writes is what stop/status read back, older files included."""

from __future__ import annotations

import json

import pytest

from launcher.store import state
from launcher.config.inventory import load_inventory
from launcher.store.records import VERSION, ClusterRecord, HostRecord
from launcher.testing import ROOT
from launcher.security.tls import Material

LOCALHOST = ROOT / "hosts" / "localhost.toml"


def _record() -> ClusterRecord:
    inv = load_inventory(LOCALHOST)
    hosts = [HostRecord.new(inv.scheduler, "scheduler", inv.name),
             HostRecord.new(inv.hosts[0], "workers", inv.name, expected=2, memory_limit=2**30)]
    hosts[1].pid, hosts[1].log = 1234, "/tmp/x.log"
    return ClusterRecord(name=inv.name, phase="running", launcher_pid=1, inventory=inv.path,
                         inventory_sha256=inv.sha256, protocol="tls", hosts=hosts,
                         missing={"other": "cannot connect over SSH: refused"},
                         scheduler="tls://127.0.0.1:8786", tls=Material("CA", "CERT", "KEY"))


def test_a_record_reads_back_as_written(state_dir):
    rec = _record()
    state.write(rec)
    back = state.read(rec.name)
    assert back == rec
    assert back.hosts[1].spec == rec.hosts[1].spec and back.tls.key == "KEY"
    assert json.loads(state.state_path(rec.name).read_text())["version"] == VERSION


def test_a_record_without_version_is_migrated(state_dir):
    data = _record().to_json()
    for key in ("version", "missing", "launcher_pid", "inventory_sha256"):
        del data[key]
    state.state_path("old").write_text(json.dumps(data))
    rec = state.read("old")
    assert rec.missing == {} and rec.version == VERSION
    assert [h.token for h in rec.hosts] == [h["token"] for h in data["hosts"]]


def test_a_record_of_a_newer_launcher_is_refused_by_name(state_dir):
    data = dict(_record().to_json(), version=VERSION + 1)
    state.state_path("new").write_text(json.dumps(data))
    with pytest.raises(state.CorruptState, match="written by a newer pyku-launch"):
        state.read("new")


def test_a_host_record_without_its_spec_is_corrupt(state_dir):
    data = _record().to_json()
    del data["hosts"][0]["spec"]
    state.state_path("broken").write_text(json.dumps(data))
    with pytest.raises(state.CorruptState, match="host record"):
        state.read("broken")


def test_a_version_1_record_reads_with_the_launchs_worker_names(state_dir):
    data = _record().to_json()
    data["version"] = 1
    del data["settings"]
    for h in data["hosts"]:
        del h["names"]
    rec = ClusterRecord.from_json(data)
    assert rec.version == VERSION and rec.settings == {}
    workers = [h for h in rec.hosts if h.role == "workers"]
    assert workers and all(h.worker_names() == [f"{h.label}-{i}" for i in range(h.expected)] for h in workers)


def test_a_version_2_record_reads_every_tree_as_an_ssh_hosts(state_dir):
    data = _record().to_json()
    data["version"] = 2
    for h in data["hosts"]:
        del h["source"], h["extra"], h["home"]
    state.state_path("old").write_text(json.dumps(data | {"name": "old"}))
    rec = state.read("old")
    assert rec.version == VERSION and rec.hosts
    assert all(h.source == "ssh" and h.extra == {} for h in rec.hosts)
    assert [h.token for h in rec.hosts] == [h["token"] for h in data["hosts"]]


def test_a_version_3_record_reads_with_no_home_so_its_stop_asks_the_agent(state_dir):
    from launcher.remote import quickstop
    from launcher.remote.protocol import Stop

    data = _record().to_json()
    data["version"] = 3
    for h in data["hosts"]:
        del h["home"]
    state.state_path("v3").write_text(json.dumps(data | {"name": "v3"}))
    rec = state.read("v3")
    assert rec.version == VERSION and rec.hosts and all(h.home is None for h in rec.hosts)
    assert [h.token for h in rec.hosts] == [h["token"] for h in data["hosts"]]
    request = Stop(tokens=[rec.hosts[0].token], remove=["~/.pyku-launch/x"], prune=[])
    assert quickstop.resolved(request, rec.hosts[0].home) is None  # paths only the host can resolve


def test_a_tree_of_an_unknown_source_is_refused_by_name(state_dir):
    from launcher.errors import LaunchError
    from launcher.sources import registry

    rec = _record()
    rec.hosts[0].source = "pbs"
    with pytest.raises(LaunchError, match="worker source 'pbs'"):
        registry.by_source(rec.hosts)
