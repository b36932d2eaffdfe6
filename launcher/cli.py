"""``pyku-launch``: the command line, a thin layer over :mod:`launcher.api`.

Exit codes: 0 ok, 1 runtime failure, 2 usage or inventory error, 3 preflight
refused, 130/143 interrupted (after rolling back).
"""

from __future__ import annotations

import json
import sys

import click

from . import api, state
from .errors import LaunchError
from .preflight import fmt_bytes
from .progress import Reporter


class _DefaultUp(click.Group):
    """``pyku-launch HOSTS.toml`` means ``pyku-launch up HOSTS.toml``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["up", *args]
        return super().parse_args(ctx, args)


def _fail(e: LaunchError) -> None:
    click.echo(f"pyku-launch: error: {e}", err=True)
    sys.exit(e.exit_code)


def _guard(fn):
    """Print our own errors as one line with their exit code, never a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except LaunchError as e:
            _fail(e)
        except KeyboardInterrupt:
            click.echo("pyku-launch: interrupted", err=True)
            sys.exit(130)
    return wrapper


@click.group(cls=_DefaultUp, invoke_without_command=True,
             epilog="Example: pyku-launch hosts/localhost.toml && pyku-launch status && pyku-launch stop")
@click.version_option(package_name="pyku-launch")
@click.pass_context
def main(ctx):
    """Launch a Dask cluster on the hosts of an inventory over SSH, and manage it.

    \b
    pyku-launch HOSTS.toml     start scheduler + workers, print address, exit
    pyku-launch check HOSTS    preflight only (versions, pyku build, memory, ports)
    pyku-launch status         workers per host, dashboard
    pyku-launch logs [HOST]    remote logs
    pyku-launch stop           stop everything and verify
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        names = state.known_names()
        click.echo(f"\nKnown clusters: {', '.join(names) if names else 'none'}")


@main.command(epilog="Example: pyku-launch up hosts/example.toml --timeout 300")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--timeout", type=float, default=None, help="Seconds to wait for all workers (default: [cluster] timeout, 120).")
@click.option("--allow-mismatch", is_flag=True, help="Launch even if versions differ (the table is shown as a warning).")
@click.option("--allow-partial", is_flag=True, help="Go on without hosts that fail; they are named.")
@click.option("--dry-run", is_flag=True, help="Print every remote command per host; touch nothing.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary or the error.")
@_guard
def up(inventory, timeout, allow_mismatch, allow_partial, dry_run, quiet):
    """Launch the cluster described by INVENTORY (a TOML hosts file)."""
    if dry_run:
        for line in api.dry_run(inventory):
            click.echo(line)
        return
    rec = api.launch(inventory, allow_mismatch=allow_mismatch, allow_partial=allow_partial,
                     timeout=timeout, reporter=Reporter(quiet=quiet))
    if rec.get("already_running"):
        click.echo(f"cluster '{rec['name']}' is already running at {rec['scheduler']}: nothing changed")
    _summary(rec)


def _summary(rec: dict) -> None:
    click.echo(f"cluster    {rec['name']}")
    click.echo(f"scheduler  {rec['scheduler']}")
    click.echo(f"dashboard  {rec['dashboard'] or 'disabled'}")
    for h in rec["hosts"]:
        if h["role"] == "workers":
            click.echo(f"  {h['address']:<24} {h['expected']:>3} workers x {fmt_bytes(h['memory_limit'])}")
    for addr, why in (rec.get("missing") or {}).items():
        click.echo(f"  {addr:<24} MISSING: {why}")
    click.echo(f"connect    python -c \"from launcher import connect; client = connect('{rec['name']}')\"")
    click.echo(f"stop       pyku-launch stop --name {rec['name']}")


@main.command(epilog="Example: pyku-launch check hosts/example.toml")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--allow-mismatch", is_flag=True, help="Report version differences without failing.")
@_guard
def check(inventory, allow_mismatch):
    """Validate INVENTORY and run the preflight on every host; start nothing."""
    probes, reference, table, _ = api.check(inventory, allow_mismatch=allow_mismatch)
    click.echo(f"client     python {reference['versions']['python']}, "
               f"pyku source {reference['fingerprints'].get('pyku')}")
    for p in probes:
        r = p.reply
        mem = f", {p.spec.nworkers} workers x {fmt_bytes(p.memory_limit)}" if p.role == "workers" else ""
        click.echo(f"{p.spec.address:<24} {p.role:<9} ok: {r['cpus']} CPUs, "
                   f"{fmt_bytes(r['mem_total'])} RAM, listen {r['listen']}{mem}")
        for w in p.warnings:
            click.echo(f"  warning: {w}")
    if table:
        click.echo(table)
    click.echo("preflight passed: a launch would go ahead")


@main.command(epilog="Example: pyku-launch status --json")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output with stable keys.")
@_guard
def status(name, as_json):
    """Show hosts, expected and live workers, memory limits and the dashboard."""
    st = api.status(name)
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    click.echo(f"cluster    {st['name']}: {st['state']}")
    if st["state"] in ("not launched", "corrupt"):
        if st.get("error"):
            click.echo(st["error"])
        return
    click.echo(f"scheduler  {st['scheduler']}")
    click.echo(f"dashboard  {st['dashboard'] or 'disabled'}")
    for h in st["hosts"]:
        if h["role"] == "workers":
            click.echo(f"  {h['address']:<24} {h['live']:>3}/{h['expected']:<3} workers  "
                       f"{fmt_bytes(h['memory_limit'])} each")
    for addr, why in st["missing"].items():
        click.echo(f"  {addr:<24} missing: {why}")
    if st["state"] == "down":
        click.echo("the scheduler does not answer: pyku-launch stop cleans up what is left")


@main.command(epilog="Example: pyku-launch stop --name pyku")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("-q", "--quiet", is_flag=True)
@_guard
def stop(name, quiet):
    """Stop every process of the cluster on every host, verify, forget it."""
    s = api.stop(name, reporter=Reporter(quiet=quiet))
    if s.get("seconds") is not None:
        click.echo(f"cluster '{s['name']}' stopped: {s['stopped']} processes ended "
                   f"({s['killed']} needed SIGKILL) in {s['seconds']:.2f} s; none left")
    for addr, why in s["unreachable"].items():
        click.echo(f"  {addr}: not reached ({why})")


@main.command(epilog="Example: pyku-launch logs 127.0.0.2 -n 50")
@click.argument("host", required=False)
@click.option("--name", default=None, help="Cluster name.")
@click.option("-n", "--lines", default=20, show_default=True, help="Lines per log file.")
@_guard
def logs(host, name, lines):
    """Print the remote scheduler and worker logs, each line prefixed with its host."""
    for addr, fname, line in api.logs(name, host, lines):
        click.echo(f"{addr} {fname}: {line}")


if __name__ == "__main__":
    main()
