"""Before a launch: is a cluster of that name recorded, and is it alive?

Running and answering: the launch converges it (a reconcile). A scheduler
that does not answer is not taken for dead on that alone (a busy scheduler
can be slow): its process is looked for on its host. Dead, or left
half-launched by a killed launch: it is stopped first, so a second cluster
never starts in the same run directories.
"""

from __future__ import annotations

from launcher.errors import LaunchError
from launcher.reach import tunnel
from launcher.remote import readiness
from launcher.remote.transport import StepHook
from launcher.sources import ssh
from launcher.sources.base import Context
from launcher.store import state
from launcher.store.records import ClusterRecord
from launcher.ui.progress import Reporter
from launcher.verbs.stop import stop_async


async def recorded_cluster(name: str, report: Reporter, on_step: StepHook | None) -> ClusterRecord | None:
    """The running cluster of this name, or None after cleaning up a dead one.

    A scheduler that does not answer is not taken for dead on that alone: a
    busy scheduler can be slow. Its process is looked for on its host; only
    if it is gone (or the record is of a launch that was killed half-way)
    is the old cluster stopped.
    """
    rec = state.read(name)  # CorruptState: refused, or a second cluster would start in the same directories
    if rec is None:
        return None
    if rec.running:
        if await _answers(rec):
            return rec
        if await _scheduler_process_alive(rec, on_step):
            raise LaunchError(f"cluster '{name}' is recorded and its scheduler process runs, but it does "
                              f"not answer at {rec.scheduler}: wait, or pyku-launch stop --name {name}")
        report.warn(f"cluster '{name}' was recorded but its scheduler is gone: cleaning up before launching")
    else:
        report.warn(f"cluster '{name}' was left half-launched (launcher pid {rec.launcher_pid}): "
                    f"cleaning up before launching")
    await stop_async(name, report=report, locked=True, on_step=on_step)
    return None


async def _answers(rec: ClusterRecord) -> bool:
    """Whether the recorded scheduler answers (through its host if not directly)."""
    try:
        async with tunnel.recorded_scheduler(rec) as address:
            return await readiness.scheduler_alive(address, rec.security())
    except LaunchError:
        return False


async def _scheduler_process_alive(rec: ClusterRecord, on_step: StepHook | None) -> bool:
    srec = rec.scheduler_host
    if srec is None:
        return False
    async with Context(name=rec.name, step_timeout=30, on_step=on_step) as ctx:
        await ctx.open([srec.spec])
        return (await ssh.SshHosts().alive(ctx, [srec]))[srec.token] is True
