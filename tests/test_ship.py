"""A feature branch of pyku on this machine runs on every worker: shipped, not installed — on real sshd hosts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import launcher
from launcher.store import state
from launcher.config.inventory import load_inventory
from launcher.testing import ROOT
from launcher.testing.clusters import session_members, ssh_inventory

FEATURE = '''

def shipped_feature():
    """Only in this feature branch."""
    return "feature-branch"


import os as _os

if _os.environ.get("PYKU_SHIP_PROBE"):  # record every process that imports this copy
    with open(_os.environ["PYKU_SHIP_PROBE"], "a") as _f:
        _f.write(f"{_os.getpid()}\\n")
'''


@pytest.fixture
def branch(tmp_path):
    """A checkout of pyku with a function added, first on this machine's PYTHONPATH."""
    src = tmp_path / "branch"
    shutil.copytree(ROOT / "pyku", src / "pyku", ignore=shutil.ignore_patterns("__pycache__"))
    with open(src / "pyku" / "__init__.py", "a") as f:
        f.write(FEATURE)
    probe = tmp_path / "imported-by.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(src), str(ROOT)]), "PYKU_SHIP_PROBE": str(probe)}
    return src, probe, env


def _cli(env, *args):
    # Not from the checkout's root: `-m` puts the working directory first on sys.path.
    proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=os.environ["HOME"],
                            env={**os.environ, **env})
    out, err = proc.communicate(timeout=300)
    return proc.pid, proc.returncode, out, err


def test_a_modified_pyku_is_shipped_and_runs_on_every_worker(sshd, state_dir, tmp_path, branch):
    _, probe, env = branch
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="ship", workers=(1, 2), nworkers=1)

    # without shipping, the hosts' unmodified pyku is refused, nothing starts
    _, code, out, err = _cli(env, str(inv))
    assert code == 3, err
    assert "pyku source" in err and "differ from this machine" in err
    assert state.read("ship") is None

    pid, code, out, err = _cli(env, str(inv), "--ship", "pyku")
    assert code == 0, err
    rec = state.read("ship")
    try:
        [(name, fingerprint)] = rec.shipped.items()
        assert name == "pyku" and f"shipped    pyku (source fingerprint {fingerprint})" in out
        # the launching process only read the branch, it never imported (ran) it
        assert not probe.exists() or str(pid) not in probe.read_text().split()

        with launcher.connect("ship") as client:
            ran = client.run(lambda: __import__("pyku").shipped_feature())
            files = client.run(lambda: __import__("pyku").__file__)
            on_scheduler = client.run_on_scheduler(lambda: __import__("pyku").__file__)
        assert sorted(ran.values()) == ["feature-branch", "feature-branch"]  # every worker, both hosts
        for f in [*files.values(), on_scheduler]:
            assert "/.pyku-launch/ship/" in f and f.endswith("/ship/pyku/__init__.py"), f
        st = launcher.status("ship")
        assert st["shipped"] == {"pyku": fingerprint}
    finally:
        launcher.stop("ship")
    assert session_members(rec) == []
    # The shipped copies are gone with the run files: only the logs stay (a post-mortem).
    left = [os.path.join(d, f) for d, _, fs in os.walk(os.path.expanduser("~/.pyku-launch/ship")) for f in fs]
    assert left and all(f.endswith(".log") for f in left), left


def test_ship_of_something_not_importable_is_a_one_line_error(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="noship", workers=(1,), nworkers=1,
                        cluster_extra='ship = ["no_such_package_here"]')
    assert load_inventory(inv).ship == ("no_such_package_here",)
    _, code, _, err = _cli({}, str(inv))
    assert code == 2
    assert "ship: 'no_such_package_here' is not an importable package here" in err
    assert "Traceback" not in err and state.read("noship") is None


def test_ship_must_name_packages(tmp_path, sshd):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="badship", cluster_extra='ship = ["py-ku"]')
    with pytest.raises(launcher.InventoryError, match=r"cluster.ship: must be an array of top-level package names"):
        load_inventory(inv)
