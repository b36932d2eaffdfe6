"""``pyku-launch``: the command line, a thin layer over :mod:`launcher.api`.

Progress goes to stderr (:mod:`launcher.progress`), results to stdout: rich
tables on a terminal, plain aligned text otherwise, so scripts and CI logs
never see control characters.

Exit codes: 0 ok, 1 runtime failure, 2 usage or inventory error, 3 preflight
refused, 130/143/129 interrupted by Ctrl-C/SIGTERM/SIGHUP (after rolling back).
"""

from __future__ import annotations

import functools
import json
import os
import sys

import click

from launcher import api
from launcher.store import state
from launcher.ui import summary, tables
from launcher.verbs import shared_dirs
from launcher.errors import LaunchError
from launcher.ui.progress import Reporter
from launcher.verbs import preflight
from launcher.verbs.status import EXIT_CODES
from launcher.config.validate import Invalid, seconds

_ORDER = ("launch", "check", "status", "logs", "restart", "stop", "env", "share", "revoke", "dashboard")


class _DefaultLaunch(click.Group):
    """``pyku-launch [OPTIONS] HOSTS.toml`` means ``pyku-launch launch [OPTIONS] HOSTS.toml``.

    ``up``, the verb's earlier name, still works (not listed).
    """

    def parse_args(self, ctx, args):
        if args and args[0] == "up":
            args = ["launch", *args[1:]]
        elif args and args[0] not in self.commands and args[0] not in ("--help", "--version"):
            args = ["launch", *args]
        return super().parse_args(ctx, args)

    def list_commands(self, ctx):
        return sorted(self.commands, key=lambda c: (_ORDER.index(c) if c in _ORDER else len(_ORDER), c))


def _seconds(value: float | None) -> float | None:
    """A positive, finite number of seconds (click's float takes -1, 0 and nan)."""
    if value is None:
        return None
    try:
        return seconds(value)
    except Invalid as e:
        raise click.BadParameter(str(e)) from None


def _fail(e: LaunchError) -> None:
    _say(f"pyku-launch: {click.style('error:', fg='red', bold=True)} {e}")
    sys.exit(e.exit_code)


def _say(line: str) -> None:
    """A line on stderr, if anyone still reads it."""
    try:
        click.echo(line, err=True)
    except OSError:
        pass


def _guard(fn):
    """Print our own errors as one line with their exit code, never a traceback.

    Output nobody reads any more (``pyku-launch HOSTS | head -1``) ends the
    printing, not the command: what it did stands, and its exit code says so.
    """

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except LaunchError as e:
            _fail(e)
        except KeyboardInterrupt:
            _say("pyku-launch: interrupted")
            sys.exit(130)
        except BrokenPipeError:
            _silence()
    return wrapper


def _silence() -> None:
    """Point stdout and stderr at /dev/null, so that the interpreter's final
    flush of a closed pipe does not print a traceback or change the exit code."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass
    os.close(devnull)


def _open_standard_fds() -> None:
    """Give a closed stdin, stdout or stderr (``>&-``) /dev/null.

    Otherwise the next file or socket opened (an SSH connection) would get
    that descriptor, and anything printed would go into it.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, mode, closefd=False))


@click.group(cls=_DefaultLaunch, invoke_without_command=True, epilog="""\b
Examples:
  pyku-launch hosts/localhost.toml      # a small cluster on this machine, no SSH
  pyku-launch check hosts/example.toml  # preflight only
  pyku-launch hosts/example.toml        # launch; prints the address and dashboard
  pyku-launch status                    # or: pyku-launch status --json
  pyku-launch stop

\b
Exit codes: 0 ok, 1 runtime failure (rolled back), 2 usage or inventory
error, 3 preflight refused, 130/143/129 interrupted (rolled back).
The cluster name defaults to $PYKU_CLUSTER, else the only one known.
Shell completion: eval "$(_PYKU_LAUNCH_COMPLETE=bash_source pyku-launch)"
""")
@click.version_option(package_name="pyku-launch")
@click.pass_context
def main(ctx):
    """Launch a Dask cluster on the hosts of an inventory over SSH, and manage it.

    \b
    pyku-launch HOSTS.toml     start scheduler + workers, print address, exit
    pyku-launch check HOSTS    preflight only (versions, pyku build, memory, ports)
    pyku-launch status         workers per host, dashboard
    pyku-launch logs [HOST]    remote logs
    pyku-launch restart [HOST] new worker processes (retired first)
    pyku-launch stop           stop everything and verify
    eval "$(pyku-launch env)"  then Client(address) and Client() connect
    """
    _open_standard_fds()
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        names = state.known_names()
        click.echo(f"\nKnown clusters: {', '.join(names) if names else 'none'}")


@main.command(short_help="Launch: preflight, start scheduler and workers, print the summary.",
              epilog="""\b
Examples:
  pyku-launch hosts/example.toml                 # "launch" is the default command
  pyku-launch launch hosts/example.toml --timeout 300
  pyku-launch --dry-run hosts/example.toml       # every remote command, per host
""")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--timeout", type=float, default=None, callback=lambda ctx, param, value: _seconds(value),
              help="Seconds to wait for all workers (default: [cluster] timeout, 120).")
@click.option("--allow-mismatch", is_flag=True, help="Launch even if versions differ (the table is shown as a warning).")
@click.option("--allow-partial", is_flag=True, help="Go on without hosts that fail; they are named.")
@click.option("--dry-run", is_flag=True, help="Print every remote command per host (on a running cluster: "
                                               "the plan that would converge it); touch nothing.")
@click.option("--recreate", is_flag=True, help="If a change needs a new scheduler: stop the cluster and launch anew.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the final summary or the error.")
@click.option("--ship", multiple=True, metavar="PACKAGE",
              help="Send this machine's source of PACKAGE (e.g. pyku) to every host, first on PYTHONPATH; "
                   "adds to [cluster] ship. Repeatable.")
@_guard
def launch(inventory, timeout, allow_mismatch, allow_partial, dry_run, recreate, quiet, ship):
    """Launch the cluster described by INVENTORY (a TOML hosts file).

    Connects to every host, runs the preflight, starts the scheduler and the
    workers detached (they outlive this command), waits until the scheduler
    has every worker, records the cluster and prints its summary.

    On a running cluster of that name: converges it to INVENTORY (repair
    missing workers, add, remove or change hosts) without restarting the
    scheduler or healthy workers.
    """
    if dry_run:
        for line in api.dry_run(inventory):
            click.echo(line)
        return
    with Reporter(quiet=quiet) as reporter:
        rec = api.launch(inventory, allow_mismatch=allow_mismatch, allow_partial=allow_partial,
                         timeout=timeout, reporter=reporter, ship=ship, recreate=recreate)
    summary.print_summary(rec, summary.terminal())


@main.command(short_help="Preflight only: versions, pyku build, memory, ports; starts nothing.",
              epilog="Example: pyku-launch check hosts/example.toml")
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--allow-mismatch", is_flag=True, help="Report version differences without failing.")
@_guard
def check(inventory, allow_mismatch):
    """Validate INVENTORY and run the preflight on every host; start nothing."""
    result = api.check(inventory, allow_mismatch=allow_mismatch)
    reference = result.reference
    click.echo(f"client     python {reference['versions']['python']}, "
               f"pyku: {preflight.shown(reference, 'pyku source') or 'missing'}")
    for p in result.probes:
        r = p.reply
        mem = f", {p.spec.nworkers} workers x {tables.fmt_bytes(p.memory_limit)}" if p.role == "workers" else ""
        click.echo(f"{p.spec.address:<24} {p.role:<9} ok: {r['cpus']} CPUs, "
                   f"{tables.fmt_bytes(r['mem_total'])} RAM, listen {r['listen']}{mem}")
        click.echo(f"{'':<24} {'':<9} pyku: {preflight.shown(r, 'pyku source') or 'missing'}")
        for line in shared_dirs.free_lines(p):
            click.echo(f"  {line}")
        for w in p.warnings:
            click.echo(f"  warning: {w}")
    if result.table:
        click.echo(result.table)
    click.echo("preflight passed: a launch would go ahead")


def _stable(st: dict) -> dict:
    """Every host entry with the same keys, so scripts need no role check."""
    for h in st["hosts"]:
        h.setdefault("expected", 0)
        h.setdefault("live", 0)
        h.setdefault("memory_limit", None)
    return st


@main.command(short_help="Hosts, live/expected workers, memory, dashboard (--json).",
              epilog="""\b
Examples:
  pyku-launch status
  pyku-launch status --name pyku --json | jq '.hosts[] | [.address, .live, .expected]'
""")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--json", "as_json", is_flag=True,
              help="Machine-readable: name, scheduler, dashboard, state, "
                   "hosts[{address, role, expected, live, memory_limit}], missing, "
                   "clients[{who, since, address, tasks}], tasks{processing, queued}; stopped{reason, at}.")
@click.option("--prometheus", "prometheus", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also write the scheduler's /metrics as a Prometheus file_sd target file (none if not running).")
@_guard
def status(name, as_json, prometheus):
    """Show hosts, expected and live workers, memory limits and the dashboard.

    The scheduler itself is asked which workers it has. The exit code is the
    state's: 0 running, 4 degraded (workers missing), 5 launching, 6 down
    (the scheduler does not answer, or a launch was killed half-way: stop
    cleans up), 7 not launched, 1 corrupt state; 2 a usage error. With
    --json the status is printed as JSON in every case, errors included.
    """
    try:
        st = _stable(api.status(name, prometheus=prometheus))
    except LaunchError as e:
        if not as_json:
            raise
        click.echo(json.dumps({"name": name, "state": "error", "error": str(e), "scheduler": None,
                               "dashboard": None, "hosts": [], "missing": {}}, indent=1))
        _fail(e)
    if as_json:
        click.echo(json.dumps(st, indent=1))
    else:
        summary.print_status(st)
    if prometheus is not None:
        _say(summary.prometheus_line(st["prometheus"], st["name"]))
    sys.exit(EXIT_CODES[st["state"]])


@main.command(short_help="Stop every process on every host, verify, forget the cluster.",
              epilog="""\b
Examples:
  pyku-launch stop
  pyku-launch stop --name pyku
  pyku-launch stop --inventory hosts/example.toml   # state lost or corrupt: sweep its hosts
""")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--inventory", type=click.Path(dir_okay=False), default=None,
              help="Sweep every host of this inventory for its cluster's processes (no state needed).")
@click.option("--purge", is_flag=True, help="Remove the logs on the hosts too (also of a cluster already stopped).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the result or the error.")
@_guard
def stop(name, inventory, purge, quiet):
    """Stop every process of the cluster on every host, verify, forget it.

    Every host at once, the scheduler's too; its processes are found by the
    launch's token and checked gone (SIGKILL if one outlives SIGTERM), run
    files and the local state are removed; the logs stay on the hosts (pyku-launch logs reads them) until the next
    launch or --purge. Stopping twice is not an error. A state file
    that cannot be read is kept and the stop refused (exit 1); --inventory
    then finds the cluster's processes on every host by the cluster's name.
    """
    with Reporter(quiet=quiet) as reporter:
        s = api.stop(name, inventory=inventory, reporter=reporter, purge=purge)
    if s.get("stopped_itself"):
        click.echo(f"cluster '{s['name']}' had stopped itself ({s['stopped_itself']['reason']}, at "
                   f"{s['stopped_itself']['at']}); {s['stopped']} processes were left to end, run files removed")
    elif s.get("seconds") is not None:
        click.echo(f"cluster '{s['name']}' stopped: {s['stopped']} processes ended "
                   f"({s['killed']} needed SIGKILL) in {s['seconds']:.2f} s; none left")
    if s.get("seconds") is not None and not purge:
        click.echo(f"logs kept on the hosts: pyku-launch logs --name {s['name']} (stop --purge removes them)")
    for addr, why in s["unreachable"].items():
        click.echo(f"  {addr}: not reached ({why})")


@main.command(short_help="Restart the workers of some or all hosts, retiring them first.",
              epilog="""\b
Examples:
  pyku-launch restart                 # every host's workers
  pyku-launch restart 127.0.0.3       # one host
""")
@click.argument("hosts", nargs=-1)
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for the new workers (default: [cluster] timeout).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the result or the error.")
@_guard
def restart(hosts, name, timeout, quiet):
    """Restart the worker processes of HOSTS (addresses or labels; default: all).

    Their workers are retired through the scheduler (results move to the
    other workers), stopped, the hosts preflighted again and new workers
    started. The scheduler and connected clients keep running.
    """
    with Reporter(quiet=quiet) as reporter:
        rec = api.restart(list(hosts) or None, name, timeout=timeout, reporter=reporter)
    summary.print_summary(rec, summary.terminal())


@main.command(short_help="Remote scheduler and worker logs, each line prefixed by its host.",
              epilog="""\b
Examples:
  pyku-launch logs                  # every host
  pyku-launch logs 127.0.0.2 -n 50  # one host, 50 lines per log file
""")
@click.argument("host", required=False)
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("-n", "--lines", type=click.IntRange(min=1), default=20, show_default=True,
              help="Lines per log file.")
@_guard
def logs(host, name, lines):
    """Print the remote scheduler and worker logs, each line prefixed with its host.

    HOST is an address (or label) of the inventory; without it, every host.
    """
    out = api.logs(name, host, lines)
    width = max((len(a) for a, _, _ in out), default=0)
    for addr, fname, line in out:
        click.echo(f"{addr:<{width}} {fname}: {line}")


@main.command(short_help="Write a connection file for a colleague (a new certificate).",
              epilog="""\b
Examples:
  pyku-launch share --for alice -o alice.json          # valid 7 days
  pyku-launch share --name pyku --for ci --days 1 -o ci.json
  # alice: from launcher import connect; client = connect("alice.json")
""")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--for", "label", default="shared", show_default=True,
              help="Who it is for: names the certificate; pyku-launch revoke takes it.")
@click.option("--days", type=float, default=7, show_default=True, help="Days the certificate is valid.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write (0600).")
@_guard
def share(name, label, days, output):
    """Write a connection file: scheduler, dashboard, the cluster's CA and a new
    client certificate and key for LABEL, signed by the cluster's CA.

    Whoever holds the file can run code on the workers: send it like a
    password. connect("FILE") (or PYKU_CLUSTER=FILE) uses it with no state.
    """
    conn = api.share(name, label, output, days)
    click.echo(f"wrote {output} for '{conn.label}' (certificate {conn.serial}, expires {conn.expires}); "
               f"revoke with: pyku-launch revoke {conn.label} --name {conn.name}")


@main.command(short_help="Shell exports so that Client(address) and Client() reach the cluster (eval).",
              epilog="""\b
Examples:
  eval "$(pyku-launch env)"                   # then: Client('tls://...'), Client(), pyku's CLI
  eval "$(pyku-launch env --file alice.json)" # a connection file from pyku-launch share
  pyku-launch env --dask-config ~/.config/dask/pyku-launch.yaml   # for a JupyterLab server
  eval "$(pyku-launch env --unset)"           # undo
""")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--file", "path", default=None, type=click.Path(dir_okay=False),
              help="A connection file (pyku-launch share) instead of a cluster of yours.")
@click.option("--address", default=None,
              help="The scheduler as reached from here, if not at its own address: a port you forward "
                   "(ssh -L), e.g. tls://127.0.0.1:8786.")
@click.option("--dask-config", "config", default=None, type=click.Path(dir_okay=False),
              help="Write the settings to this dask YAML file instead (0600), for processes not started "
                   "from a shell: ~/.config/dask/NAME.yaml is read by every dask process of yours.")
@click.option("--unset", "undo", is_flag=True, help="Print the line that unsets the variables.")
@_guard
def env(name, path, address, config, undo):
    """Print export lines of dask's own settings for the cluster: its address
    (DASK_SCHEDULER_ADDRESS) and TLS files of a client certificate (0600), so
    that Client(address), Client() and any program started from this shell
    connect with TLS. Use as: eval "$(pyku-launch env)".
    """
    from launcher.reach import dask_env

    if undo:
        click.echo(dask_env.unset())
        return
    if name is not None and path is not None:
        raise click.UsageError("give --name or --file, not both")
    target = dask_env.target(name, path, address)
    if config is None:
        click.echo(dask_env.exports(target))
        return
    written = dask_env.write_dask_config(target, config)
    click.echo(f"wrote {written}: dask processes reading it connect Client() to {target.what} at "
               f"{target.scheduler}; remove the file to undo")


@main.command(short_help="Refuse new connections with a shared certificate.",
              epilog="Example: pyku-launch revoke alice")
@click.argument("label")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@_guard
def revoke(label, name):
    """Revoke every certificate shared for LABEL: the scheduler and every worker
    refuse new connections with it (connections already open stay)."""
    r = api.revoke(name, label)
    click.echo(f"revoked '{label}' on cluster '{r['name']}' ({len(r['serials'])} certificate(s)) at {r['revoked']}")


@main.command(short_help="Open the dashboard through an SSH tunnel; print its local URL.",
              epilog="Example: pyku-launch dashboard --port 8787")
@click.option("--name", default=None, help="Cluster name (default: $PYKU_CLUSTER or the only one).")
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="Local port (default: any free one).")
@_guard
def dashboard(name, port):
    """Forward a local port to the dashboard on the scheduler's host (bound to
    its loopback on a TLS cluster) and stay in the foreground until Ctrl-C."""
    from launcher.reach import dashboard as _dashboard
    from launcher.reach.client import resolve_name

    tunnel, url = _dashboard.open_tunnel(resolve_name(name), port)
    if tunnel is None:
        click.echo(f"dashboard: {url} (local, no tunnel needed)")
        return
    click.echo(f"dashboard: {url}  (tunnel to {tunnel.spec.address}; Ctrl-C to close)")
    click.echo(f"metrics:   {url.rsplit('/status', 1)[0]}/metrics  (Prometheus; prometheus_client on that host)")
    sys.stdout.flush()
    _dashboard.hold(tunnel)
    click.echo("dashboard tunnel closed")


if __name__ == "__main__":
    main(prog_name="pyku-launch")
