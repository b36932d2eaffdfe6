"""Checks across an inventory's tables, after each table is valid on its own.

Two hosts that are one machine, labels made unique (they name run
directories and workers), a pool whose workers would take a host's worker
names, and a host's own ``shared`` list against ``[cluster] shared``. Each
failure is one line through the loader's ``fail(keypath, message)``.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, NoReturn

if TYPE_CHECKING:
    from launcher.config.inventory import HostSpec

Fail = Callable[[str, str], NoReturn]  # fail(keypath, message): raise InventoryError


def check_duplicates(hosts: tuple[HostSpec, ...], fail: Fail) -> None:
    """Two [[host]] tables reaching the same machine would start its workers twice."""
    seen: dict[tuple[str, Any], int] = {}
    for number, host in enumerate(hosts, start=1):
        port = host.port if host.transport == "ssh" else "local"
        key = (host.address.lower(), port)
        if key in seen:
            how = {None: "default port", "local": "both local"}.get(port, f"port {port}")
            fail(f"host[{number}].address", f"duplicate of host[{seen[key]}]:"
                 f" {json.dumps(host.address)}, {how}"
                 " (remove one, or raise nworkers on the other)")
        seen[key] = number


def label(address: str) -> str:
    """A host's label from its address: what its run directory and its workers are named after."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", address)


def unique_labels(hosts: tuple[HostSpec, ...]) -> tuple[HostSpec, ...]:
    """Make labels unique, case-insensitively, so run directories never clash.

    Labels collide for one address on two ports (the port is appended) or
    after sanitising (``a:b`` and ``a_b``; ``-2``, ``-3``… is appended).
    """
    taken: set[str] = set()
    result = []
    for host in hosts:
        options = itertools.chain(
            [host.label], [f"{host.label}-{host.port}"] if host.port is not None else [],
            (f"{host.label}-{n}" for n in itertools.count(2)))
        label = next(o for o in options if o.casefold() not in taken)
        taken.add(label.casefold())
        result.append(replace(host, label=label))
    return tuple(result)


def check_pool_names(pools: tuple, hosts: tuple[HostSpec, ...], fail: Fail) -> None:
    """A pool's workers (``<pool>-<job>-<i>``) never take a host's worker names (``<host>-<i>``)."""
    for number, pool in enumerate(pools, start=1):
        for host in hosts:
            if re.fullmatch(re.escape(pool.label) + r"(-\d+)?", host.label, re.IGNORECASE):
                fail(f"slurm[{number}].name", f"{pool.label!r} clashes with host {host.label!r}: their workers "
                                              f"would share names (<pool>-<job>-<i>, <host>-<i>); give the pool "
                                              f"another name = \"...\"")


def check_shared(paths: tuple[str, ...], entries: list[tuple[str, dict]], fail: Fail) -> None:
    """A host's own ``shared`` names the same directories as ``[cluster] shared``, in its order."""
    for keypath, entry in entries:
        own = entry.get("shared")
        if own is None:
            continue
        if not paths:
            fail(f"{keypath}.shared", "needs [cluster] shared (the same directories as this machine sees them)")
        if len(own) != len(paths):
            fail(f"{keypath}.shared", f"must list {len(paths)} director{'y' if len(paths) == 1 else 'ies'}, "
                                      f"one for each of [cluster] shared in its order, got {len(own)}")
