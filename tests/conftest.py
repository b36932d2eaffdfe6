"""Shared fixtures.  Helpers live in launcher/testing/ (importable by bench/ and users too).

Every test runs isolated (:mod:`launcher.testing.isolation`): its own HOME,
TMPDIR and launcher state, on this machine and on the test hosts, and a mark
on every process it starts. After the test, whatever still carries its mark
is killed and the test fails: a test that leaks a scheduler or a worker is
a failing test, and the user's own clusters are never touched.
"""

from __future__ import annotations

import os
import tempfile

import pytest

# Local children (the localhost transport, `python -m launcher.cli`) import
# this checkout, not whichever one is installed; the hosts get it through
# the testbed's env line.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH")) if p)

from launcher.testing import isolation, missing  # noqa: E402
from launcher.testing.sshd import free_port as _free_port  # noqa: E402
from launcher.testing.sshd import sshd_available, start_testbed  # noqa: E402


@pytest.fixture(scope="session")
def sshd():
    """Three real OpenSSH servers on 127.0.0.2-127.0.0.4, one shared port.

    Yields a :class:`launcher.testing.sshd.SSHTestbed`; skipped (with the
    reason) where sshd cannot run, e.g. not root and no sshd can bind, and
    failed under CI. Session-scoped fixtures are set up before a test's
    isolation, so the servers carry no test's mark.
    """
    reason = sshd_available()
    if reason is not None:
        missing(f"cannot start the real OpenSSH test hosts: {reason}")
    testbed = start_testbed(n_hosts=3, first=2)
    try:
        yield testbed
    finally:
        testbed.close()


@pytest.fixture(scope="session")
def slurm():
    """The real one-node Slurm of this machine (``.ci/slurm-up``; started here if root and down).

    Skipped with the reason where it cannot run, failed under CI. Tests
    submit real jobs and cancel only their own cluster's
    (:func:`launcher.testing.slurm.cancel_cluster_jobs`).
    """
    from launcher.testing import slurm as testing_slurm

    reason = testing_slurm.ensure()
    if reason is not None:
        missing(f"no one-node Slurm for the batch-pool tests: {reason}")
    return testing_slurm


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Own HOME, TMPDIR, launcher state and process mark; afterwards, nothing of ours left running."""
    base = tmp_path_factory.mktemp("iso")
    for var, sub in (("HOME", "home"), ("TMPDIR", "tmp"), ("XDG_STATE_HOME", "state")):
        path = base / sub
        path.mkdir(mode=0o700)
        monkeypatch.setenv(var, str(path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches the first TMPDIR it saw
    mark = isolation.new_mark()
    monkeypatch.setenv(isolation.MARK_VAR, mark)
    yield base
    left = isolation.end_marked(mark)
    if left:
        pytest.fail("the test left processes running (killed now):\n  " + "\n  ".join(left), pytrace=False)


@pytest.fixture
def state_dir(isolated):
    """This test's XDG_STATE_HOME (where the launcher keeps its state)."""
    return isolated / "state"


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return _free_port("127.0.0.1")
