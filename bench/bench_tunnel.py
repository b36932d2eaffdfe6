"""Benchmark: a 100 MB result gathered directly vs through connect(tunnel=True).

A cluster is launched by ``launcher.launch`` on this script's own sshd
testbed (scheduler 127.0.0.2, 1 worker x 1 thread on 127.0.0.3, TLS). Per
repeat and in the same run, the same task (a fresh 100 MB ``bytes`` each
time, ``pure=False``) is computed and gathered by a Client connected
directly to the scheduler and by one connected through an asyncssh local
port forward to the scheduler's host (TLS inside SSH: the bytes are
encrypted twice). Also timed: opening the tunnel (SSH connect + forward +
Client handshake) vs a direct Client. Target: tunnelled gather <= 3 x direct.

    python bench/bench_tunnel.py [--repeats 3] [--mb 100] [--smoke]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import _util as u  # bench/ is the script's directory, so on sys.path


def _make(n: int) -> bytes:
    import os

    return os.urandom(n)


def _timed_gather(client, nbytes: int) -> float:
    fut = client.submit(_make, nbytes, pure=False)
    from distributed import wait

    wait(fut)  # the task has run: what is timed is the result's way back
    t0 = time.perf_counter()
    data = fut.result()
    dt = time.perf_counter() - t0
    assert len(data) == nbytes
    del fut, data
    return dt


def main(argv=None) -> int:
    ap = u.arguments(__doc__, smoke="1 repeat, a 10 MB result")
    ap.add_argument("--mb", type=int, default=100, help="size of the result in MB (default 100)")
    args = u.smoke_defaults(ap, argv, repeats=1, mb=10)
    figures = u.Figures("tunnel", ("gather",))
    if not u.ready():
        return 0
    import launcher

    nbytes = args.mb * 10**6
    names = ["benchtunnel"]

    def body(tb):
        with u.private_state("bench-tunnel-"), tempfile.TemporaryDirectory() as tmp:
            inv = u.write_inventory(Path(tmp) / "h.toml", tb, name=names[0], workers=(1,), nworkers=1,
                                    memory_limit="2GiB")
            launcher.launch(inv)
            try:
                open_direct, open_tunnel, direct, tunnelled = [], [], [], []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    with launcher.connect(names[0], tunnel=False) as c:
                        open_direct.append(time.perf_counter() - t0)
                        direct.append(_timed_gather(c, nbytes))
                    t0 = time.perf_counter()
                    with launcher.connect(names[0], tunnel=True) as c:
                        open_tunnel.append(time.perf_counter() - t0)
                        tunnelled.append(_timed_gather(c, nbytes))
                ratio = u.median(tunnelled) / u.median(direct)
                print(f"connect  direct   {u.fmt_runs(open_direct)}  median {u.median(open_direct):.2f} s")
                print(f"connect  tunnel   {u.fmt_runs(open_tunnel)}  median {u.median(open_tunnel):.2f} s")
                print(f"gather {args.mb} MB direct   {u.fmt_runs(direct)}  median {u.median(direct):.2f} s "
                      f"({args.mb / u.median(direct):.0f} MB/s)")
                print(f"gather {args.mb} MB tunnel   {u.fmt_runs(tunnelled)}  median {u.median(tunnelled):.2f} s "
                      f"({args.mb / u.median(tunnelled):.0f} MB/s)")
                figures.line("gather", f"tunnel / direct {ratio:.2f} x ({args.mb} MB: {u.median(tunnelled):.2f} vs "
                             f"{u.median(direct):.2f} s, median of {args.repeats}; target <= 3 x: "
                             f"{u.verdict(ratio <= 3)})")
            finally:
                launcher.stop(names[0], purge=True)

    return u.run_on_testbed(names, body, figures, n_hosts=2, first=2)


if __name__ == "__main__":
    sys.exit(main())
