"""Post-mortem logs: ``stop`` leaves the scheduler's and workers' logs on their hosts, ``logs`` reads
them for a cluster no longer running, ``stop --purge`` and the next launch remove them."""

from __future__ import annotations

import os

import launcher
from launcher.testing.clusters import cli, cluster_processes, session_members, ssh_inventory


def _files(name):
    root = os.path.expanduser(f"~/.pyku-launch/{name}")
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_logs_of_a_stopped_cluster_are_read_then_purged(sshd, tmp_path):
    name = "morgue"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    r = cli("stop", "--name", name)
    assert r.returncode == 0 and f"pyku-launch logs --name {name}" in r.stdout, r.stdout + r.stderr
    assert session_members(rec) == [] and cluster_processes(name) == []
    host = sshd.hosts[1].address
    assert _files(name) == [f"{sshd.hosts[0].address}.scheduler/scheduler.log", f"{host}.workers/workers.log"]

    out = cli("logs", "--name", name, "-n", "200")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(ln.startswith(f"{host}") and "workers.log:" in ln and "Starting Worker" in ln for ln in lines), lines
    assert any("scheduler.log:" in ln and "Scheduler at" in ln for ln in lines), lines

    # The next launch starts from empty run directories: the old logs go with it.
    log = os.path.expanduser(f"~/.pyku-launch/{name}/{sshd.hosts[0].address}.scheduler/scheduler.log")
    with open(log, "a") as f:
        f.write("the last cluster's line\n")
    rec = launcher.launch(inv)
    try:
        assert "the last cluster's line" not in open(log).read()
    finally:
        launcher.stop(name)
    r = cli("stop", "--name", name, "--purge")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _files(name) == [] and not os.path.exists(os.path.expanduser(f"~/.pyku-launch/{name}"))
    gone = cli("logs", "--name", name)
    assert gone.returncode == 1 and "is not launched" in gone.stderr, gone.stderr


def test_a_log_past_its_bound_is_rotated_while_its_writer_goes_on(tmp_path):
    """logcap (the preload of every scheduler and nanny) with a real writer holding the log open for appending."""
    import subprocess
    import sys
    import time

    from launcher.remote import logcap

    log = tmp_path / "workers.log"
    code = ("import sys, time\n"
            "for i in range(400):\n"
            "    print(f'line {i} ' + 'x' * 100, flush=True); time.sleep(0.005)\n")
    with open(log, "ab") as out:
        writer = subprocess.Popen([sys.executable, "-c", code], stdout=out)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)  # the watcher's view: the same file, appended to
        rotated = 0
        try:
            while writer.poll() is None:
                rotated += logcap.rotate(fd, 8192)
                time.sleep(0.05)
        finally:
            os.close(fd)
            writer.wait()
    assert rotated >= 2
    assert os.path.getsize(log) < 8192 + 40 * 110 and os.path.getsize(str(log) + ".1") <= 8192 + 40 * 110
    kept = (tmp_path / "workers.log.1").read_bytes() + log.read_bytes()
    assert kept.splitlines()[-1].startswith(b"line 399 ")  # the writer went on into the truncated file
    assert b"\0" not in kept  # appending: no hole where the truncated part was
