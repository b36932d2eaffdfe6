"""The scheduler's Prometheus metrics through the dashboard's tunnel, and ``status --prometheus FILE``."""

from __future__ import annotations

import json
import urllib.request

import launcher
from launcher.reach import dashboard
from launcher.testing import missing
from launcher.testing.clusters import cli, ssh_inventory


def test_metrics_through_the_dashboard_tunnel_and_a_file_sd_target(sshd, tmp_path):
    try:
        import prometheus_client  # noqa: F401 - distributed serves /metrics only with it
    except ImportError:
        missing("prometheus_client is not installed (the test extra installs it)")
    name = "gauged"
    launcher.launch(ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1,), nworkers=1))
    target_file = tmp_path / "targets" / "pyku.json"
    target_file.parent.mkdir()
    try:
        r = cli("status", "--name", name, "--json", "--prometheus", str(target_file))
        assert r.returncode == 0, r.stdout + r.stderr
        groups = json.loads(target_file.read_text())
        [group] = groups
        assert group["labels"]["cluster"] == name and group["labels"]["__metrics_path__"] == "/metrics"
        [target] = group["targets"]
        assert target.startswith("127.0.0.1:")  # a TLS cluster's dashboard: the scheduler host's loopback
        assert json.loads(r.stdout)["prometheus"]["targets"] == groups
        assert "loopback" in r.stderr and "wrote" in r.stderr, r.stderr

        # The same tunnel as the dashboard's reaches the metrics.
        tunnel, url = dashboard.open_tunnel(name)
        try:
            with urllib.request.urlopen(url.replace("/status", "/metrics"), timeout=30) as page:
                text = page.read().decode()
        finally:
            tunnel.close()
        assert "dask_scheduler_workers" in text, text[:500]
    finally:
        launcher.stop(name)
    r = cli("status", "--name", name, "--prometheus", str(target_file))
    assert r.returncode == 7 and json.loads(target_file.read_text()) == []  # not running: Prometheus drops it
