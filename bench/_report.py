"""What every bench script prints and parses, without importing the launcher (not a benchmark itself).

Numbers (medians, runs, verdicts), the machine line, the common arguments
(``--repeats`` and ``--smoke``) and the figure lines.  A figure line is the
one line per figure that README.md and bench/README.md quote::

    figure ship/launch: shipped / plain 1.07 x (+0.12 s; median of 3; target <= 1.5 x: PASS)

``--smoke`` runs a bench's smallest meaningful configuration (real sshd and
workers where the bench uses them) through the same code, so it prints the
same figure lines, only from fewer and smaller runs; tests/test_bench_smoke.py
runs every bench that way, so a bench that breaks fails CI.
"""

from __future__ import annotations

import argparse
import os
import statistics


def median(xs):
    return statistics.median(xs)


def fmt_runs(xs, unit="s"):
    return " ".join(f"{x:.2f}" for x in xs) + (f" {unit}" if unit else "")


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def machine_line() -> str:
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    load = os.getloadavg()
    return (f"machine: {os.cpu_count()} CPUs, {mem / 2**30:.0f} GiB RAM, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (shared with other work: noisy)")


def arguments(doc: str, smoke: str) -> argparse.ArgumentParser:
    """The parser every bench starts from: its docstring's first line, --repeats and --smoke.

    ``smoke`` says what ``--smoke`` runs (the help text); the script applies
    it with :func:`smoke_defaults` after parsing.
    """
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs of each configuration (default 3)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"the smallest meaningful run, for CI (tests/test_bench_smoke.py): {smoke}")
    return ap


def smoke_defaults(ap: argparse.ArgumentParser, argv, **smaller) -> argparse.Namespace:
    """Parse ``argv``; with --smoke, ``smaller`` replaces the defaults (options given explicitly still win)."""
    args = ap.parse_args(argv)
    if args.smoke:
        ap.set_defaults(**smaller)
        args = ap.parse_args(argv)
        print(f"--smoke: {', '.join(f'{k}={v}' for k, v in smaller.items())}", flush=True)
    return args


class Figures:
    """The figure lines of one bench: ``figure <bench>/<key>: <text>``, each once.

    ``keys`` are the figures the bench promises; :meth:`exit_code` fails a
    run that printed fewer (a crash half-way, a section skipped), so the
    smoke test notices a figure that silently went missing.
    """

    def __init__(self, bench: str, keys):
        self.bench, self.keys, self.printed = bench, tuple(keys), []

    def line(self, key: str, text: str) -> None:
        if key not in self.keys:
            raise KeyError(f"figure {key!r} is not one of {self.bench}'s {self.keys}")
        self.printed.append(key)
        print(f"figure {self.bench}/{key}: {text}", flush=True)

    def exit_code(self, crashed: bool = False) -> int:
        """0 if the run did not crash and printed every promised figure; else 1, saying which are missing."""
        missing = [k for k in self.keys if k not in self.printed]
        if missing:
            print(f"figures missing: {', '.join(f'{self.bench}/{k}' for k in missing)}", flush=True)
        return 1 if crashed or missing else 0
