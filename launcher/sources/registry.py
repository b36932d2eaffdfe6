"""Which worker sources exist: built from an inventory's sections, or found from a record's ``source``.

One entry per kind (:attr:`WorkerSource.kind`, what :attr:`HostRecord.source`
says); each kind reads its own inventory section (``section``: ``[[host]]``
for SSH hosts). A new kind of workers is one line in :data:`KINDS`.
"""

from __future__ import annotations

from launcher.config.inventory import Inventory
from launcher.errors import LaunchError
from launcher.sources.base import WorkerSource
from launcher.sources.ssh import SshHosts
from launcher.store.records import HostRecord

#: kind -> the class; the order is the order a launch starts them in.
KINDS: dict[str, type] = {SshHosts.kind: SshHosts}


def from_inventory(inv: Inventory) -> list[WorkerSource]:
    """The sources whose section the inventory has (with their members)."""
    return [s for s in (cls(inv) for cls in KINDS.values()) if s.members()]


def source_of(kind: str, inv: Inventory | None = None) -> WorkerSource:
    """The source that runs trees of this kind (``inv`` None: from the record alone, for stop and status)."""
    if kind not in KINDS:
        raise LaunchError(f"the state record names a worker source '{kind}' this pyku-launch does not know "
                          f"(known: {', '.join(KINDS)}): use the pyku-launch that launched it")
    return KINDS[kind](inv)


def by_source(recs: list[HostRecord], inv: Inventory | None = None) -> list[tuple[WorkerSource, list[HostRecord]]]:
    """The records grouped by the source that runs them, in the order they first appear."""
    groups: dict[str, list[HostRecord]] = {}
    for r in recs:
        groups.setdefault(r.source, []).append(r)
    return [(source_of(kind, inv), group) for kind, group in groups.items()]


def members(inv: Inventory) -> list:
    """Every source's members (:class:`HostSpec`, one label each), in registry order."""
    return [m for s in from_inventory(inv) for m in s.members()]


def member_sources(sources: list[WorkerSource]) -> dict[str, WorkerSource]:
    """Member label -> its source."""
    return {m.label: s for s in sources for m in s.members()}
