"""A worker host cut off the network (hosts in network namespaces, link set down)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import textwrap
import time

import pytest

import launcher
from launcher.store import state
from launcher.testing import missing, netns
from launcher.testing.clusters import session_members, wait_until


@pytest.fixture
def lab():
    reason = netns.netns_available()
    if reason:
        missing(f"no network namespaces for the cut-link test hosts: {reason}")
    from launcher.testing import sshd as sshd_mod

    if sshd_mod.sshd_available():
        missing(f"cannot start the real OpenSSH test hosts: {sshd_mod.sshd_available()}")
    lab = netns.NetnsLab(2)
    try:
        tb = sshd_mod.start_testbed(addresses=lab.hosts)
        try:
            yield lab, tb
        finally:
            tb.close()
    finally:
        lab.close()




def test_cut_off_host(lab, state_dir, tmp_path):
    lab, tb = lab
    inv = tmp_path / "hosts.toml"
    inv.write_text(textwrap.dedent(f"""\
        [cluster]
        name = "cut"
        env = '{tb.env_line()}'
        python = "{tb.python()}"
        port = 0
        dashboard_port = 0
        death_timeout = 10

        [ssh]
        user = "{tb.user}"
        port = {tb.port}
        identity = "{tb.identity}"
        known_hosts = "{tb.known_hosts}"
        config = "{tb.ssh_config}"
        connect_timeout = 3

        [scheduler]
        address = "{lab.client}"
        transport = "local"
        # dask's own knob: forget a silent worker after 5 s (default 5 minutes)
        env = 'export DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL=5s'

        [workers]
        nworkers = 2
        memory_limit = "1GiB"

        [[host]]
        address = "{lab.hosts[0]}"

        [[host]]
        address = "{lab.hosts[1]}"
        """))
    rec = launcher.launch(inv)
    cut_rec = [h for h in rec.hosts if h.address == lab.hosts[1]]
    try:
        with launcher.connect("cut") as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 4
            lab.cut(1)
            t0 = time.monotonic()
            # the cluster keeps computing on the host that is still there
            futures = client.map(lambda x: x + 1, range(40), pure=False)
            assert client.gather(futures) == list(range(1, 41))
            compute_s = time.monotonic() - t0
        assert wait_until(lambda: {h["address"]: h["live"] for h in launcher.status("cut")["hosts"]
                              if h["role"] == "workers"} == {lab.hosts[0]: 2, lab.hosts[1]: 0}, 30)
        assert launcher.status("cut")["state"] == "degraded"
        t1 = time.monotonic()
        summary = launcher.stop("cut")
        stop_s = time.monotonic() - t1
        assert stop_s < 3 + 15, stop_s
        assert lab.hosts[1] in summary["unreachable"]
        assert not state.state_path("cut").exists()
        # the cut host's workers exit by themselves: the scheduler is gone
        assert wait_until(lambda: not session_members(cut_rec), 120), "workers of the cut host lived on"
        print(f"computing after the cut: {compute_s:.1f} s; stop: {stop_s:.1f} s")
    finally:
        left = session_members(rec)
        if left:  # never leave the namespaced processes behind, even on failure
            for pid in left:
                os.kill(pid, signal.SIGKILL)
        # stop could not reach the cut host, so its run files are still there
        # (and named by stop): remove them as that host's admin would
        for h in cut_rec:
            for path in h.remove:
                shutil.rmtree(os.path.expanduser(path.replace("{uid}", str(os.getuid()))), ignore_errors=True)
            for path in h.prune:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.expanduser(path.replace("{uid}", str(os.getuid()))))
    assert session_members(rec) == []
