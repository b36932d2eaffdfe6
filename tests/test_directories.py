"""Where a cluster's files go on its hosts: never shared with another cluster, private, on the
host's own temporary disk, and removed by stop."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import uuid

import pytest

import launcher
from launcher.remote import commands
from launcher.store import state
from launcher.errors import InventoryError
from launcher.config.inventory import load_inventory
from launcher.testing.clusters import ROOT, session_members, ssh_inventory


def test_names_and_labels_never_share_a_directory():
    spec = load_inventory(ROOT / "hosts" / "localhost.toml").hosts[0]
    a = ("advq", dataclasses.replace(spec, label="w-a"))
    b = ("advq-w", dataclasses.replace(spec, label="a"))
    for paths in (lambda n, s: [commands.local_directory(n, s)],
                  lambda n, s: [commands.run_dir(n, s, r) for r in ("scheduler", "workers")]):
        assert not set(paths(*a)) & set(paths(*b))
    # what stopping one removes holds nothing of the other
    for (one, other) in ((a, b), (b, a)):
        removed = commands.cleanup_paths(one[0], one[1], "workers")[0]
        kept = [commands.local_directory(*other), commands.run_dir(*other, "workers")]
        assert not [k for k in kept for r in removed if k == r or k.startswith(r + "/")]


@pytest.mark.parametrize("value, says", [
    ("../elsewhere", "must not contain '..'"),
    ("/scratch/../tmp", "must not contain '..'"),
    ("/", "must not be the root directory"),
    ("/scratch/" + "x" * 256, "too long"),
])
def test_a_local_directory_that_escapes_or_cannot_exist_is_refused(tmp_path, value, says):
    path = tmp_path / "hosts.toml"
    path.write_text(f'[scheduler]\naddress = "h"\n[[host]]\naddress = "w"\nlocal_directory = "{value}"\n')
    with pytest.raises(InventoryError, match=f"host\\[1\\].local_directory: .*{says}"):
        load_inventory(path)


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_worker_directories_resolve_on_the_host_and_stay_private(sshd, state_dir, tmp_path):
    name, relative = "dirs", f"pyku-test-{uuid.uuid4().hex[:8]}"
    scratch = tmp_path / "node-scratch"  # what an HPC node sets TMPDIR to
    scratch.mkdir()
    env = sshd.env_line()
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name=name, host_extra={
        1: f"env = '{env}; export TMPDIR={scratch}/'",
        2: f'local_directory = "{relative}"'})
    rec = launcher.launch(inv)
    home = None
    try:
        with launcher.connect(name) as client:
            spill = client.run(lambda dask_worker: (dask_worker.name, dask_worker.local_directory,
                                                    os.environ["DASK_TEMPORARY_DIRECTORY"]))
        rundirs = {h.label: os.path.dirname(h.log) for h in rec.hosts}
        home = os.path.dirname(os.path.dirname(os.path.dirname(rundirs["127.0.0.4"])))
        own = f"{scratch}/pyku-launch-{os.getuid()}/{name}/127.0.0.3"
        for worker, local_directory, temporary in spill.values():
            base = own if worker.startswith("127.0.0.3") else f"{home}/{relative}"
            assert temporary == base and local_directory.startswith(base + "/"), (worker, local_directory)

        # the run tree under home and the spill tree under TMPDIR are private at every level
        run_root = os.path.dirname(os.path.dirname(rundirs["127.0.0.3"]))
        for d in [run_root, f"{run_root}/{name}", *rundirs.values(),
                  f"{scratch}/pyku-launch-{os.getuid()}", os.path.dirname(own), own]:
            assert _mode(d) == 0o700, d
        assert not os.path.exists(f"{rundirs['127.0.0.4']}/{relative}")
    finally:
        launcher.stop(name)
        if home:
            shutil.rmtree(f"{home}/{relative}", ignore_errors=True)
    assert session_members(rec) == []
    assert not os.path.exists(f"{scratch}/pyku-launch-{os.getuid()}")  # removed, parents pruned
    assert state.read(name) is None
