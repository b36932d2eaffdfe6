"""Experiment (not a target): what does starting the workers together with the scheduler save?

With a fixed scheduler port (the inventory's usual ``port = 8786``) the
scheduler's address is known once preflight has found the address it will
listen on, so the workers' spawn step need not wait for the scheduler's
(distributed's workers retry connecting until the scheduler is up).  This
script measures that, without touching launcher/: it launches scheduler +
1 host x ``--workers`` workers on its own sshd testbed, with a fixed free
port, alternately sequentially (scheduler, then workers) and overlapped
(the scheduler's spawn and the workers' spawns concurrently).  Launcher code
that is sequential gets ``_Launch.go`` replaced, in this process only, by an
overlapping version; launcher code that overlaps already (``_Launch._start``)
gets ``_start`` replaced by the sequential order.  Every check stays: preflight
first, readiness from the scheduler, the scheduler's own address compared
with the predicted one, stop verified.

    python bench/experiment_overlap.py [--repeats 3] [--workers 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _util as u  # noqa: E402


def overlapped_go():
    """A ``_Launch.go`` that spawns the workers while the scheduler starts (fixed port only)."""
    from launcher import commands, state
    from launcher.errors import LaunchError
    from launcher.start import _client_tls, _rollback
    from launcher.transport import close_all

    async def go(self) -> dict:
        t0 = time.perf_counter()
        try:
            hosts = await self._connect()
            probes, material = await self._preflight(hosts)
            predicted = f"{self.inv.protocol}://{commands.host_port(probes[0].listen, self.inv.port)}"
            sched = asyncio.ensure_future(self._scheduler(probes[0], material))
            try:
                await self._workers(probes[1:], predicted, material)
            finally:
                address, dashboard = await sched
            if address != predicted:
                raise LaunchError(f"scheduler at {address}, not at the predicted {predicted}")
            self._save("running", scheduler=address, dashboard=dashboard, started=time.time(),
                       launch_seconds=round(time.perf_counter() - t0, 3),
                       tls=_client_tls(material) if material else None)
            return state.read(self.inv.name)
        except BaseException:
            if not self.records or await _rollback(self.conns, self.records, self.report,
                                                   self.inv.step_timeout):
                state.remove(self.inv.name)
            raise
        finally:
            await close_all(self.conns)

    return go


def sequential_start():
    """For launcher code that already overlaps (``_Launch._start``): the sequential order, for comparison."""
    async def _start(self, probes, material):
        sprobe = probes[0]
        port = self.inv.port or sprobe.reply.get("free_port")
        address, dashboard = await self._scheduler(sprobe, material, port)
        await self._workers(probes[1:], address, material)
        return address, dashboard

    return _start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=30)
    args = ap.parse_args(argv)
    why = u.sshd_available()
    if why:
        print(f"cannot run: {why}")
        return 1
    print(u.machine_line())
    import launcher
    from launcher.start import _Launch

    if hasattr(_Launch, "_start"):  # the launcher overlaps already: compare with the sequential order
        attr, original = "_start", _Launch._start
        variants = {"sequential": sequential_start(), "overlapped": original}
    else:
        attr, original = "go", _Launch.go
        variants = {"sequential": original, "overlapped": overlapped_go()}
    print(f"launcher {'overlaps already (_Launch._start)' if attr == '_start' else 'is sequential'}: "
          f"comparing sequential and overlapped, {args.workers} workers, fixed scheduler port")
    rows = {"sequential": [], "overlapped": []}
    names, crashed = [], False
    with u.private_state("bench-overlap-") as tmp:
        tb = u.start_testbed(n_hosts=2)
        try:
            for r in range(args.repeats):
                for mode in ("sequential", "overlapped") if r % 2 == 0 else ("overlapped", "sequential"):
                    name = f"bo{os.getpid()}r{r}{len(names)}"
                    names.append(name)
                    inv = u.write_inventory(tmp / f"{name}.toml", tb, name=name, workers=(1,),
                                            nworkers=args.workers)
                    port = u.free_port(tb.hosts[0].address)
                    inv.write_text(inv.read_text().replace("port = 0\n", f"port = {port}\n", 1))
                    setattr(_Launch, attr, variants[mode])
                    try:
                        t0 = time.perf_counter()
                        rec = launcher.launch(inv)
                        t = time.perf_counter() - t0
                    except Exception:
                        traceback.print_exc()
                        print(f"  repeat {r + 1} {mode}: FAILED")
                        continue
                    finally:
                        setattr(_Launch, attr, original)
                    launcher.stop(name)
                    left = u.session_members(rec) + u.cluster_processes(name)
                    rows[mode].append(t)
                    print(f"  repeat {r + 1} {mode:10s}: launch {t:5.2f} s (scheduler {rec['scheduler']}), "
                          f"left after stop {len(left)}", flush=True)
        except BaseException:
            crashed = True
            traceback.print_exc()
        finally:
            setattr(_Launch, attr, original)
            for name in names:
                try:
                    launcher.stop(name)
                except Exception:
                    pass
            tb.close()
    if rows["sequential"] and rows["overlapped"]:
        a, b = u.median(rows["sequential"]), u.median(rows["overlapped"])
        print(f"\n1 host x {args.workers} workers, fixed port: sequential {a:.2f} s (runs {u.fmt_runs(rows['sequential'])}), "
              f"workers spawned with the scheduler {b:.2f} s (runs {u.fmt_runs(rows['overlapped'])}): "
              f"saves {a - b:.2f} s ({1 - b / a:.0%})")
    u.final_check(names=names, markers=[f"bo{os.getpid()}"])
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
