"""Every bench/bench_*.py runs with ``--smoke`` and prints its figure lines, so a bench cannot rot unseen.

README.md and bench/README.md quote the benches' figure lines
(``figure <bench>/<key>: ...``, bench/_report.py); ``--smoke`` runs a bench's
smallest meaningful configuration through the same code (real sshd hosts and
workers where the bench uses them), so the lines are the ones a full run
prints, from fewer and smaller runs.

A test rather than a step in .ci/run: the benches are found by glob, so a
new bench without ``--smoke`` fails here; and each runs under the suite's
isolation (its own HOME, TMPDIR and launcher state, a process mark: what a
bench leaves running fails the test, see tests/conftest.py), with a timeout
and the suite's rule for a missing sshd (skipped here, failed under CI).
Targets are not checked: a smoke configuration is too small to meet them.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from launcher.testing import ROOT, missing
from launcher.testing.sshd import sshd_available

BENCHES = sorted((ROOT / "bench").glob("bench_*.py"))
FIGURE = re.compile(r"^figure (?P<bench>[\w-]+)/(?P<key>[\w-]+): \S", re.M)
#: Other modes of a bench whose figures are quoted too: (script, flag).
MODES = [("bench_fanout.py", "--versus")]
SMOKE_SECONDS = 420  # the slowest smoke takes ~1.5 min on a loaded 2-core machine


def test_every_bench_is_found():
    assert len(BENCHES) >= 10, BENCHES  # the glob sees bench/ (a moved directory would test nothing)


@pytest.mark.timeout(SMOKE_SECONDS + 60)
@pytest.mark.parametrize("script, mode", [(b, ()) for b in BENCHES] + [(ROOT / "bench" / m, (f,)) for m, f in MODES],
                         ids=lambda x: x.stem if hasattr(x, "stem") else "-".join(x))
def test_bench_smoke_runs_and_prints_its_figures(script, mode, isolated):
    if "import _util" in script.read_text():  # the benches that start the sshd testbed
        why = sshd_available()
        if why:
            missing(f"{script.name} needs the real OpenSSH test hosts: {why}")
    run = subprocess.run([sys.executable, str(script), *mode, "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=SMOKE_SECONDS)
    said = f"stdout:\n{run.stdout[-4000:]}\nstderr:\n{run.stderr[-4000:]}"
    assert run.returncode == 0, said
    figures = FIGURE.findall(run.stdout)
    assert figures, said
    assert len({bench for bench, _ in figures}) == 1, figures  # one bench, one name in its lines
    assert "figures missing" not in run.stdout, said
    left = list((isolated / "tmp").iterdir())
    assert not left, f"{script.name} left temporary files: {left}"
