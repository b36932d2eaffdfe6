"""Shared fixtures.  Helpers live in launcher/testing/ (importable by bench/ and users too)."""

from __future__ import annotations

import os

import pytest

# Local children (the localhost transport, `python -m launcher.cli`) import
# this checkout, not whichever one is installed; the hosts get it through
# the testbed's env line.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH")) if p)

from launcher.testing.sshd import free_port as _free_port  # noqa: E402
from launcher.testing.sshd import sshd_available, start_testbed  # noqa: E402


@pytest.fixture(scope="session")
def sshd():
    """Three real OpenSSH servers on 127.0.0.2-127.0.0.4, one shared port.

    Yields a :class:`launcher.testing.sshd.SSHTestbed`; skipped (with the reason) where sshd
    cannot run, e.g. not root and no sshd can bind.
    """
    reason = sshd_available()
    if reason is not None:
        pytest.skip(f"cannot start the real OpenSSH test hosts: {reason}")
    testbed = start_testbed(n_hosts=3, first=2)
    try:
        yield testbed
    finally:
        testbed.close()


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """A private XDG_STATE_HOME (where the launcher keeps its state)."""
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("XDG_STATE_HOME", str(path))
    return path


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return _free_port("127.0.0.1")
