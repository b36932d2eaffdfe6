"""Read and validate a hosts inventory (TOML, see README.md) into frozen dataclasses.

Nothing is contacted here: :func:`load_inventory` either returns a fully
resolved :class:`Inventory` or raises :class:`~launcher.errors.InventoryError`
(exit code 2) with one line of the shape::

    <file>: <key path>: <what is wrong> (<what to do>)

``<file>`` is the path as the user gave it. Key paths are ``cluster.port``,
``ssh.user``, ``scheduler.address``, ``workers.memory_limit`` and
``host[N].key`` where ``N`` counts the ``[[host]]`` tables from 1 in file
order, as a user counts. Errors about the file as a whole (missing, empty,
binary, TOML syntax) name the file and, for syntax, the line and column.

Settings cascade so each host is described once, in full, by a
:class:`HostSpec`: a ``[[host]]`` key wins over the ``[workers]``/``[ssh]``
table, which wins over ``[cluster]`` (for ``env``, ``python``, ``shell``,
``transport``), which wins over the built-in default. An override to an
"empty" value (``env = ""``, ``memory_limit = "auto"``) really overrides.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

from launcher.config import crosscheck, options as opts, pools as pools_, validate as v
from launcher.errors import InventoryError
from launcher.config.validate import parse_memory

__all__ = ["HostSpec", "Inventory", "load_inventory", "parse_memory"]

Fail = Callable[[str, str], NoReturn]  # fail(keypath, message): raise InventoryError
MAX_BYTES = 1 << 20  # an inventory is a few hundred bytes; more is the wrong file


@dataclass(frozen=True)
class HostSpec:
    """One machine, with every default and override already applied.

    ``label`` is the address made safe for worker names and run directory
    names (characters outside ``[A-Za-z0-9_.-]`` become ``_``) and unique
    among the ``[[host]]`` entries; the scheduler's label is computed the same
    way and may equal a host's label when both run on the same machine.
    Sizes are bytes; ``None`` means "let the launcher decide" (see field notes).
    """

    address: str             # as written: IP, host name or ~/.ssh/config alias
    label: str
    transport: str           # "ssh" | "local"
    user: str | None
    port: int | None         # None: from ssh config, else 22
    identity: str | None     # ~ expanded
    known_hosts: str | None  # ~ expanded; None: asyncssh default ~/.ssh/known_hosts
    ssh_config: str | None   # ~ expanded; None: ~/.ssh/config if it exists
    accept_new: bool         # like StrictHostKeyChecking=accept-new
    env: str | None          # shell code run before every remote command
    python: str | None       # None: "python3" over SSH, this interpreter for transport = "local"
    shell: str
    nworkers: int
    nthreads: int
    memory_limit: int | None  # None: "auto"
    reserve: int | None       # None: max(2 GiB, 5 % of MemTotal)
    local_directory: str | None  # remote path, not expanded (absolute, ~/… or relative to home);
    #                               None: $TMPDIR (else /tmp)/pyku-launch-<uid>/<cluster>/<label>
    listen: str | None        # None: bind to `address`
    connect_timeout: float
    #: The agent starts in a login shell (``bash -l``: /etc/profile, ~/.profile, where HPC sites
    #: define ``module``); False: ``bash --norc -c``, after only what sshd's own shell read
    #: (~/.bashrc for bash), as for ``ssh host cmd``: no second pass through the rc files.
    login_shell: bool = True
    #: Directories that must be one shared file system on every host and this
    #: machine (``[cluster] shared``, this host's paths: ``[[host]] shared``);
    #: checked by the preflight (launcher/verbs/shared_dirs.py).
    shared: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inventory:
    """A validated inventory file: the cluster settings, its scheduler and its hosts."""

    path: str                # absolute
    sha256: str              # of the file's bytes, to notice a changed file later
    name: str
    protocol: str            # "tls" | "tcp"
    port: int                # 0: any free port
    dashboard_port: int      # 0: any free port
    death_timeout: float
    timeout: float           # seconds for every worker to register
    step_timeout: float      # seconds for one remote step (probe, start, stop) on one host
    check: tuple[str, ...]   # extra distributions compared in preflight
    min_hosts: int | None    # None: every host is required
    scheduler: HostSpec
    hosts: tuple[HostSpec, ...]
    #: "closed": a TLS cluster's dashboard binds to the scheduler host's loopback
    #: (reach it with ``pyku-launch dashboard``); "open": on the scheduler's address.
    dashboard: str = "closed"
    #: Local packages packed and sent to every host, first on PYTHONPATH there (launcher/ship.py).
    ship: tuple[str, ...] = ()
    scheduler_options: tuple = ()  # (dask scheduler flag, value), launcher/options.py
    worker_options: tuple = ()     # (dask worker flag, value)
    dask_config: tuple = ()        # (dotted dask setting, value), for every process
    #: Batch pools (``[[slurm]]``, launcher/config/pools.py): workers in batch jobs, beside the hosts.
    pools: tuple = ()
    shared: tuple[str, ...] = ()   # shared directories as this machine sees them (HostSpec.shared: a host's)
    idle_timeout: float | None = None  # seconds without a task before the cluster stops itself
    max_lifetime: float | None = None  # seconds after which it stops itself in any case


_ADDRESS = v.address
_USER = v.matching(v.USER, "a user name (letters, digits and _ . -)")
_TRANSPORT = v.choice("ssh", "local")
_POSITIVE = v.integer(1, None, "a positive integer")
_CONNECTION = {"user": _USER, "port": v.port(), "identity": v.local_path,
               "known_hosts": v.local_path}
_RUNTIME = {"env": v.shell_code, "python": v.word}
_SIZING = {"nworkers": _POSITIVE, "nthreads": _POSITIVE,
           "memory_limit": v.memory(64 * v.MiB), "reserve": v.memory(0),
           "local_directory": v.remote_directory}

#: Every table and key an inventory may hold, with the checker of each value.
SCHEMA: dict[str, dict[str, v.Checker]] = {
    "cluster": {
        "name": v.matching(v.NAME, "a letter then up to 63 letters, digits, _ or -"),
        **_RUNTIME,
        "shell": v.matching(v.SHELL, 'a shell program such as "bash" or "/bin/zsh"'),
        "login_shell": v.boolean,
        "protocol": v.choice("tls", "tcp"),
        "port": v.port(allow_zero=True),
        "dashboard_port": v.port(allow_zero=True),
        "death_timeout": v.seconds,
        "timeout": v.seconds,
        "step_timeout": v.seconds,
        "check": v.names(v.DISTRIBUTION, "distribution name"),
        "min_hosts": _POSITIVE,
        "transport": _TRANSPORT,
        "dashboard": v.choice("closed", "open"),
        "ship": v.names(re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "top-level package name"),
        "dask_config": opts.check_dask_config,
        "shared": v.absolute_dirs,
        "idle_timeout": v.duration(10),
        "max_lifetime": v.duration(10),
    },
    "ssh": {**_CONNECTION, "config": v.local_path, "accept_new": v.boolean,
            "connect_timeout": v.seconds, "transport": _TRANSPORT},
    "scheduler": {"address": _ADDRESS, "transport": _TRANSPORT, "listen": _ADDRESS,
                  **_CONNECTION, **_RUNTIME, "options": opts.check_scheduler_options,
                  "shared": v.absolute_dirs},
    "workers": {**_SIZING, "transport": _TRANSPORT, "options": opts.check_worker_options},
    "host": {"address": _ADDRESS, "transport": _TRANSPORT, "listen": _ADDRESS,
             **_CONNECTION, **_RUNTIME, **_SIZING, "shared": v.absolute_dirs},
    "slurm": pools_.SCHEMA,
}

#: HostSpec field -> (inventory key, tables searched in order, default).
#: "self" is the [[host]] entry, or [scheduler] for the scheduler.
_FIELDS: dict[str, tuple[str, tuple[str, ...], Any]] = {
    "transport": ("transport", ("self", "workers", "ssh", "cluster"), "ssh"),
    "user": ("user", ("self", "ssh"), None),
    "port": ("port", ("self", "ssh"), None),
    "identity": ("identity", ("self", "ssh"), None),
    "known_hosts": ("known_hosts", ("self", "ssh"), None),
    "ssh_config": ("config", ("ssh",), None),
    "accept_new": ("accept_new", ("ssh",), False),
    "env": ("env", ("self", "cluster"), None),
    "python": ("python", ("self", "cluster"), None),
    "shell": ("shell", ("cluster",), "bash"),
    "login_shell": ("login_shell", ("cluster",), True),
    "nworkers": ("nworkers", ("self", "workers"), 30),
    "nthreads": ("nthreads", ("self", "workers"), 1),
    "memory_limit": ("memory_limit", ("self", "workers"), None),
    "reserve": ("reserve", ("self", "workers"), None),
    "local_directory": ("local_directory", ("self", "workers"), None),
    "listen": ("listen", ("self",), None),
    "connect_timeout": ("connect_timeout", ("ssh",), 10.0),
    "shared": ("shared", ("self", "cluster"), ()),
}

_HOW_TO_START = "see hosts/example.toml: [scheduler] with an address and one [[host]] per machine"


def load_inventory(path: str | os.PathLike) -> Inventory:
    """Read, validate and resolve the inventory at ``path``.

    Raises
    ------
    InventoryError
        With one line naming the file, the key path and what to do, on the
        first problem found. Nothing is contacted either way.
    """
    source = os.fspath(path)
    if not source.isprintable():
        source = json.dumps(source)  # keep the message on one line
    raw = _read_bytes(path, source)
    data = _parse(raw, source)

    def fail(keypath: str, message: str) -> NoReturn:
        raise InventoryError(f"{source}: {keypath}: {message}")

    for key, value in data.items():
        if key not in SCHEMA:
            fail(_key(key), _unknown_table(key, value))
    tables = {name: _table(data.get(name, {}), name, name, fail)
              for name in ("cluster", "ssh", "workers")}
    if "scheduler" not in data:
        fail("scheduler", f"missing ({_HOW_TO_START})")
    scheduler = _table(data["scheduler"], "scheduler", "scheduler", fail)
    if "address" not in scheduler:
        fail("scheduler.address", 'missing (the scheduler machine: address = "<host name or IP>")')
    entries = _host_entries(data.get("host"), fail, pools_wanted="slurm" in data)
    crosscheck.check_shared(tables["cluster"].get("shared", ()),
                  [("scheduler", scheduler)] + [(f"host[{n}]", e) for n, e in enumerate(entries, 1)], fail)

    cluster = tables["cluster"]
    hosts = tuple(_resolve(entry, tables) for entry in entries)
    crosscheck.check_duplicates(hosts, fail)
    min_hosts = cluster.get("min_hosts")
    if min_hosts is not None and min_hosts > len(hosts):
        fail("cluster.min_hosts", f"is {min_hosts} but the inventory lists {len(hosts)}"
                                  " host(s) (lower min_hosts or add [[host]] tables)")
    port, dashboard_port = cluster.get("port", 8786), cluster.get("dashboard_port", 8787)
    if port and port == dashboard_port:
        fail("cluster.dashboard_port", f"must differ from cluster.port, both are {port}")
    # The scheduler does not run workers: [workers] transport is not its transport.
    sched_tables = {**tables, "workers": {k: x for k, x in tables["workers"].items()
                                          if k != "transport"}}
    pools = pools_.parse(data.get("slurm"), lambda entry, keypath: _table(entry, "slurm", keypath, fail),
                         lambda own: _resolve(own, sched_tables), fail)
    hosts = crosscheck.unique_labels(hosts)
    crosscheck.check_pool_names(pools, hosts, fail)
    return Inventory(
        path=os.path.abspath(path),
        sha256=hashlib.sha256(raw).hexdigest(),
        name=cluster.get("name", "pyku"),
        protocol=cluster.get("protocol", "tls"),
        port=port,
        dashboard_port=dashboard_port,
        death_timeout=cluster.get("death_timeout", 60.0),
        timeout=cluster.get("timeout", 120.0),
        step_timeout=cluster.get("step_timeout", 60.0),
        check=cluster.get("check", ()),
        min_hosts=min_hosts,
        scheduler=_resolve(scheduler, sched_tables, crosscheck.label(scheduler["address"])),
        hosts=hosts,
        dashboard=cluster.get("dashboard", "closed"),
        ship=cluster.get("ship", ()),
        pools=pools,
        **_dask_settings(cluster, scheduler, tables["workers"]),
        shared=cluster.get("shared", ()),
        idle_timeout=cluster.get("idle_timeout"),
        max_lifetime=cluster.get("max_lifetime"),
    )




def _dask_settings(cluster: dict, scheduler: dict, workers: dict) -> dict[str, tuple]:
    """The Inventory fields of launcher/options.py: dask CLI flags per role, dask settings."""
    return {"scheduler_options": scheduler.get("options", ()), "worker_options": workers.get("options", ()),
            "dask_config": cluster.get("dask_config", ())}


def _read_bytes(path: str | os.PathLike, source: str) -> bytes:
    """The file's bytes, or an InventoryError saying why they cannot be had."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise InventoryError(f"{source}: no such file (check the path; examples are in hosts/)") from None
    except IsADirectoryError:
        raise InventoryError(f"{source}: is a directory (give the path of a .toml file)") from None
    except OSError as e:
        raise InventoryError(f"{source}: cannot read: {e.strerror or e} (check the path and its permissions)") from None
    if len(raw) > MAX_BYTES:
        raise InventoryError(f"{source}: larger than 1 MiB, not an inventory (check the path)")
    return raw


def _parse(raw: bytes, source: str) -> dict[str, Any]:
    """Decode and parse TOML, turning every failure into a one-line InventoryError."""
    if b"\0" in raw:
        raise InventoryError(f"{source}: binary file, not TOML (NUL bytes found; check the path)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InventoryError(f"{source}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset"
                             f" {e.start}; save the file as UTF-8)") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e).splitlines()[0] if str(e) else "invalid TOML"
        where = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if where:
            message = message[:where.start()]
            place = f"line {where[1]}, column {where[2]}"
        else:
            place = "end of file" if "end of document" in message else "syntax"
            message = re.sub(r" \(at end of document\)$", "", message)
        raise InventoryError(f"{source}: {place}: invalid TOML: {message}"
                             " (fix the syntax there)") from None
    if not data:
        what = "is empty" if not text.strip() else "holds no settings"
        raise InventoryError(f"{source}: {what} ({_HOW_TO_START})")
    return data


def _key(name: str) -> str:
    """A key as written in TOML: bare if it can be, quoted otherwise."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _unknown_table(name: str, value: Any) -> str:
    if isinstance(value, (dict, list)):
        close = difflib.get_close_matches(name, SCHEMA, n=1)
        hint = f"did you mean {_table_name(close[0])}?" if close else \
            "allowed: " + ", ".join(_table_name(t) for t in SCHEMA)
        return f"unknown table ({hint})"
    homes = [t for t in SCHEMA if name in SCHEMA[t]]
    hint = f"put it under {' or '.join(map(_table_name, homes))}" if homes else \
        "every key belongs under a table such as [cluster]"
    return f"key outside any table ({hint})"


def _table_name(table: str) -> str:
    return f"[[{table}]]" if table in ("host", "slurm") else f"[{table}]"


def _table(value: Any, table: str, keypath: str, fail: Fail) -> dict[str, Any]:
    """Check one TOML table against ``SCHEMA[table]``; return its normalised values."""
    if not isinstance(value, dict):
        got = "an array of tables" if isinstance(value, list) else v.show(value)
        fail(keypath, f"must be a table, got {got} (write {_table_name(table)}"
                      " on its own line with the keys below it)")
    schema, checked = SCHEMA[table], {}
    for key, raw in value.items():
        if key not in schema:
            fail(f"{keypath}.{_key(key)}", "unknown key " + _unknown_key_hint(key, table))
        try:
            checked[key] = schema[key](raw)
        except v.Invalid as e:
            fail(f"{keypath}.{key}", str(e))
    return checked


def _unknown_key_hint(key: str, table: str) -> str:
    homes = [t for t in SCHEMA if key in SCHEMA[t]]
    if homes:  # a real key in the wrong table: say where it goes, not a look-alike
        return f"here (it belongs in {' or '.join(map(_table_name, homes))})"
    close = difflib.get_close_matches(key, SCHEMA[table], n=1)
    if close:
        return f'(did you mean "{close[0]}"?)'
    return "(allowed: " + ", ".join(SCHEMA[table]) + ")"


def _host_entries(value: Any, fail: Fail, pools_wanted: bool = False) -> list[dict[str, Any]]:
    """The validated ``[[host]]`` tables, each with an address; at least one unless pools give workers."""
    if (value is None or value == []) and pools_wanted:
        return []
    if value is None or value == []:
        fail("host", f"no hosts ({_HOW_TO_START})")
    if isinstance(value, dict):
        fail("host", "must be an array of tables, got a single [host] table"
                     " (write [[host]], with two brackets, before each host)")
    if not isinstance(value, list):
        fail("host", f"must be an array of tables, got {v.show(value)}"
                     " (write [[host]] before each host)")
    entries = []
    for number, entry in enumerate(value, start=1):
        checked = _table(entry, "host", f"host[{number}]", fail)
        if "address" not in checked:
            fail(f"host[{number}].address", 'missing (address = "<host name or IP>")')
        entries.append(checked)
    return entries


def _resolve(own: dict[str, Any], tables: dict[str, dict[str, Any]], label: str = "") -> HostSpec:
    """One HostSpec: each field from the first table in its cascade that sets it."""
    layers = {**tables, "self": own}
    values = {}
    for field, (key, order, default) in _FIELDS.items():
        values[field] = next((layers[t][key] for t in order if key in layers[t]), default)
    return HostSpec(address=own["address"], label=label or crosscheck.label(own["address"]), **values)
