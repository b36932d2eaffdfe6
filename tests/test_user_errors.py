"""Mistakes a first-time user makes: each is one line naming what to fix, the right exit code,
no traceback, nothing started."""

from __future__ import annotations

import subprocess

import pytest

from launcher.store import state
from launcher.store.records import ClusterRecord
from launcher.testing.clusters import ROOT, cli, cluster_processes, ssh_inventory

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


@pytest.mark.parametrize("args, says", [
    (["--timeout", "-1"], "Invalid value for '--timeout': must be a positive number of seconds, got -1.0"),
    (["--timeout", "0"], "Invalid value for '--timeout': must be a positive number of seconds, got 0.0"),
    (["--timeout", "nan"], "Invalid value for '--timeout': must be a positive number of seconds, got nan"),
])
def test_bad_timeout_is_a_usage_error_before_anything_starts(sshd, state_dir, tmp_path, args, says):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="badtimeout")
    r = cli(str(inv), *args)
    assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "connect" not in r.stderr  # refused before the first step
    assert state.read("badtimeout") is None and cluster_processes("badtimeout") == []


def test_bad_timeout_from_python_is_an_inventory_error(state_dir, tmp_path):
    import launcher
    from launcher import InventoryError

    inv = ROOT / "hosts" / "localhost.toml"
    with pytest.raises(InventoryError, match="timeout: must be a positive number of seconds, got nan"):
        launcher.launch(inv, timeout=float("nan"))


@pytest.mark.parametrize("lines", ["0", "-3"])
def test_logs_needs_a_positive_line_count(state_dir, lines):
    r = cli("logs", "--name", "any", "-n", lines)
    assert r.returncode == 2 and "Invalid value for '-n' / '--lines'" in r.stderr, r.stderr


@pytest.mark.parametrize("command", [["status"], ["stop"], ["logs"]])
def test_an_empty_name_is_refused_not_taken_for_the_only_cluster(state_dir, command):
    state.write(ClusterRecord(name="onlyone", phase="running", launcher_pid=1, inventory="/x/hosts.toml",
                              inventory_sha256="", protocol="tls"))
    line = _one_line_error(cli(*command, "--name", ""), 2)
    assert "cluster name is empty" in line and "onlyone" not in line


def test_an_address_too_long_for_a_directory_name_is_refused(tmp_path):
    from launcher.config.inventory import load_inventory
    from launcher.errors import InventoryError

    path = tmp_path / "hosts.toml"
    path.write_text(f'[scheduler]\naddress = "h"\n[[host]]\naddress = "{"a" * 250}"\n')
    with pytest.raises(InventoryError) as e:
        load_inventory(path)
    assert str(e.value) == (f"{path}: host[1].address: must be at most 200 characters, got 250 (it names run"
                            " directories, and file names stop at 255 bytes: use a shorter ~/.ssh/config alias)")
    path.write_text(f'[scheduler]\naddress = "h"\n[[host]]\naddress = "{"a" * 200}"\nport = 2222\n'
                    f'[[host]]\naddress = "{"a" * 200}"\nport = 2223\n')
    labels = [h.label for h in load_inventory(path).hosts]
    assert all(len(f"{label}.scheduler".encode()) <= 255 for label in labels)


@pytest.mark.parametrize("key", ["port", "dashboard_port"])
def test_a_port_in_use_suggests_any_free_port(sshd, state_dir, tmp_path, key):
    import socket

    held = socket.socket()
    held.bind((sshd.hosts[0].address, 0))  # as a Jupyter LocalCluster holds 8787
    held.listen()
    try:
        port = held.getsockname()[1]
        inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="portclash")
        inv.write_text(inv.read_text().replace(f"\n{key} = 0\n", f"\n{key} = {port}\n", 1))
        line = _one_line_error(cli("check", str(inv)), 3)
    finally:
        held.close()
    assert f"port {port} is in use on {sshd.hosts[0].address} (set {key} = 0 under [cluster]" in line
