"""Throw-away virtual environments for packaging tests: what ``pip install`` writes, offline.

A :class:`Venv` has a site-packages of its own, where its ``pip install``
writes, and sees the packages of the interpreter running the tests after
its own (a ``.pth`` line per site directory of that interpreter), so dask,
distributed, numpy ... need not be installed again: ``pip install
--no-deps --no-build-isolation --no-index`` of a local directory builds and
installs it without any download. (``venv --system-site-packages`` would
see the *base* interpreter's packages, not those of a virtualenv the suite
may run in; and the running interpreter's own ``.pth`` import hooks, e.g.
an editable install of this checkout, are not run in it.)

Its commands run without the suite's ``PYTHONPATH`` (which puts this
checkout first) and without pip's configuration files, so what they import
is what the venv installed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import ROOT, isolation

#: What a project copy needs to build both distributions (launcher/, pyku-bundled/ → ../pyku).
PROJECT_FILES = ("pyproject.toml", "README.md", "launcher", "pyku", "pyku-bundled")


def build_tools_missing() -> str | None:
    """Why wheels cannot be built offline here (the test extra installs the tools), None if they can."""
    from importlib import metadata

    try:
        major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
        metadata.version("setuptools-scm")
    except (metadata.PackageNotFoundError, ValueError) as e:
        return f"no {e} to build wheels offline (pip install -e '.[test]')"
    if (major, minor) < (70, 1):
        return f"setuptools {major}.{minor} builds no wheel without the wheel package (pip install -e '.[test]')"
    return None


def copy_project(dest: Path) -> Path:
    """A copy of this checkout's two distributions in ``dest``: builds write there, not into the checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


@dataclass
class Venv:
    """A virtual environment at ``path`` (see the module's docstring)."""

    path: Path

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    @property
    def site_packages(self) -> Path:
        return self.path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a command in this venv: its bin first on PATH, no PYTHONPATH, no pip config."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.path),
                   PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_NO_INPUT="1",
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        env.update(extra)
        return env

    def host_env(self) -> str:
        """An inventory's ``env`` that makes a test host run this venv (its bin first, no PYTHONPATH),
        with the test's own HOME, TMPDIR and mark (:func:`launcher.testing.isolation.exports`)."""
        line = f"unset PYTHONPATH && export PATH={shlex.quote(str(self.bin))}:$PATH"
        private = isolation.exports()
        return f"{line} && {private}" if private else line

    def run(self, *argv: str, check: bool = True, timeout: float = 300, cwd: str | Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` (``python`` means this venv's) from ``cwd`` (default: the venv, not the checkout)."""
        argv = (self.python, *argv[1:]) if argv[0] == "python" else argv
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.path,
                              env=env or self.env())
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def pip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """``python -m pip ARGS`` in this venv; ``install`` and ``wheel`` build offline (no deps, no isolation)."""
        extra = ("--no-deps", "--no-build-isolation") if args[0] in ("install", "wheel") else ()
        return self.run("python", "-m", "pip", *args[:1], *extra, *args[1:], check=check)

    def python_code(self, code: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return self.run("python", "-c", code, *args, check=check, **kw)

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def make(path: Path) -> Venv:
    """A new :class:`Venv` at ``path`` seeing this interpreter's packages after its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    venv = Venv(Path(path))
    parents = [p for p in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(p)]
    (venv.site_packages / "_pyku_launch_tests_parent.pth").write_text("".join(f"{p}\n" for p in parents))
    return venv
