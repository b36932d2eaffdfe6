"""A stand-in for DWD's pyku: its layout and the calls of it that meet a launched cluster, none of its weight.

DWD's pyku (github.com/DeutscherWetterdienst/pyku, release 1.1.1) needs
Python >= 3.12 and some fifty libraries (cartopy, xclim, metpy, ...), so
the tests build this instead, laid out as DWD's is:

- a git checkout with a flat ``pyku/`` package and a ``pyproject.toml``
  whose version comes from the git tag through setuptools_scm (``v1.1.1``
  → ``1.1.1``; an edited checkout → ``1.1.2.dev0+g<commit>.d<date>``), the
  distribution named ``pyku``, package data under ``pyku/etc``;
- ``pyku.compute.persistent_processing(func, files, tmpdir, identifier=...)``
  finding the client as DWD's does, with ``distributed.default_client()``,
  and writing every output file from where the task runs (a worker) into
  ``tmpdir``; files already there are not redone;
- ``pyku.clix.core.main`` (the ``clixrun`` script), whose
  ``--dask_cluster ADDRESS`` does ``Client(address)`` and, without it,
  ``Client()``, as DWD's ``start_dask_cluster`` does.

Unlike DWD's, ``func`` gets and returns text (no xarray), and it asks for
Python >= 3.11, the suite's.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

RELEASE = "1.1.1"
MARK = "DWD pyku stand-in"   # pyku.STAND_IN: which pyku an import found

PYPROJECT = """\
[build-system]
requires = ["setuptools>=70.1", "setuptools_scm>=8"]
build-backend = "setuptools.build_meta"

[tool.setuptools_scm]
version_scheme = "guess-next-dev"
local_scheme = "node-and-date"

[project]
name = "pyku"
description = "pyku (stand-in of DWD's, for pyku-launch's tests)"
requires-python = ">=3.11"
dynamic = ["version"]
dependencies = ["dask", "distributed"]

[project.scripts]
clixrun = "pyku.clix.core:main"

[tool.setuptools]
include-package-data = true

[tool.setuptools.packages.find]
where = ["."]
exclude = ["tests*"]

[tool.setuptools.package-data]
pyku = ["etc/*.yaml"]
"""

INIT = f'''\
"""Package initializer (stand-in of DWD's pyku, launcher/testing/dwd_pyku.py)."""

from importlib.metadata import PackageNotFoundError, version as importlib_version

import pyku.compute as libcompute  # noqa: F401  (DWD's initializer imports its modules)

STAND_IN = {MARK!r}

try:
    __version__ = importlib_version(__name__)
except PackageNotFoundError:
    __version__ = "unknown"
'''

COMPUTE = '''\
"""persistent_processing as DWD's pyku.compute has it: the default client, outputs written by the tasks."""


def persistent_processing(func, files=None, tmpdir=None, identifier="pyku", persist=False, engine=None,
                          unify_chunks=True, chunks={"time": -1}, extension="nc"):
    """Apply ``func`` to each file, write each result into ``tmpdir``, return the files written."""
    import glob
    import hashlib
    import os
    import pathlib

    import dask
    from dask import delayed
    from dask.distributed import default_client

    if tmpdir is None:
        raise Exception("tmpdir is not set")
    if files is None:
        raise Exception("files is None")

    try:  # If Dask client already created in parent code, use it
        client = default_client()
    except ValueError:
        client = None

    def written(path):
        checksum = hashlib.md5(open(path, "rb").read(2000)).hexdigest()
        return os.path.join(tmpdir, f"{pathlib.Path(path).stem}-{identifier}-{checksum}-00000000.{extension}")

    def process_file(path):
        with open(path) as f:
            out = func(f.read())
        with open(written(path), "w") as f:
            f.write(out)

    todo = [f for f in files if not os.path.exists(written(f))]
    if client is None:
        for f in todo:
            process_file(f)
    else:
        dask.compute(*[delayed(process_file)(f) for f in todo])
    return sorted(glob.glob(os.path.join(tmpdir, f"*-{identifier}-*.{extension}")))
'''

CLIX = '''\
"""clixrun: the cluster options of DWD's pyku.clix (start_dask_cluster)."""

import argparse


def start_dask_cluster(opts):
    from dask.distributed import Client

    if opts.dask_cluster:
        return Client(opts.dask_cluster), None
    return Client(), None  # default local client


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clixrun")
    parser.add_argument("--dask_cluster", type=str, default=None,
                        help="Optional: Dask scheduler address to execute computations on")
    opts = parser.parse_args(argv)
    client, _ = start_dask_cluster(opts)
    try:
        print(f"clixrun: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
    finally:
        client.close()
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    ".gitignore": "__pycache__/\n*.egg-info/\nbuild/\ndist/\n",
    "pyku/__init__.py": INIT,
    "pyku/compute.py": COMPUTE,
    "pyku/clix/__init__.py": '"""Indicator initializer."""\n',
    "pyku/clix/core.py": CLIX,
    "pyku/etc/variables.yaml": "tas:\n  standard_name: air_temperature\n  units: K\n",
}


def _git(path: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=pyku-launch tests", "-c", "user.email=tests@localhost",
                    "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
                   cwd=path, check=True, capture_output=True)


def checkout(path: Path) -> Path:
    """A git checkout of the stand-in at its release tag (``v1.1.1``) in ``path``."""
    for rel, text in FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    _git(path, "init", "-q")
    _git(path, "add", "-A")
    _git(path, "commit", "-q", "-m", f"pyku {RELEASE}")
    _git(path, "tag", f"v{RELEASE}")
    return path


FEATURE = textwrap.dedent('''

    def working_copy_feature():
        """Only in this working copy."""
        return "working copy"
''')


def edit(path: Path) -> Path:
    """Change the checkout at ``path`` as a developer would (uncommitted): ``pyku.working_copy_feature()``."""
    with open(path / "pyku" / "__init__.py", "a") as f:
        f.write(FEATURE)
    return path
