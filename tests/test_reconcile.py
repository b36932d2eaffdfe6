"""A running cluster follows its edited inventory: repair, add, remove, change, refuse (real sshd)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import distributed

import launcher
from launcher import api
from launcher.store import state
from launcher.testing import ROOT
from launcher.testing.clusters import (cli, cluster_processes, session_members, slow_python, ssh_inventory,
                                       wait_until)


def _workers_of(rec, address):
    return [h for h in rec.hosts if h.role == "workers" and h.address == address]


def _pids(recs):
    return sorted(session_members(recs))


def _live(name):
    return {h["address"]: (h["live"], h["expected"]) for h in launcher.status(name)["hosts"] if h["role"] == "workers"}


def test_repair_after_kill_9_of_a_hosts_workers(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="repair")
    rec = launcher.launch(inv)
    try:
        sched = [h for h in rec.hosts if h.role == "scheduler"]
        keep = _pids(_workers_of(rec, "127.0.0.3")) + _pids(sched)
        for pid in _pids(_workers_of(rec, "127.0.0.4")):
            with contextlib.suppress(ProcessLookupError):  # a short-lived member may have ended
                os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: launcher.status("repair")["state"] == "degraded", 30)

        r = cli("--dry-run", str(inv))
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[1:] == ["  repair 127.0.0.4: 2 of 2 workers missing"]
        assert _live("repair")["127.0.0.4"] == (0, 2)  # --dry-run changed nothing

        r = cli(str(inv))
        assert r.returncode == 0, r.stderr
        assert "applied    repair 127.0.0.4: 2 of 2 workers missing" in r.stdout
        assert _live("repair") == {"127.0.0.3": (2, 2), "127.0.0.4": (2, 2)}
        after = state.read("repair")
        assert after.scheduler == rec.scheduler
        assert set(keep) <= set(_pids(after.hosts))  # scheduler and the healthy host untouched
        with launcher.connect("repair") as client:
            assert client.submit(sum, [1, 2]).result() == 3
        assert cli(str(inv)).stdout.count("already running") == 1  # converged: nothing more to do
    finally:
        launcher.stop("repair")
    assert cluster_processes("repair") == []


def test_add_then_remove_a_host_while_it_holds_results(sshd, state_dir, tmp_path):
    one = ssh_inventory(tmp_path / "one.toml", sshd, name="grow", workers=(1,))
    both = ssh_inventory(tmp_path / "both.toml", sshd, name="grow", workers=(1, 2))
    only4 = ssh_inventory(tmp_path / "only4.toml", sshd, name="grow", workers=(2,))
    rec = launcher.launch(one)
    try:
        assert api.dry_run(both)[1:] == ["  + 127.0.0.4: 2 workers"]
        grown = launcher.launch(both)
        assert grown.applied == ["+ 127.0.0.4: 2 workers"]
        assert _live("grow") == {"127.0.0.3": (2, 2), "127.0.0.4": (2, 2)}
        assert grown.scheduler == rec.scheduler

        with launcher.connect("grow") as client:
            on3 = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if "127.0.0.3" in a]
            futures = client.map(lambda i: i * i, range(20), workers=on3, allow_other_workers=False)
            distributed.wait(futures)
            assert {client.who_has(f)[f.key][0] for f in futures} <= set(on3)  # the results live on .3

            old3 = _workers_of(state.read("grow"), "127.0.0.3")
            shrunk = launcher.launch(only4)
            assert shrunk.applied == ["- 127.0.0.3: 2 workers retired"]
            # Restricted to .3's workers, a lost result could not be computed again (it would wait
            # for a worker forever): they are there because retire_workers moved them to .4 first.
            distributed.wait(futures, timeout=30)
            assert client.gather(futures) == [i * i for i in range(20)]
            assert {client.who_has(f)[f.key][0].split("://")[1].rsplit(":", 1)[0] for f in futures} == {"127.0.0.4"}
            assert _pids(old3) == []  # its processes are gone
        assert _live("grow") == {"127.0.0.4": (2, 2)}
        assert [h.address for h in state.read("grow").hosts] == ["127.0.0.2", "127.0.0.4"]
    finally:
        launcher.stop("grow")
    assert cluster_processes("grow") == []


def test_change_nworkers_replaces_that_hosts_workers(sshd, state_dir, tmp_path):
    two = ssh_inventory(tmp_path / "two.toml", sshd, name="resize", workers=(1, 2))
    one = ssh_inventory(tmp_path / "one.toml", sshd, name="resize", workers=(1, 2), host_extra={2: "nworkers = 1"})
    rec = launcher.launch(two)
    try:
        untouched = _pids(_workers_of(rec, "127.0.0.3"))
        r = cli("--dry-run", str(one))
        assert r.stdout.splitlines()[1:] == ["  ~ 127.0.0.4: nworkers 2 → 1"], r.stdout
        launcher.launch(one)
        assert _live("resize") == {"127.0.0.3": (2, 2), "127.0.0.4": (1, 1)}
        assert set(untouched) <= set(_pids(state.read("resize").hosts))
        assert _pids(_workers_of(rec, "127.0.0.4")) == []
    finally:
        launcher.stop("resize")


def test_a_port_change_is_refused_unless_recreate(sshd, state_dir, tmp_path, free_port):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="port", workers=(1,))
    rec = launcher.launch(inv)
    try:
        moved = tmp_path / "moved.toml"
        moved.write_text(inv.read_text().replace("port = 0\n", f"port = {free_port}\n", 1))
        r = cli(str(moved))
        assert r.returncode == 2, r.stderr
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
        assert "refuse cluster.port" in r.stderr and "--recreate" in r.stderr
        assert state.read("port").scheduler == rec.scheduler and _pids(rec.hosts) == _pids(state.read("port").hosts)

        with state.lock("port", "a test holding the lock"):  # a reconcile already running
            r = cli(str(inv))
        assert r.returncode == 1 and "busy" in r.stderr, r.stderr

        r = cli(str(moved), "--recreate")
        assert r.returncode == 0, r.stderr
        assert state.read("port").scheduler.endswith(f":{free_port}")
        assert _pids(rec.hosts) == []
    finally:
        launcher.stop("port")
    assert cluster_processes("port") == []


def test_worker_options_and_dask_config_reach_the_processes(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="opts", workers=(1,),
                        workers_extra='options = { resources = { GPU = 2 }, lifetime = "1h" }',
                        cluster_extra='dask_config = { distributed = { admin = '
                                      '{ large-graph-warning-threshold = "500MiB" } } }')
    dry = "\n".join(api.dry_run(inv))
    assert "--resources GPU=2 --lifetime 1h" in dry
    assert "DASK_DISTRIBUTED__ADMIN__LARGE_GRAPH_WARNING_THRESHOLD='500MiB'" in dry
    launcher.launch(inv)
    try:
        with launcher.connect("opts") as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            assert [w["resources"] for w in workers] == [{"GPU": 2}, {"GPU": 2}]

            def setting():
                import dask
                return dask.config.get("distributed.admin.large-graph-warning-threshold")
            assert set(client.run(setting).values()) == {"500MiB"}
            assert client.run_on_scheduler(setting) == "500MiB"
    finally:
        launcher.stop("opts")


def test_an_unknown_option_is_refused_with_the_accepted_ones(tmp_path, sshd):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="badopt", workers_extra="options = { nworkers = 4 }")
    r = cli(str(inv))
    assert r.returncode == 2
    assert r.stderr.strip().endswith('workers.options: unknown flag "nworkers" (accepted: resources, lifetime, '
                                     'lifetime-stagger, lifetime-restart, preload, preload-nanny, worker-class, '
                                     'nanny-port, worker-port, interface, contact-address)')
    assert r.stderr.count("\n") == 1


def test_restart_one_host_keeps_the_rest_and_the_results(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="restart")
    rec = launcher.launch(inv)
    try:
        with launcher.connect("restart") as client:
            future = client.submit(lambda: list(range(1000)))
            assert len(future.result()) == 1000
            r = cli("restart", "127.0.0.4", "--name", "restart")
            assert r.returncode == 0, r.stderr
            assert "applied    restart 127.0.0.4: 2 workers" in r.stdout
            assert future.result() == list(range(1000))
        after = state.read("restart")
        assert _pids(_workers_of(rec, "127.0.0.4")) == []  # the old workers are gone
        assert _pids(_workers_of(rec, "127.0.0.3")) == _pids(_workers_of(after, "127.0.0.3"))
        assert _live("restart") == {"127.0.0.3": (2, 2), "127.0.0.4": (2, 2)}
        r = cli("restart", "10.9.9.9", "--name", "restart")
        assert r.returncode == 2 and "has no worker host 10.9.9.9" in r.stderr
    finally:
        launcher.stop("restart")
    assert cluster_processes("restart") == []


def _on_host(name, address):
    return [p for p in cluster_processes(name) if f"--host {address}" in p]


def test_a_host_failing_during_a_reconcile_is_named_and_undone(sshd, state_dir, tmp_path):
    one = ssh_inventory(tmp_path / "one.toml", sshd, name="fails", workers=(1,))
    broken = f"{sshd.env_line()} && export DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=bogus"
    both = ssh_inventory(tmp_path / "both.toml", sshd, name="fails", workers=(1, 2),
                         host_extra={2: f"env = '{broken}'"})
    rec = launcher.launch(one)
    try:
        pids = _pids(rec.hosts)
        r = cli(str(both))
        assert r.returncode == 1, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert "127.0.0.4" in line and "exited" in line, line
        after = state.read("fails")
        assert [h.address for h in after.hosts] == ["127.0.0.2", "127.0.0.3"]  # no phantom host
        assert "127.0.0.4" in after.missing  # and the inventory's host is not lost either
        assert _pids(after.hosts) == pids and _on_host("fails", "127.0.0.4") == []
        assert _live("fails") == {"127.0.0.3": (2, 2)}
    finally:
        launcher.stop("fails")


def test_ctrl_c_during_a_reconcile_stops_only_what_it_started(sshd, state_dir, tmp_path):
    one = ssh_inventory(tmp_path / "one.toml", sshd, name="intr", workers=(1,))
    both = ssh_inventory(tmp_path / "both.toml", sshd, name="intr", workers=(1, 2),
                         host_extra={2: f'python = "{slow_python(tmp_path, 60)}"'})
    rec = launcher.launch(one)
    try:
        pids = _pids(rec.hosts)
        proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", str(both)], stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "workers" in line and "on 1 hosts" in line:  # the new host's workers are starting
                assert wait_until(lambda: _on_host("intr", "127.0.0.4"), 30)
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, "".join(seen) + err
        assert _on_host("intr", "127.0.0.4") == []
        after = state.read("intr")
        assert [h.address for h in after.hosts] == ["127.0.0.2", "127.0.0.3"]
        assert _pids(after.hosts) == pids and _live("intr") == {"127.0.0.3": (2, 2)}
    finally:
        launcher.stop("intr")
