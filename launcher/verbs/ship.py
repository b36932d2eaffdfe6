"""Ship local packages (e.g. a feature branch of pyku) to every host of a launch.

``[cluster] ship = ["pyku"]`` or ``--ship pyku``: the source of each named
importable package, as this machine would import it, is packed (tar.gz of
every file but ``__pycache__``/``*.pyc``, the same files the preflight's
fingerprint hashes) and sent with each spawn on the agent's channel. The
agent unpacks it into ``<run dir>/ship/<name>`` before the process starts
and puts ``<run dir>/ship`` first on its ``PYTHONPATH``; the spawn's reply
carries the fingerprint of the unpacked copy, which the launch compares
with the local one. The preflight leaves the shipped packages out of its
comparison (the hosts' installed copies are not used) and keeps refusing
every other mismatch.

The package is located with ``importlib.util.find_spec`` and read from
disk: it is never imported, so never executed, on the launching machine.
"""

from __future__ import annotations

import base64
import io
import tarfile
from dataclasses import dataclass
from importlib import util

from launcher.remote import agent
from launcher.errors import InventoryError, LaunchError


@dataclass(frozen=True)
class Package:
    """One package to ship: where it is here, its fingerprint, its archive (base64 tar.gz)."""

    name: str
    root: str
    fingerprint: str
    archive: str

    @property
    def size(self) -> int:
        return len(self.archive) * 3 // 4


def locate(name: str) -> str:
    """The directory of the top-level package ``name`` as this machine would import it (not imported)."""
    if "." in name:
        raise InventoryError(f"ship: {name!r}: ship a top-level package (e.g. \"pyku\"), not a submodule")
    spec = util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InventoryError(f"ship: {name!r} is not an importable package here (a directory with "
                             f"__init__.py on sys.path / PYTHONPATH)")
    return list(spec.submodule_search_locations)[0]


def _archive(root: str) -> bytes:
    buf = io.BytesIO()
    # dereference: a symlinked file ships as the file it points to (what the fingerprint hashes)
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6, dereference=True) as tar:
        for rel, full in agent._source_files(root):  # exactly the files the fingerprint hashes
            tar.add(full, arcname=rel, recursive=False)
    return buf.getvalue()


def pack(names) -> list[Package]:
    """Pack each named package's source; InventoryError if one cannot be found."""
    out = []
    for name in dict.fromkeys(names):
        root = locate(name)
        out.append(Package(name, root, agent._fingerprint_dir(root),
                           base64.b64encode(_archive(root)).decode("ascii")))
    return out


def archives(packages: list[Package]) -> dict[str, str]:
    """The spawn payload's ``archives``: name -> base64 tar.gz."""
    return {p.name: p.archive for p in packages}


def verify(packages: list[Package], shipped: dict[str, str], host: str) -> None:
    """The unpacked copies on ``host`` must hash like the local source (LaunchError otherwise)."""
    for p in packages:
        if shipped.get(p.name) != p.fingerprint:
            raise LaunchError(f"shipped {p.name} unpacked with fingerprint {shipped.get(p.name)}, "
                              f"not {p.fingerprint} as here", host=host)
