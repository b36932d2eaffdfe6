"""The worker-source seam (launcher/sources/): the verbs reach workers through the source their record names.

A second source kind is registered here: SSH hosts under another name, a
real implementation (it stops and describes over the same agents), with no
inventory section of its own. A launched cluster's worker trees are then
recorded as that kind's: ``status`` and ``stop`` must go through it, and
the stop must still leave nothing behind.
"""

from __future__ import annotations

import launcher
from launcher.sources import registry
from launcher.sources.ssh import SshHosts
from launcher.store import state
from launcher.testing.clusters import cluster_processes, session_members, ssh_inventory


class Tagged(SshHosts):
    """SSH hosts as another kind of source; notes the trees it was asked to stop."""

    kind = "tagged"
    stopped: list[str] = []

    def members(self):
        return []  # no inventory section: it only runs trees a record gives it

    async def stop(self, ctx, recs, **kw):
        Tagged.stopped += [r.token for r in recs]
        return await super().stop(ctx, recs, **kw)

    async def describe(self, ctx, recs, live):
        return [dict(row, source=self.kind) for row in await super().describe(ctx, recs, live)]


def test_stop_and_status_go_through_the_source_a_tree_records(sshd, tmp_path, monkeypatch):
    monkeypatch.setitem(registry.KINDS, Tagged.kind, Tagged)
    monkeypatch.setattr(Tagged, "stopped", [])
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="tagged", workers=(1,), nworkers=1)
    rec = launcher.launch(inv)
    try:
        workers = [h for h in rec.hosts if h.role == "workers"]
        assert workers and all(h.source == "ssh" for h in rec.hosts)
        for h in workers:
            h.source = Tagged.kind
        state.write(rec)
        assert [h.source for h in state.read("tagged").hosts if h.role == "workers"] == ["tagged"]

        st = launcher.status("tagged")
        rows = [h for h in st["hosts"] if h["role"] == "workers"]
        assert st["state"] == "running" and rows and all(r.get("source") == "tagged" for r in rows), st
        assert all(r["live"] == r["expected"] == 1 for r in rows), st

        summary = launcher.stop("tagged")
    except BaseException:
        launcher.stop("tagged")
        raise
    assert Tagged.stopped == [h.token for h in workers]  # the scheduler's tree stayed with SSH hosts
    assert summary["stopped"] >= 2, summary
    assert session_members(rec) == [] and cluster_processes("tagged") == []
    assert state.read("tagged") is None
