"""Reaching a cluster through SSH: a scheduler behind a "firewall", and the closed dashboard."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest
from test_netns import lab  # noqa: F401  (the namespaced test hosts)

import launcher
from launcher.remote import commands
from launcher.config.inventory import load_inventory
from launcher.testing import ROOT
from launcher.testing.clusters import session_members, ssh_inventory
from launcher.reach.tunnel import answers


def _tunnel_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("pyku-tunnel")]


def test_a_scheduler_reachable_only_from_its_host_is_tunnelled(lab, state_dir, tmp_path, capsys):  # noqa: F811
    """The scheduler and its workers listen on the loopback of a host in its own network
    namespace: from here nothing reaches them but SSH to that host's address."""
    lab, tb = lab
    host = lab.hosts[0]
    listen = 'listen = "127.0.0.1"'
    inv = ssh_inventory(tmp_path / "hosts.toml", tb, name="behind", workers=(0,), scheduler=0,
                        scheduler_extra=listen, host_extra={0: listen})
    rec = launcher.launch(inv)
    try:
        sched_host, port = commands.scheduler_host_port(rec.scheduler)
        assert sched_host == "127.0.0.1"
        assert not answers("127.0.0.1", port, 1) and not answers(host, port, 1)  # not from here
        # the launch saw its workers arrive, and status asks, through the scheduler's host
        assert launcher.status("behind")["state"] == "running"
        with launcher.connect("behind", tunnel=True) as client:
            assert client.scheduler.address.startswith("tls://127.0.0.1:")
            assert client.scheduler.address != rec.scheduler  # the tunnel's local end
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
            assert client.submit(lambda x: x + 1, 41).result() == 42
            assert _tunnel_threads()
        assert _tunnel_threads() == []  # closed with the client

        capsys.readouterr()
        with launcher.connect("behind") as client:  # no answer from here: tunnelled by itself
            assert sum(client.gather(client.map(lambda x: 2 * x, range(10)))) == 90
        assert re.search(rf"{re.escape(rec.scheduler)} does not answer from here: tunnelling through "
                         rf"{re.escape(host)} over SSH", capsys.readouterr().err)
        assert _tunnel_threads() == []

        with pytest.raises(launcher.LaunchError, match="does not answer"):
            launcher.connect("behind", tunnel=False, timeout=3)
    finally:
        launcher.stop("behind")
    assert session_members(rec) == []


def test_tunnel_to_an_unknown_host_key_is_refused(lab, state_dir, tmp_path):  # noqa: F811
    from launcher.reach.tunnel import Tunnel

    lab, tb = lab
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = tmp_path / "h.toml"
    inv.write_text(f'[ssh]\nuser = "{tb.user}"\nport = {tb.port}\nidentity = "{tb.identity}"\n'
                   f'known_hosts = "{empty}"\n[scheduler]\naddress = "{lab.hosts[0]}"\n'
                   f'[[host]]\naddress = "{lab.hosts[0]}"\n')
    spec = load_inventory(inv).scheduler
    with pytest.raises(launcher.LaunchError, match="host key"):
        Tunnel(spec, "127.0.0.1", 22).start(20)
    assert _tunnel_threads() == []


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as r:
        return r.status, r.read().decode(errors="replace")


def test_dashboard_is_closed_and_served_through_the_tunnel(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="dash", workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    try:
        assert rec.dashboard.startswith("http://127.0.0.1:")
        port = int(rec.dashboard.rsplit(":", 1)[1].split("/")[0])
        # the scheduler's own address and the other hosts': nothing answers on the dashboard's port
        for h in sshd.hosts:
            assert not answers(h.address, port, 1), h.address
        st = launcher.status("dash")
        assert st["dashboard_reach"] == f"on {sshd.hosts[0].address}'s loopback only: pyku-launch dashboard --name dash"

        proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "dashboard", "--name", "dash"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            line = proc.stdout.readline()
            m = re.match(r"dashboard: (http://127\.0\.0\.1:(\d+)/status) ", line)
            assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
            url, local = m[1], int(m[2])
            assert local != port
            status, body = _get(url)
            assert status == 200 and "Dask" in body
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "dashboard tunnel closed" in out
        assert not answers("127.0.0.1", local, 1)  # the tunnel is gone with the command
    finally:
        launcher.stop("dash")
    assert session_members(rec) == []


def test_dashboard_open_restores_the_old_binding_with_a_warning(sshd, tmp_path):
    closed = ssh_inventory(tmp_path / "c.toml", sshd, name="c")
    opened = ssh_inventory(tmp_path / "o.toml", sshd, name="o", cluster_extra='dashboard = "open"')
    argv = commands.scheduler_argv(load_inventory(closed), "127.0.0.2")
    assert argv[argv.index("--dashboard-address") + 1] == "127.0.0.1:0"
    argv = commands.scheduler_argv(load_inventory(opened), "127.0.0.2")
    assert argv[argv.index("--dashboard-address") + 1] == "127.0.0.2:0"
    # hosts/localhost.toml: loopback anyway, unchanged
    local = load_inventory(os.path.join(ROOT, "hosts", "localhost.toml"))
    argv = commands.scheduler_argv(local, "127.0.0.1")
    assert argv[argv.index("--dashboard-address") + 1] == "127.0.0.1:8787"

    from launcher.testing.clusters import cli
    r = cli("launch", str(closed), "--dry-run")  # what a launch would run says so too
    assert r.returncode == 0 and "--dashboard-address 127.0.0.1:0" in r.stdout


def test_dashboard_open_warns_at_launch(sshd, state_dir, tmp_path):
    from launcher.ui.progress import Reporter

    warnings = []

    class Collect(Reporter):
        def warn(self, text):
            warnings.append(text)

    inv = ssh_inventory(tmp_path / "o.toml", sshd, name="opendash", workers=(1,), nworkers=1,
                        cluster_extra='dashboard = "open"')
    rec = launcher.launch(inv, reporter=Collect(quiet=True))
    try:
        assert any('dashboard = "open"' in w and "logs" in w for w in warnings), warnings
        assert rec.dashboard.startswith(f"http://{sshd.hosts[0].address}:")
        status, _ = _get(rec.dashboard)
        assert status == 200
    finally:
        launcher.stop("opendash")
