"""Exactly what runs on each host: run directories and process command lines.

Everything here is pure (no I/O), so ``--dry-run`` shows the very commands a
launch would run, and tests can read them.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from launcher.config import options
from launcher.security import tls
from launcher.config.inventory import HostSpec, Inventory
from launcher.remote.leader import LEADER
from launcher.remote.transport import agent_command, python_of

RUN_ROOT = "~/.pyku-launch"
#: Default spill space, on the host's local disk: ``$TMPDIR`` (node-local
#: scratch on HPC nodes) or /tmp, as the host's agent finds it.
SPILL_ROOT = "{tmpdir}/pyku-launch-{uid}"
REVOCATION_PRELOAD = "pyku_revocation.py"  # launcher/revocation.py, in every TLS run directory
REVOKED_FILE = "revoked.txt"
SHARED_DIRS_VAR = "PYKU_SHARED_DIRS"  # read by pyku.compute (pyku/shared.py)
USAGE_PRELOAD = "pyku_usage.py"  # launcher/remote/usage.py, on every scheduler: who uses it (status)
LIFETIME_PRELOAD = "pyku_lifetime.py"  # launcher/remote/lifetime.py, with idle_timeout or max_lifetime
KEPT_FILES = ["*.log", "*.log.1"]  # what stop and a leader leave of a run directory: the logs
LOGCAP_PRELOAD = "pyku_logcap.py"  # launcher/remote/logcap.py: every log rotated past LOG_MAX_BYTES
RELAY_PRELOAD = "pyku_relay.py"  # launcher/remote/relay.py, on every scheduler: relays a stop to the nannies
TREESTOP_PRELOAD = "pyku_treestop.py"  # launcher/remote/treestop.py (+ agent.py), on every SSH worker tree's nannies
LOG_MAX_BYTES = 64 * 2**20


def _preload_source(module: str) -> str:
    return (Path(__file__).parent / f"{module}.py").read_text()


AGENT_COPY = "pyku_agent.py"  # the agent's source, written by the agent itself (its op_stop, for treestop.py)


def relays_stop(inv: Inventory) -> bool:
    """Whether a worker tree's nannies can stop the tree for the scheduler (launcher/remote/relay.py).

    Not on a self-stopping cluster: there the tree's leader is the nanny's
    parent, which the nanny cannot outlive, so its host's stop script ends it.
    """
    return not self_stopping(inv)


def revocation_files(revoked: str = "") -> dict[str, str]:
    """The run-directory files of the revocation check (launcher/security/revocation.py) and its list."""
    source = (Path(__file__).parents[1] / "security" / "revocation.py").read_text()
    return {REVOCATION_PRELOAD: source, REVOKED_FILE: revoked}


def self_stopping(inv: Inventory) -> bool:
    """Whether the cluster stops by itself (``idle_timeout``, ``max_lifetime``): its trees clean up after themselves."""
    return bool(inv.idle_timeout or inv.max_lifetime)


def self_cleaning(inv: Inventory, spec: HostSpec, role: str) -> dict:
    """The payload keys that make a tree's leader remove its files when the tree ends by itself."""
    if not self_stopping(inv):
        return {}
    plan = {"rundir": "{rundir}", "keep": KEPT_FILES, "prune": [f"{RUN_ROOT}/{inv.name}", RUN_ROOT],
            "spill": "{local_directory}" if role == "workers" and not spec.local_directory else None}
    return {"leader": LEADER, "env": {"PYKU_LAUNCH_CLEANUP": json.dumps(plan)}}


def _with(payload: dict, extra: dict) -> dict:
    """``payload`` with ``extra``'s keys, its ``env`` merged."""
    return {**payload, **extra, "env": {**payload["env"], **extra.get("env", {})}}


def home_of(rundir: str, resolved: str | None) -> str | None:
    """The home directory a host resolved ``rundir`` (``~/...``) against, from the result; None if
    that cannot be told (then ``stop`` asks the host's agent to resolve the tree's paths)."""
    if not resolved or not rundir.startswith("~/") or not resolved.endswith(rundir[1:]):
        return None
    home = resolved[:len(resolved) - len(rundir) + 1]
    return home if home.startswith("/") else None


def run_dir(name: str, spec: HostSpec, role: str) -> str:
    """Per cluster, per host and per role: home may be one NFS share for all hosts.

    Names and labels never meet in one path component (``{name}/{label}``):
    ``advq`` + ``w-a`` and ``advq-w`` + ``a`` would otherwise share a directory.
    """
    return f"{RUN_ROOT}/{name}/{spec.label}.{role}"


def local_directory(name: str, spec: HostSpec) -> str:
    """Worker spill space: local disk by default, never the (shared) home.

    Resolved on the host by its agent, once for the workers' ``--local-directory``
    and their ``DASK_TEMPORARY_DIRECTORY`` alike: ``~`` and a relative path
    are read against the home directory.
    """
    return spec.local_directory or f"{SPILL_ROOT}/{name}/{spec.label}"


def host_port(host: str, port: int | str) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def process_env(inv: Inventory) -> dict[str, str]:
    env = {
        # One forkserver per host pays the import of distributed once, not per worker.
        "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD": "forkserver",
        "PYTHONUNBUFFERED": "1",
        "PYKU_LOG_MAX_BYTES": str(LOG_MAX_BYTES),  # launcher/remote/logcap.py
    }
    if inv.protocol == "tls":
        env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
        env["PYKU_REVOKED_FILE"] = f"{{rundir}}/{REVOKED_FILE}"  # launcher/revocation.py
    env.update(options.config_env(inv.dask_config))
    return env


def scheduler_argv(inv: Inventory, listen: str, port: int | None = None) -> list[str]:
    spec = inv.scheduler
    argv = [python_of(spec), "-c", SCHEDULER_MAIN,
            "--host", listen, "--port", str(inv.port if port is None else port), "--protocol", inv.protocol,
            "--scheduler-file", "{rundir}/scheduler.json"]
    argv += ["--dashboard-address", host_port(dashboard_host(inv, listen), inv.dashboard_port)]
    if inv.protocol == "tls":
        argv += tls.cli_args() + ["--preload", f"{{rundir}}/{REVOCATION_PRELOAD}"]
    argv += ["--preload", f"{{rundir}}/{USAGE_PRELOAD}", "--preload", f"{{rundir}}/{LOGCAP_PRELOAD}",
             "--preload", f"{{rundir}}/{RELAY_PRELOAD}"]
    if self_stopping(inv):
        argv += ["--preload", f"{{rundir}}/{LIFETIME_PRELOAD}"]
    return argv + options.argv(inv.scheduler_options)


def dashboard_host(inv: Inventory, listen: str) -> str:
    """Where the dashboard binds: the scheduler host's loopback on a TLS cluster
    (it is plain HTTP without login), unless ``[cluster] dashboard = "open"``."""
    if inv.protocol == "tls" and inv.dashboard != "open":
        return "::1" if ":" in listen else "127.0.0.1"
    return listen


# distributed's nannies fork their workers from a forkserver that preloads
# these (distributed.utils.get_mp_context: "distributed", then its required
# and optional packages that import). tests/test_remote_commands.py checks the list
# against the installed distributed; a missing one only costs speed.
FORKSERVER_PRELOAD = ["distributed", "dask", "msgpack", "cloudpickle", "tornado", "toolz",
                      "numpy", "pandas", "lz4",
                      # and what every worker imports as it starts (its /metrics and health routes,
                      # even without a dashboard): ~25 ms per worker otherwise, after the fork
                      "distributed.http.worker.prometheus.core", "distributed.http.health",
                      "distributed.http.statics"]
#: What a host of one worker preloads: what that worker needs to start. The
#: rest (pandas alone is ~0.5 CPU-s) is paid by a task that uses it, if any:
#: with one worker there is nothing to share it with.
ONE_WORKER_PRELOAD = ["distributed"]

# The end of the scheduler's and every nanny's process: run ``main`` (a
# distributed CLI's), then exit without the interpreter's teardown of every
# module (~0.1 CPU-s per process, at every stop, on the critical path of a
# stop: the scheduler's end is what the stop waits for last); the log is
# flushed first. The nanny has closed its workers by then; the forkserver
# exits so too.
MAIN_THEN_EXIT = """\
try:
    main()
    code = 0
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if not isinstance(e.code, (int, type(None))):
        print(e.code, file=sys.stderr)
import logging
logging.shutdown()
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""

#: ``python -c SCHEDULER_MAIN <dask scheduler arguments>``.
SCHEDULER_MAIN = """\
import os, sys
from distributed.cli import dask_scheduler
sys.argv = ["dask scheduler"] + sys.argv[1:]
main = dask_scheduler.main
""" + MAIN_THEN_EXIT

# Workers start while the scheduler is still starting. This imports what
# the workers need, then, still single-threaded, forks itself into
# multiprocessing's resource tracker (a new interpreter otherwise, ~0.04
# CPU-s per host) and into the
# forkserver distributed's nanny forks its workers from: one import of
# distributed per host (this process's), not two (the stdlib's forkserver
# is a new interpreter that imports it all again). Where that cannot be
# done (another Python's forkserver, a thread already running) it starts
# the stdlib's forkserver as before. Then it imports `dask worker`, but
# makes the first connection only once the scheduler's port accepts: so the
# workers' death timeout counts from a listening scheduler. (If a future
# distributed drops the private flag set below, setting it does nothing and
# only the saving is lost.)
WAIT_THEN_WORKER = """\
import json, multiprocessing, os, socket, sys, threading, time
from multiprocessing import connection, forkserver, util
host, port, limit, preload = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
multiprocessing.get_context("forkserver").set_forkserver_preload(preload)
server = forkserver._forkserver
own = (forkserver.main.__code__.co_varnames[:5] == ("listener_fd", "alive_r", "preload", "main_path", "sys_path")
       and hasattr(util, "is_abstract_socket_namespace") and server._forkserver_pid is None)
if own:
    for name in preload:
        try:
            __import__(name)
        except ImportError:
            pass
if own and threading.active_count() == 1:
    from multiprocessing import resource_tracker
    tracker = resource_tracker._resource_tracker
    if getattr(tracker, "_fd", 0) is None and getattr(tracker, "_pid", 0) is None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # multiprocessing's resource tracker, which it would start as a new interpreter
            code = 0
            try:
                os.close(w)
                resource_tracker.main(r)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(r)
        tracker._fd, tracker._pid = w, pid
    listener = socket.socket(socket.AF_UNIX)
    address = connection.arbitrary_address("AF_UNIX")
    listener.bind(address)
    if not util.is_abstract_socket_namespace(address):
        os.chmod(address, 0o600)
    listener.listen()
    alive_r, alive_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the forkserver: serves until every holder of alive_w is gone
        code = 0
        try:
            os.close(alive_w)
            if tracker._fd is not None:  # as the stdlib's forkserver: the tracker's pipe is the workers'
                os.close(tracker._fd)
            forkserver.main(listener.fileno(), alive_r, [])
        except SystemExit:
            pass
        except BaseException:
            code = 1
            sys.excepthook(*sys.exc_info())
        finally:
            os._exit(code)
    listener.close()
    os.close(alive_r)
    server._forkserver_address, server._forkserver_alive_fd, server._forkserver_pid = address, alive_w, pid
else:
    forkserver.ensure_running()
from distributed.cli import dask_worker
import distributed.utils
# Preload set: distributed would otherwise import all of those packages
# (pandas...) in this process too, only to build the same list.
distributed.utils._forkserver_preload_set = True
deadline = time.monotonic() + limit
while True:
    try:
        socket.create_connection((host, port), timeout=1).close()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit(f"the scheduler at {host}:{port} did not listen within {limit:g} s")
        time.sleep(0.1)
sys.argv = ["dask worker"] + sys.argv[5:]
main = dask_worker.main
""" + "\n" + MAIN_THEN_EXIT


def forkserver_preload(nworkers: int) -> list[str]:
    """What a host's forkserver preloads: everything its workers share, or, for one worker, its start."""
    return ONE_WORKER_PRELOAD if nworkers == 1 else FORKSERVER_PRELOAD


def scheduler_host_port(address: str) -> tuple[str, str]:
    """("host", "port") of ``proto://host:port`` (IPv6 in brackets allowed)."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), port


def workers_argv(inv: Inventory, spec: HostSpec, listen: str, scheduler: str, memory_limit: int | str,
                 name: str | None = None) -> list[str]:
    """``name``: of a single worker started after the launch (``<label>-<i>``, see launcher/trees.py)."""
    host, port = scheduler_host_port(scheduler)
    argv = [python_of(spec), "-c", WAIT_THEN_WORKER, host, port, f"{inv.step_timeout:g}",
            json.dumps(forkserver_preload(spec.nworkers), separators=(",", ":")), scheduler,
            "--nworkers", str(spec.nworkers), "--nthreads", str(spec.nthreads),
            "--memory-limit", str(memory_limit), "--nanny",
            "--host", listen, "--protocol", inv.protocol,
            # distributed appends "-<i>" to the name only when nworkers > 1.
            "--name", name or (spec.label if spec.nworkers > 1 else f"{spec.label}-0"),
            "--local-directory", "{local_directory}",
            "--death-timeout", f"{inv.death_timeout:g}", "--no-dashboard",
            "--preload-nanny", f"{{rundir}}/{LOGCAP_PRELOAD}"]
    if relays_stop(inv):
        argv += ["--preload-nanny", f"{{rundir}}/{TREESTOP_PRELOAD}"]
    if inv.protocol == "tls":
        preload = f"{{rundir}}/{REVOCATION_PRELOAD}"
        argv += tls.cli_args() + ["--preload", preload, "--preload-nanny", preload]
    return argv + options.argv(inv.worker_options)


def shared_dirs(inv: Inventory) -> list[str]:
    """The directories every process of the cluster and this machine see alike.

    ``[cluster] shared`` as the preflight proved it; on a cluster whose every
    process runs on this machine (the embedded default, ``transport = "local"``
    everywhere, no batch pool) the whole file system: nothing can be lost there.
    """
    if not inv.pools and all(h.transport == "local" for h in (inv.scheduler, *inv.hosts)):
        return ["/"]
    return list(inv.shared)


def scheduler_payload(inv: Inventory, listen: str, files: dict[str, str], timeout: float,
                      token: str = "<token>", port: int | None = None) -> dict:
    # The scheduler's scratch space too, or it makes /tmp/dask-scratch-space.
    env = dict(process_env(inv), DASK_TEMPORARY_DIRECTORY="{rundir}")
    # The checked shared directories as the client sees them: pyku's
    # persistent_processing asks the scheduler, and warns about a tmpdir outside them.
    env[SHARED_DIRS_VAR] = json.dumps(shared_dirs(inv))
    files = dict(files, **{USAGE_PRELOAD: _preload_source("usage"), LOGCAP_PRELOAD: _preload_source("logcap"),
                           RELAY_PRELOAD: _preload_source("relay")})
    if self_stopping(inv):
        files = dict(files, **{LIFETIME_PRELOAD: _preload_source("lifetime")})
        env.update(PYKU_IDLE_TIMEOUT=f"{inv.idle_timeout or ''}", PYKU_MAX_LIFETIME=f"{inv.max_lifetime or ''}")
    payload = {"rundir": run_dir(inv.name, inv.scheduler, "scheduler"), "argv": scheduler_argv(inv, listen, port),
               "env": env, "log": "scheduler.log", "files": files, "token": token,
               "wait_file": "scheduler.json", "wait_timeout": timeout}
    return _with(payload, self_cleaning(inv, inv.scheduler, "scheduler"))


def workers_payload(inv: Inventory, spec: HostSpec, listen: str, scheduler: str,
                    memory_limit: int | str, files: dict[str, str], token: str = "<token>",
                    name: str | None = None, rundir: str | None = None) -> dict:
    # The default spill directory sits in a shared temporary directory: the
    # agent checks every level of it is ours.
    private = {} if spec.local_directory else {"private_top": SPILL_ROOT}
    payload = {"rundir": rundir or run_dir(inv.name, spec, "workers"), "token": token,
               "local_directory": local_directory(inv.name, spec), **private,
               "argv": workers_argv(inv, spec, listen, scheduler, memory_limit, name),
               "env": dict(process_env(inv), DASK_TEMPORARY_DIRECTORY="{local_directory}"),
               "log": "workers.log", "files": dict(files, **{LOGCAP_PRELOAD: _preload_source("logcap")})}
    if relays_stop(inv):
        payload["files"][TREESTOP_PRELOAD] = _preload_source("treestop")
        payload["agent_copy"] = AGENT_COPY  # not sent again: the agent has its source
        payload["env"]["PYKU_AGENT_FILE"] = f"{{rundir}}/{AGENT_COPY}"
    return _with(payload, self_cleaning(inv, spec, "workers"))


def cleanup_paths(name: str, spec: HostSpec, role: str, spill: str | None = None) -> tuple[list[str], list[str]]:
    """What ``stop`` removes on a host (files), then prunes if empty (parents).

    ``spill``: the default spill directory as the host's agent resolved it
    (its ``$TMPDIR`` then), if known.
    """
    remove = [run_dir(name, spec, role)]
    prune = [f"{RUN_ROOT}/{name}", RUN_ROOT]
    if role == "workers" and not spec.local_directory:
        spill = spill or local_directory(name, spec)
        remove.append(spill)
        cluster_dir = spill.rsplit("/", 1)[0]
        prune[:0] = [cluster_dir, cluster_dir.rsplit("/", 1)[0]]
    return remove, prune


def describe(spec: HostSpec, op: str, payload: dict | None = None) -> str:
    """Human-readable form of one agent step, for --dry-run."""
    via = "local" if spec.transport == "local" else f"ssh {spec.user + '@' if spec.user else ''}{spec.address}"
    line = f"[{spec.address}] ({via}) {agent_command(spec)}  <<< agent {op}"
    if payload and "argv" in payload:
        shown = {WAIT_THEN_WORKER: "'<wait until the scheduler listens, then run distributed.cli.dask_worker>'",
                 SCHEDULER_MAIN: "'<run distributed.cli.dask_scheduler>'"}
        argv = [shown.get(a) or shlex.quote(a) for a in payload["argv"]]
        line += f"\n    starts: {' '.join(argv)}"
        line += f"\n    in {payload['rundir']} (log {payload['log']})"
        if "local_directory" in payload:
            line += f"\n    spill space {payload['local_directory']}"
    return line


def dry_run(inv: Inventory) -> list[str]:
    """Every remote step of a launch, per host, touching nothing."""
    lines = [f"dask config (every process): {k}={v}" for k, v in options.config_env(inv.dask_config).items()]
    sched = inv.scheduler
    listen = sched.listen or f"<address {sched.address} is reached on>"
    lines.append(describe(sched, "probe"))
    lines.append(describe(sched, "spawn", scheduler_payload(inv, listen, {}, inv.timeout)))
    for spec in inv.hosts:
        listen = spec.listen or f"<address {spec.address} is reached on>"
        mem = spec.memory_limit or "<auto: (MemTotal - reserve) / nworkers>"
        lines.append(describe(spec, "probe"))
        lines.append(describe(spec, "spawn", workers_payload(
            inv, spec, listen, f"{inv.protocol}://<scheduler address>", mem, {})))
    return lines
