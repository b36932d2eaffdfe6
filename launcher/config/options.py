"""``[scheduler] options``, ``[workers] options`` and ``[cluster] dask_config``.

The options tables hold flags of ``dask scheduler`` / ``dask worker`` as a
Dask user knows them from SSHCluster's ``scheduler_options`` and
``worker_options``; only the flags the launcher does not set itself are
accepted (it owns addresses, ports, TLS, names, sizing), so an option can
never fight the launch. ``dask_config`` is a nested table of Dask settings,
given to every process of the cluster as ``DASK_*`` environment variables
(dask reads them at import; values go through ``ast.literal_eval``, so they
are written as Python literals and arrive with their TOML type).
"""

from __future__ import annotations

import re
from typing import Any

from launcher.config.validate import Invalid, show

#: flag -> what its value must be: "text", "seconds", "flag" (true/false), "texts" (one or many)
WORKER_FLAGS = {
    "resources": "resources", "lifetime": "text", "lifetime-stagger": "text", "lifetime-restart": "flag",
    "preload": "texts", "preload-nanny": "texts", "worker-class": "text", "nanny-port": "text",
    "worker-port": "text", "interface": "text", "contact-address": "text",
}
SCHEDULER_FLAGS = {
    "preload": "texts", "idle-timeout": "text", "dashboard-prefix": "text", "jupyter": "flag",
    "interface": "text",
}
_SAFE = re.compile(r"[^\x00-\x1f\x7f]*")


def _flag_checker(flags: dict[str, str]):
    def check(value: Any) -> tuple[tuple[str, Any], ...]:
        if not isinstance(value, dict):
            raise Invalid(f"must be a table of dask CLI flags, got {show(value)} (e.g. lifetime = \"1h\")")
        out = []
        for flag, raw in value.items():
            flag_ = flag.replace("_", "-")
            if flag_ not in flags:
                raise Invalid(f"unknown flag {show(flag)} (accepted: {', '.join(flags)})")
            out.append((flag_, _value(flag_, flags[flag_], raw)))
        return tuple(out)
    return check


def _value(flag: str, kind: str, raw: Any):
    if kind == "flag":
        if not isinstance(raw, bool):
            raise Invalid(f"{flag} must be true or false, got {show(raw)}")
        return raw
    if kind == "resources" and isinstance(raw, dict):
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw.values()):
            raise Invalid(f"resources must map names to numbers, e.g. {{GPU = 2}}, got {show(raw)}")
        return " ".join(f"{k}={x:g}" for k, x in raw.items())
    items = raw if kind == "texts" and isinstance(raw, list) else [raw]
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (str, int, float)) or not _SAFE.fullmatch(str(x)):
            raise Invalid(f"{flag} must be text or a number, got {show(x)}")
    return [str(x) for x in items] if kind == "texts" else str(raw)


check_worker_options = _flag_checker(WORKER_FLAGS)
check_scheduler_options = _flag_checker(SCHEDULER_FLAGS)


def argv(options: tuple[tuple[str, Any], ...]) -> list[str]:
    """The dask CLI arguments of an options table."""
    out: list[str] = []
    for flag, value in options:
        if isinstance(value, bool):
            out.append(f"--{flag}" if value else f"--no-{flag}")
        elif isinstance(value, list):
            for x in value:
                out += [f"--{flag}", x]
        else:
            out += [f"--{flag}", value]
    return out


def check_dask_config(value: Any) -> tuple[tuple[str, Any], ...]:
    """A nested table of dask settings, flattened to (dotted key, value) pairs."""
    if not isinstance(value, dict):
        raise Invalid(f"must be a table of dask settings, got {show(value)} "
                      "(e.g. distributed.admin.large-graph-warning-threshold = \"500MiB\")")
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, table: dict) -> None:
        for key, x in table.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
                raise Invalid(f"key {show(key)} is not a dask setting name (letters, digits, - and _)")
            path = f"{prefix}.{key}" if prefix else key
            if isinstance(x, dict):
                walk(path, x)
            elif isinstance(x, (str, int, float, bool, list)):
                out.append((path, x))
            else:
                raise Invalid(f"{path} must be text, a number, true/false or an array, got {show(x)}")
    walk("", value)
    return tuple(out)


def env_name(key: str) -> str:
    """The environment variable dask reads a dotted setting from: ``a.b-c`` → ``DASK_A__B_C``
    (dask treats - and _ alike in keys)."""
    return "DASK_" + "__".join(p.upper().replace("-", "_") for p in key.split("."))


def config_env(dask_config: tuple[tuple[str, Any], ...]) -> dict[str, str]:
    """``DASK_A__B_C='value'`` per setting."""
    return {env_name(key): repr(value) for key, value in dask_config}
