"""Warn when ``persistent_processing`` writes outside the directories a launch proved shared.

The workers write the outputs into ``tmpdir`` and this process reads them
back, so ``tmpdir`` must be one directory on every host and here. A cluster
started by pyku-launch with ``[cluster] shared = [...]`` had those
directories proved shared by its preflight, and its scheduler carries them
in ``$PYKU_SHARED_DIRS`` (a JSON list, this machine's paths). A ``tmpdir``
outside all of them gets one warning per cluster: it may be a different
directory on some host, and results written there would be lost.
"""

from __future__ import annotations

import json
import os
import warnings

VAR = "PYKU_SHARED_DIRS"  # set by launcher/remote/commands.py on the scheduler
_checked: dict[str, list[str] | None] = {}  # scheduler address -> its shared directories (None: not launched)


def launched_shared_dirs() -> str | None:
    """Runs on the scheduler: its ``$PYKU_SHARED_DIRS`` (None if pyku-launch did not start it)."""
    return os.environ.get(VAR)


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def warn_if_unshared(client, outdir) -> None:
    """One warning per cluster if ``outdir`` is outside its checked shared directories."""
    address = getattr(client.scheduler, "address", None) or str(id(client))
    if address in _checked:
        return
    try:
        raw = client.run_on_scheduler(launched_shared_dirs)
        dirs = json.loads(raw) if raw is not None else None
    except Exception:  # an older scheduler, pickling refused: nothing to check against
        dirs = None
    _checked[address] = dirs
    if dirs is None:
        return
    out = os.path.realpath(outdir)
    if any(_inside(out, os.path.realpath(d)) for d in dirs):
        return
    listed = ", ".join(dirs) if dirs else "none ([cluster] shared is not set)"
    warnings.warn(f"persistent_processing: tmpdir {out} is outside the directories the launch checked are "
                  f"shared by every host ({listed}): if it is not the same directory on every host, the "
                  f"workers' results are lost; use a tmpdir under a [cluster] shared directory",
                  stacklevel=3)
