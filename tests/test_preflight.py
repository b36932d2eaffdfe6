"""Preflight on the real sshd hosts: a host that differs is refused before anything starts."""

from __future__ import annotations

import shutil

import pytest

import launcher
from launcher import PreflightError
from launcher.store import state
from launcher.testing.clusters import ROOT, cli, cluster_processes, session_members, ssh_inventory

OTHER_TOOLZ = "0.12.1"


@pytest.fixture
def second_env(sshd, tmp_path):
    """The env line of a host that has another release of toolz installed.

    Another release is stood in for by its metadata alone (a ``.dist-info``
    put first on that host's ``PYTHONPATH``): that is all the preflight reads
    (``importlib.metadata``), the real toolz module still imports, and no
    package registry is needed.
    """
    import toolz

    assert toolz.__version__ != OTHER_TOOLZ
    info = tmp_path / "other-site" / f"toolz-{OTHER_TOOLZ}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: toolz\nVersion: {OTHER_TOOLZ}\n")
    return f'{sshd.env_line()} && export PYTHONPATH={info.parent}:$PYTHONPATH'


def _nothing_started(name: str) -> None:
    assert state.read(name) is None
    assert cluster_processes(name) == []


def test_other_toolz_on_one_host_is_refused(sshd, state_dir, tmp_path, second_env):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="toolz", host_extra={2: f"env = '{second_env}'"})
    r = cli(str(inv))
    assert r.returncode == 3, r.stderr
    assert "127.0.0.4" in r.stderr and "toolz" in r.stderr and OTHER_TOOLZ in r.stderr
    row = next(ln for ln in r.stderr.splitlines() if ln.startswith("127.0.0.4"))
    assert OTHER_TOOLZ in row
    assert next(ln for ln in r.stderr.splitlines() if ln.startswith("127.0.0.3")).split()[-1] == "ok"
    assert "Traceback" not in r.stderr
    _nothing_started("toolz")


def test_allow_mismatch_launches_with_the_table_as_warning(sshd, state_dir, tmp_path, second_env):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="toolzok", workers=(2,),
                        host_extra={2: f"env = '{second_env}'"})
    r = cli(str(inv), "--allow-mismatch")
    try:
        assert r.returncode == 0, r.stderr
        assert "warning: versions differ" in r.stderr and OTHER_TOOLZ in r.stderr
        assert launcher.status("toolzok")["state"] == "running"
    finally:
        rec = state.read("toolzok")
        launcher.stop("toolzok")
    assert session_members(rec) == []


def test_pyku_source_differing_by_one_line_is_refused(sshd, state_dir, tmp_path):
    alt = tmp_path / "alt"
    shutil.copytree(ROOT / "pyku", alt / "pyku", ignore=shutil.ignore_patterns("__pycache__"))
    init = alt / "pyku" / "__init__.py"
    init.write_text(init.read_text() + "# a feature-branch edit\n")
    env = f'{sshd.env_line()} && export PYTHONPATH={alt}:$PYTHONPATH'
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="fp", host_extra={1: f"env = '{env}'"})
    with pytest.raises(PreflightError) as e:
        launcher.launch(inv)
    msg = str(e.value)
    assert "127.0.0.3" in msg and "pyku source" in msg
    assert "127.0.0.4" not in msg.splitlines()[0]
    _nothing_started("fp")


def test_failing_env_names_host_and_shell_error(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="badenv",
                        host_extra={1: 'env = "source /nonexistent/environment.src"'})
    r = cli(str(inv))
    assert r.returncode == 3
    line = r.stderr.strip().splitlines()[-1]
    assert "127.0.0.3" in line and "/nonexistent/environment.src" in line and "No such file" in line
    _nothing_started("badenv")


def test_python_not_found(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="nopy", host_extra={2: 'python = "/opt/none/python9"'})
    r = cli(str(inv))
    assert r.returncode == 3
    assert "127.0.0.4" in r.stderr and "/opt/none/python9" in r.stderr
    _nothing_started("nopy")


def test_memory_oversubscription_refused_with_figures(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="oom", workers=(1,),
                        host_extra={1: 'memory_limit = "400GiB"'})
    with pytest.raises(PreflightError) as e:
        launcher.launch(inv)
    assert "127.0.0.3" in str(e.value) and "2 workers x 400.0 GiB = 800.0 GiB" in str(e.value)
    _nothing_started("oom")


def test_auto_memory_limit_on_running_workers(sshd, state_dir, tmp_path):
    mem_total = next(int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal"))
    expected = (mem_total - max(2 * 2**30, mem_total // 20)) // 2
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="auto", workers=(1,),
                        host_extra={1: 'memory_limit = "auto"'})
    rec = launcher.launch(inv)
    try:
        with launcher.connect("auto") as client:
            limits = {w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
        assert limits == {expected}
    finally:
        launcher.stop("auto")
    assert session_members(rec) == []


def test_check_on_matching_inventory(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="chk")
    r = cli("check", str(inv))
    assert r.returncode == 0, r.stderr
    for addr in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        assert any(ln.startswith(addr) for ln in r.stdout.splitlines()), r.stdout
    assert "preflight passed" in r.stdout
    _nothing_started("chk")
