"""What the CLI prints about a cluster: the launch summary and the status table.

Rich tables and styles on a terminal, plain aligned text in a pipe (CI
logs, ``| tee``), the same words in both.
"""

from __future__ import annotations

import sys

import click

from launcher.ui import tables
from launcher.reach.dashboard import reach as dashboard_reach
from launcher.store.records import ClusterRecord


def terminal():
    """A rich console on stdout if it is a terminal, else None (plain text)."""
    if not sys.stdout.isatty():
        return None
    from rich.console import Console

    return Console(highlight=False)


def _mem(n) -> str:
    return tables.fmt_bytes(n) if n else "-"


def _blank(console) -> None:
    if console is None:
        click.echo()
    else:
        console.print()


def _line(console, key: str, value: str, style: str = "") -> None:
    """``key        value``: the same words on a terminal (styled) and in a pipe."""
    if console is None:
        click.echo(f"{key:<10} {value}")
    else:
        from rich.text import Text

        console.print(Text.assemble((f"{key:<10} ", "bold"), (value, style)))


def print_summary(rec: ClusterRecord, console=None) -> None:
    """Scheduler, dashboard, hosts x workers x memory, and how to connect and stop."""
    if console is not None:  # apart from the progress above it
        console.print()
    if rec.applied:  # a running cluster, converged to the inventory
        for line in rec.applied:
            _line(console, "applied", line)
    if rec.already_running:
        msg = f"cluster '{rec.name}' is already running at {rec.scheduler}: nothing changed"
        if console is None:
            click.echo(msg)
        else:
            console.print(msg, style="yellow")
    _line(console, "cluster", rec.name, "bold")
    _line(console, "scheduler", rec.scheduler, "cyan")
    _dashboard_line(console, dashboard_reach(rec))
    _shipped_lines(console, rec.shipped)
    rows, styles, workers, memory = [], {}, 0, 0
    for h in rec.hosts:
        if h.role == "workers":
            n, each = h.expected, h.memory_limit or 0
            rows.append([h.address, "workers", str(n), str(h.spec.nthreads), _mem(each), _mem(n * each), "ok"])
            workers, memory = workers + n, memory + n * each
        else:
            rows.append([h.address, h.role, "-", "-", "-", "-", "ok"])
    for label, why in rec.missing.items():
        styles[len(rows)] = "red"
        rows.append([label, "workers", "0", "-", "-", "-", f"MISSING: {why}"])
    rows.append(["total", "", str(workers), "", "", _mem(memory), ""])
    styles[len(rows) - 1] = "bold"
    _blank(console)
    tables.show(console, ["host", "role", "workers", "threads", "memory/worker", "memory", "status"], rows,
           right={2, 3, 4, 5}, styles=styles)
    _blank(console)
    name = rec.name
    _line(console, "connect", f"from launcher import connect; client = connect({name!r})")
    _env_line(console, name)
    _line(console, "stop", f"pyku-launch stop --name {name}")


def _env_line(console, name: str) -> None:
    """How code that knows only dask (``Client(address)``, pyku's CLI) gets in: launcher/dask_env.py."""
    _line(console, "shell", f'eval "$(pyku-launch env --name {name})"   # then Client(address) and Client() connect')


def _shipped_lines(console, shipped: dict) -> None:
    for name, fp in shipped.items():
        _line(console, "shipped", f"{name} (source fingerprint {fp}), first on the hosts' PYTHONPATH")


def _dashboard_line(console, text: str) -> None:
    url = text.startswith("http")
    _line(console, "dashboard", text, f"underline blue link {text}" if url else "")


def _usage_lines(console, st: dict) -> None:
    """Who is connected since when, and the tasks in flight: is the cluster in use?"""
    import time

    if st.get("clients") is None:
        return
    for c in st["clients"]:
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(c["since"]))
        _line(console, "client", f"{c['who']} since {since}" + (f" from {c['address']}" if c.get("address") else "")
              + f", {c['tasks']} task{'s' if c['tasks'] != 1 else ''}")
    if not st["clients"]:
        _line(console, "clients", "none connected")
    tasks = st.get("tasks") or {}
    _line(console, "tasks", f"{tasks.get('processing', 0)} processing, {tasks.get('queued', 0)} queued")


def prometheus_line(p: dict, name: str | None) -> str:
    """What ``status --prometheus FILE`` says it wrote (on stderr: stdout may be JSON)."""
    if not p["targets"]:
        return f"wrote {p['file']}: no target (cluster {name or ''} does not run)"
    target = p["targets"][0]["targets"][0]
    line = f"wrote {p['file']}: target {target}/metrics for Prometheus file_sd_configs"
    if p["loopback_only"]:
        line += (" (on the scheduler host's loopback: a Prometheus there reaches it; elsewhere use "
                 "dashboard = \"open\" or pyku-launch dashboard's tunnel)")
    return line


def print_status(st: dict) -> None:
    """The status of a cluster (``api.status``) as lines and a table of hosts."""
    console = terminal()
    colour = {"running": "green", "degraded": "yellow"}.get(st["state"], "red")
    _line(console, "cluster", f"{st['name']}: {st['state']}" if st["name"] else "none launched", colour)
    if st["scheduler"] is None:  # not launched, corrupt, a launch killed half-way or under way
        if st.get("error") or st.get("detail"):
            click.echo(st.get("error") or st["detail"])
        if st["state"] == "stopped":  # by itself (idle_timeout, max_lifetime)
            click.echo(f"launch {st.get('inventory') or 'its inventory'} again to start it, "
                       f"or pyku-launch stop --name {st['name']} to forget it")
        return
    _line(console, "scheduler", st["scheduler"], "cyan")
    _dashboard_line(console, st.get("dashboard_reach") or st["dashboard"] or "disabled")
    _shipped_lines(console, st.get("shipped") or {})
    if st["state"] != "down":
        _env_line(console, st["name"])
    for sh in st.get("shares", []):
        _line(console, "share", f"{sh['label']}: {sh['state']}, expires {sh['expires']}"
                                + (f", revoked {sh['revoked']}" if sh.get("revoked") else ""))
    _usage_lines(console, st)
    alive = st["state"] != "down"
    rows, styles = [], {}
    for h in st["hosts"]:
        if h["role"] == "workers":
            ok = h["live"] >= h["expected"]
            if not ok:
                styles[len(rows)] = "yellow" if alive else "red"
            # A source's rows may name the host otherwise (a pool's job) and say more (its state).
            status = "ok" if ok else ("down" if not alive else f"{h['expected'] - h['live']} missing")
            rows.append([h.get("host", h["address"]), "workers", f"{h['live']}/{h['expected']}",
                         _mem(h["memory_limit"]), _mem(h["expected"] * (h["memory_limit"] or 0)),
                         f"{status}: {h['detail']}" if h.get("detail") else status])
        else:
            rows.append([h["address"], h["role"], "-", "-", "-", "ok" if alive else "down"])
            if not alive:
                styles[len(rows) - 1] = "red"
    for addr, why in st["missing"].items():
        styles[len(rows)] = "red"
        rows.append([addr, "workers", "0", "-", "-", f"MISSING: {why}"])
    _blank(console)
    tables.show(console, ["host", "role", "workers", "memory/worker", "memory", "status"], rows,
           right={2, 3, 4}, styles=styles)
    if st["state"] == "down":
        click.echo("the scheduler does not answer: pyku-launch stop cleans up what is left")
