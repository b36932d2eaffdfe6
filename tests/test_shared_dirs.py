"""``[cluster] shared``: the preflight proves each directory is one file system on every host and here.

The testbed's hosts are this machine, so a directory is "shared" when every
host names the same path, and "not shared" when a host's own path
(``[[host]] shared``) is another existing directory: exactly what a host
whose NFS mount failed looks like (an empty local directory at the same
place).
"""

from __future__ import annotations

import json
import os
import warnings

import pytest

import launcher
from launcher.testing.clusters import cli, ssh_inventory
from launcher.testing import ROOT
from launcher.testing.example import load_preprocess


def _inventory(tmp_path, sshd, shared, host_extra=None, name="shr", **kw):
    return ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1,
                         cluster_extra=f"shared = {json.dumps([str(p) for p in shared])}",
                         host_extra=host_extra, **kw)


def _leftovers(*dirs):
    return [f for d in dirs if os.path.isdir(d) for f in os.listdir(d) if f.startswith(".pyku-launch-shared-")]


@pytest.mark.parametrize("value, words", [
    ('"/scratch"', "cluster.shared: must be an array of absolute paths"),
    ('["scratch/pyku"]', 'cluster.shared: must be an array of absolute paths, "scratch/pyku" is not one'),
    ('["/"]', "cluster.shared: must not be the root directory"),
])
def test_shared_that_is_not_a_list_of_absolute_paths_is_exit_2(tmp_path, value, words):
    inv = tmp_path / "h.toml"
    inv.write_text(f'[cluster]\nshared = {value}\n[scheduler]\naddress = "127.0.0.2"\n'
                   f'[[host]]\naddress = "127.0.0.3"\n')
    r = cli("check", str(inv))
    assert r.returncode == 2, r.stdout + r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_hosts_own_shared_list_must_match_the_clusters(tmp_path):
    inv = tmp_path / "h.toml"
    inv.write_text('[cluster]\nshared = ["/a", "/b"]\n[scheduler]\naddress = "127.0.0.2"\n'
                   '[[host]]\naddress = "127.0.0.3"\nshared = ["/c"]\n')
    r = cli("check", str(inv))
    assert r.returncode == 2 and "host[1].shared: must list 2 directories" in r.stderr, r.stderr


def test_check_proves_shared_directories_and_shows_free_space(sshd, tmp_path):
    shared = tmp_path / "scratch"
    shared.mkdir()
    r = cli("check", str(_inventory(tmp_path, sshd, [shared])))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if f"shared {shared}:" in ln]
    assert len(lines) == 3 and all(ln.rstrip().endswith("free") for ln in lines), r.stdout  # scheduler + 2 hosts
    assert _leftovers(shared) == []


def test_a_missing_shared_directory_on_a_host_is_refused_naming_host_and_path(sshd, tmp_path):
    shared, gone = tmp_path / "scratch", tmp_path / "not-mounted"
    shared.mkdir()
    inv = _inventory(tmp_path, sshd, [shared], host_extra={2: f'shared = ["{gone}"]'})
    r = cli("check", str(inv))
    assert r.returncode == 3, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{sshd.hosts[2].address}: shared directory {gone}: No such file or directory" in line, line
    assert "Traceback" not in r.stderr
    assert _leftovers(shared) == []


def test_a_directory_that_is_not_the_shared_one_is_refused(sshd, tmp_path):
    shared, local = tmp_path / "scratch", tmp_path / "local-scratch"
    shared.mkdir()
    local.mkdir()
    inv = _inventory(tmp_path, sshd, [shared], host_extra={1: f'shared = ["{local}"]'})
    r = cli("check", str(inv))
    assert r.returncode == 3, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert f"{sshd.hosts[1].address}: shared directory {local} is not the one this machine has at {shared}" \
        in line, line
    assert _leftovers(shared, local) == []


def test_a_launch_is_refused_when_this_machine_lacks_the_directory(sshd, tmp_path):
    gone = tmp_path / "nowhere"
    r = cli("launch", str(_inventory(tmp_path, sshd, [gone])))
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"this machine: shared directory {gone}: does not exist" in r.stderr, r.stderr
    st = cli("status", "--name", "shr", "--json")
    assert json.loads(st.stdout)["state"] == "not launched"


def test_persistent_processing_warns_once_about_a_tmpdir_outside_the_shared_directories(sshd, tmp_path):
    import pyku.compute as compute
    import pyku.shared

    shared = tmp_path / "scratch"
    shared.mkdir()
    # The check comes before any piece is planned: no input is needed to see it.
    files = []
    launcher.launch(_inventory(tmp_path, sshd, [shared], name="shrpp"))
    units = load_preprocess()
    try:
        with launcher.connect("shrpp"):
            pyku.shared._checked.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compute.persistent_processing(units, files, shared / "out")
            assert not [w for w in caught if "tmpdir" in str(w.message)]
            pyku.shared._checked.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compute.persistent_processing(units, files, tmp_path / "elsewhere")
                compute.persistent_processing(units, files, tmp_path / "elsewhere2")
            hits = [str(w.message) for w in caught if "outside the directories" in str(w.message)]
            assert len(hits) == 1 and str(shared) in hits[0], hits
    finally:
        launcher.stop("shrpp")


def test_a_cluster_all_on_this_machine_shares_every_directory_so_pyku_does_not_warn(tmp_path):
    """The embedded default (hosts/localhost.toml: every process a local one): any tmpdir is seen alike."""
    import pyku.compute as compute
    import pyku.shared

    text = (ROOT / "hosts" / "localhost.toml").read_text()
    text = text.replace('name = "local"', 'name = "shrlocal"').replace("port = 8786", "port = 0") \
               .replace("dashboard_port = 8787", "dashboard_port = 0").replace("nworkers = 2", "nworkers = 1")
    inv = tmp_path / "local.toml"
    inv.write_text(text)
    launcher.launch(inv)
    try:
        with launcher.connect("shrlocal"):
            pyku.shared._checked.clear()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                compute.persistent_processing(load_preprocess(), [], tmp_path / "out")
            assert not [str(w.message) for w in caught if "tmpdir" in str(w.message)]
    finally:
        launcher.stop("shrlocal", purge=True)


def test_a_relaunch_with_other_shared_directories_needs_a_new_scheduler(sshd, tmp_path):
    """The scheduler tells pyku which directories are shared from its start: a change is refused, not ignored."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    launcher.launch(_inventory(tmp_path, sshd, [first], name="shrmv"))
    try:
        r = cli(str(_inventory(tmp_path, sshd, [second], name="shrmv")))
        assert r.returncode == 2 and "refuse cluster.shared" in r.stderr and "--recreate" in r.stderr, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    finally:
        launcher.stop("shrmv", purge=True)
