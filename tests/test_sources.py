"""The worker-source seam (launcher/sources/): the verbs reach workers through the source their record names.

Second source kinds are registered here: SSH hosts under another name, real
implementations (they start, stop and describe over the same agents on the
real sshd hosts). One has no inventory section of its own: a launched
cluster's worker trees are recorded as its, and ``status`` and ``stop`` must
go through it. One does not wait for its workers (as a batch queue's): the
launch must report them pending and return, and they join afterwards.
Either way the stop must leave nothing behind.
"""

from __future__ import annotations

import io

import launcher
from launcher.sources import registry
from launcher.sources.ssh import SshHosts
from launcher.store import state
from launcher.testing.clusters import cluster_processes, session_members, slow_python, ssh_inventory, wait_until
from launcher.ui.progress import Reporter


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


class SchedulerOnly(SshHosts):
    """SSH hosts with no members: the scheduler's tree (always on an SSH host) still needs kind "ssh"."""

    def members(self):
        return []


class Queued(SshHosts):
    """The inventory's hosts, not waited for: the launch reports what is still pending and returns."""

    kind = "queued"
    wait = False

    async def describe(self, ctx, recs, live):
        rows = await super().describe(ctx, recs, live)
        return [dict(row, detail=f"pending: {row['live']} of {row['expected']} workers in")
                if row["live"] < row["expected"] else row for row in rows]


def test_a_source_that_does_not_wait_is_reported_pending_and_its_workers_join_later(sshd, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setattr(registry, "KINDS", {"ssh": SchedulerOnly, Queued.kind: Queued})
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="queued", workers=(1,), timeout=120,
                        host_extra={1: f'python = "{slow_python(tmp_path, 30)}"'})
    shown = io.StringIO()
    rec = launcher.launch(inv, reporter=Reporter(stream=shown))
    try:
        assert [h.source for h in rec.hosts] == ["ssh", "queued"]
        st = launcher.status("queued")  # the launch returned before its workers started
        assert st["state"] == "degraded", st
        assert [(h["live"], h["expected"]) for h in st["hosts"] if h["role"] == "workers"] == [(0, 2)], st
        assert "pending: 0 of 2 workers in" in shown.getvalue(), shown.getvalue()
        assert wait_until(lambda: launcher.status("queued")["state"] == "running", 120), launcher.status("queued")
    finally:
        launcher.stop("queued")
    assert session_members(rec) == [] and cluster_processes("queued") == []
    assert state.read("queued") is None
