"""Two distributions, one checkout: the launcher (``pip install .``) and the bundled pyku (``pip install ./pyku-bundled``).

Both installed editable, then regular, in a throw-away venv
(launcher/testing/venvs.py), offline. The launcher never writes a file of
pyku; the bundled pyku is the checkout's ``pyku/`` directory, file for file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyku.geo

from launcher.remote import agent
from launcher.testing import ROOT, missing, venvs

WHERE = ("import json, launcher, pyku, pyku.geo; from launcher.remote import agent; "
         "print(json.dumps([launcher.__file__, pyku.__file__, pyku.geo.load_area_def('HYR-LAEA-5').shape, "
         "agent._providers(['pyku', 'launcher'])]))")
PROVIDERS = {"pyku": "pyku-bundled 0.1.0", "launcher": "pyku-launch 0.1.0"}


def _files(root) -> dict[str, bytes]:
    """Every source file of a package directory (no bytecode), by relative path."""
    return {rel: open(full, "rb").read() for rel, full in agent._source_files(str(root))}


def _claimed(site, dist: str) -> set[str]:
    """The top-level directories a distribution's RECORD lists files in."""
    [info] = site.glob(f"{dist}-*.dist-info")
    return {ln.split("/")[0] for ln in (info / "RECORD").read_text().splitlines()}


def test_the_launcher_and_the_bundled_pyku_install_apart_editable_and_regular(tmp_path):
    reason = venvs.build_tools_missing()
    if reason:
        missing(reason)
    shape = list(pyku.geo.load_area_def("HYR-LAEA-5").shape)
    project = venvs.copy_project(tmp_path / "project")
    venv = venvs.make(tmp_path / "venv")
    try:
        venv.pip("install", "-e", str(project), "-e", str(project / "pyku-bundled"))
        # the package stays where the seed's users look for it; package data (etc/*.toml) is read
        assert json.loads(venv.python_code(WHERE).stdout) == [
            str(project / "launcher" / "__init__.py"), str(project / "pyku" / "__init__.py"), shape, PROVIDERS]

        venv.pip("install", "--force-reinstall", str(project), str(project / "pyku-bundled"))
        site = venv.site_packages
        assert json.loads(venv.python_code(WHERE).stdout) == [
            str(site / "launcher" / "__init__.py"), str(site / "pyku" / "__init__.py"), shape, PROVIDERS]
        assert _files(site / "pyku") == _files(ROOT / "pyku")  # every file of the checkout's pyku/, no other
        assert _files(site / "launcher") == _files(ROOT / "launcher")
        assert "pyku" not in _claimed(site, "pyku_launch") and "launcher" not in _claimed(site, "pyku_bundled")
        check = venv.pip("check", check=False)
        assert check.returncode == 0, check.stdout + check.stderr

        venv.pip("uninstall", "-y", "pyku-launch")
        assert _files(site / "pyku") == _files(ROOT / "pyku")
        venv.python_code("import pyku.geo; pyku.geo.load_area_def('HYR-LAEA-5')")
        venv.pip("uninstall", "-y", "pyku-bundled")
        assert not (site / "pyku").exists() and not (site / "launcher").exists()
    finally:
        venv.close()


HYBRID = """\
import json, sys
from importlib import util
sys.path[:0] = sys.argv[2:]
spec = util.spec_from_file_location("agent", sys.argv[1])  # stdlib only, as on a host
agent = util.module_from_spec(spec)
spec.loader.exec_module(agent)
print(json.dumps(agent._providers(["pyku"])))
"""


def test_the_probe_names_every_distribution_that_wrote_the_package(tmp_path):
    """What the old packaging made (its files written over DWD's) is named as such, and a bare checkout as one."""
    mixed, bare = tmp_path / "site", tmp_path / "checkout"
    for top in (mixed, bare):
        (top / "pyku").mkdir(parents=True)
        (top / "pyku" / "__init__.py").write_text("")
    for name, version in (("pyku", "1.1.1"), ("pyku_launch", "0.1.0")):
        info = mixed / f"{name}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n")
        (info / "top_level.txt").write_text("pyku\n")
        (info / "RECORD").write_text("pyku/__init__.py,,\n")
    agent_py = str(ROOT / "launcher" / "remote" / "agent.py")
    for top, want in ((mixed, {"pyku 1.1.1", "pyku-launch 0.1.0"}), (bare, {f"from {bare / 'pyku'}"})):
        out = subprocess.run([sys.executable, "-S", "-c", HYBRID, agent_py, str(top)], capture_output=True,
                             text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
        assert set(json.loads(out)["pyku"].split(" + ")) == want, out
