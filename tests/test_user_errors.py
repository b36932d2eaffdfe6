"""Mistakes a first-time user makes: each is one line naming what to fix, the right exit code,
no traceback, nothing started."""

from __future__ import annotations

import subprocess

import pytest

from launcher import state
from clusters import cli, cluster_processes, ssh_inventory

NOBODY = [f"127.0.0.{i}" for i in range(9, 14)]  # loopback addresses where no sshd listens


def _one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()  # progress lines of a launch come first
    assert lines[-1].startswith("pyku-launch: error: "), r.stderr
    assert sum("error" in ln for ln in lines) == 1, r.stderr
    return lines[-1]


@pytest.fixture
def keys(tmp_path):
    """A public key and a junk file where a private key or known_hosts is expected."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    (tmp_path / "junk").write_text("junk\n")
    return tmp_path


@pytest.mark.parametrize("key, file, says", [
    ("identity", "key.pub", "a public key, not the private key"),
    ("identity", "junk", "not a private key"),
    ("identity", "missing", "no such key file"),
    ("known_hosts", "junk", "not a known_hosts file"),
])
def test_unusable_key_file_is_one_line_exit_2(sshd, state_dir, keys, key, file, says):
    path = keys / file
    inv = ssh_inventory(keys / "hosts.toml", sshd, name="keyfile", host_extra={2: f'{key} = "{path}"'})
    for command in (["check"], []):
        line = _one_line_error(cli(*command, str(inv)), 2)
        assert f"{key} {path}: {says}" in line
    assert state.read("keyfile") is None and cluster_processes("keyfile") == []


def test_many_unreachable_hosts_are_grouped_by_cause(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="grouped", workers=(1,), extra_hosts=tuple(NOBODY))
    line = _one_line_error(cli("check", str(inv)), 1)
    assert (f"5 hosts: cannot connect over SSH: connection refused on port {sshd.port} "
            f"({NOBODY[0]}, {NOBODY[1]}, {NOBODY[2]} … {NOBODY[4]})") in line
    assert "Errno" not in line and "127.0.0.3" not in line

    # every host unreachable, the scheduler's too: `up` names them all, as `check` does
    text = inv.read_text().replace(f'address = "{sshd.hosts[0].address}"', 'address = "127.0.0.14"', 1)
    inv.write_text(text.replace(f'address = "{sshd.hosts[1].address}"', 'address = "127.0.0.15"'))
    line = _one_line_error(cli(str(inv)), 1)
    assert f"7 hosts: cannot connect over SSH: connection refused on port {sshd.port} " in line
    assert "127.0.0.14" in line and NOBODY[-1] in line
    assert state.read("grouped") is None
