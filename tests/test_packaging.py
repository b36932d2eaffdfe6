"""Two distributions, one checkout: the launcher (``pip install .``) and the bundled pyku (``pip install ./pyku-bundled``).

Both installed editable, then regular, in a throw-away venv
(launcher/testing/venvs.py), offline. The launcher never writes a file of
pyku; the bundled pyku is the checkout's ``pyku/`` directory, file for file.
"""

from __future__ import annotations

import json

import pyku.geo

from launcher.remote import agent
from launcher.testing import ROOT, missing, venvs

WHERE = ("import json, launcher, pyku, pyku.geo; from launcher import agent; "
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
