"""Benchmark: the cost of shipping pyku — a launch with ``ship = ["pyku"]`` vs without.

Per repeat and in the same run, on this script's own sshd testbed
(scheduler 127.0.0.2, 1 worker on 127.0.0.3 and 1 on 127.0.0.4, TLS), one
launch as is and one with pyku shipped (packed here, sent with each of the
3 spawns, unpacked and fingerprinted on the host), each followed by a stop.
Also timed: packing alone (``launcher.ship.pack``). Target: the shipped
launch <= 1.5 x the plain one.

    python bench/bench_ship.py [--repeats 3] [--smoke]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import _util as u  # bench/ is the script's directory, so on sys.path


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat")
    args = u.smoke_defaults(ap, argv, repeats=1)
    figures = u.Figures("ship", ("launch",))
    if not u.ready():
        return 0
    import launcher
    from launcher.verbs import ship

    names = ["benchship"]

    def body(tb):
        with u.private_state("bench-ship-"), tempfile.TemporaryDirectory() as tmp:
            inv = u.write_inventory(Path(tmp) / "h.toml", tb, name=names[0], workers=(1, 2), nworkers=1)
            packs, plain, shipped = [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                [pkg] = ship.pack(["pyku"])
                packs.append(time.perf_counter() - t0)
                for times, extra in ((plain, ()), (shipped, ("pyku",))):
                    t0 = time.perf_counter()
                    launcher.launch(inv, ship=extra)
                    times.append(time.perf_counter() - t0)
                    launcher.stop(names[0], purge=True)
            ratio = u.median(shipped) / u.median(plain)
            print(f"pyku archive: {pkg.size / 1024:.0f} KiB (tar.gz of {pkg.root})")
            print(f"pack              {u.fmt_runs(packs)}  median {u.median(packs):.3f} s")
            print(f"launch            {u.fmt_runs(plain)}  median {u.median(plain):.2f} s")
            print(f"launch + ship     {u.fmt_runs(shipped)}  median {u.median(shipped):.2f} s")
            figures.line("launch", f"shipped / plain {ratio:.2f} x ({u.median(shipped) - u.median(plain):+.2f} s; "
                         f"median of {args.repeats}; target <= 1.5 x: {u.verdict(ratio <= 1.5)})")

    return u.run_on_testbed(names, body, figures, n_hosts=3, first=2)


if __name__ == "__main__":
    sys.exit(main())
