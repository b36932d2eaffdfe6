"""Sharing a cluster: connection files for colleagues, and revoking them.

``pyku-launch share --for LABEL -o FILE`` writes a connection file (JSON,
mode 0600): the scheduler's address, the dashboard, the cluster's CA
certificate and a *new* client certificate and key for LABEL, signed by the
cluster's CA (whose key only the launcher's state file holds) and valid for
a number of days. ``launcher.connect("FILE")`` needs nothing else: no state,
no inventory, no launcher beyond this package.

``pyku-launch revoke LABEL`` marks LABEL's certificates revoked in the state
and rewrites ``revoked.txt`` in the run directory of every host; the
scheduler, nannies and workers check each new connection against it
(:mod:`launcher.revocation`) and refuse a revoked one with a line naming the
revocation. Expired certificates are refused by the TLS handshake itself,
and :func:`load` says so before trying.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import re
import stat
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from launcher.remote import commands
from launcher.store import state
from launcher.security import tls
from launcher.errors import LaunchError
from launcher.remote.protocol import Put
from launcher.store.records import ClusterRecord
from launcher.remote.transport import close_all, connection_key, open_connections
from launcher.config.validate import NAME

KIND = "pyku-launch connection"
LABEL = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"


@dataclass(frozen=True)
class ConnectionFile:
    """What a connection file holds: where the cluster is and a certificate to get in."""

    name: str
    label: str
    scheduler: str
    dashboard: str | None
    scheduler_host: str          # the scheduler machine's address, for a tunnel over SSH
    serial: str                  # hex, as the revocation list names it
    expires: str                 # ISO 8601, UTC
    tls: tls.Material

    def security(self):
        return tls.security(self.tls)

    def to_json(self) -> dict:
        return {"kind": KIND, "version": 1, **asdict(self)}


def _record(name: str) -> ClusterRecord:
    rec = state.read(name)
    if rec is None or not rec.running:
        raise LaunchError(f"cluster '{name}' is not running: launch it first")
    if rec.protocol != "tls":
        raise LaunchError(f"cluster '{name}' uses protocol = \"tcp\": there is nothing to share "
                          f"(anyone who reaches {rec.scheduler} can connect); use \"tls\"")
    return rec


def share(name: str, label: str, path: str | os.PathLike, days: float = 7) -> ConnectionFile:
    """Issue a client certificate for ``label`` and write the connection file ``path`` (0600).

    Parameters
    ----------
    name
        The cluster.
    label
        Who the file is for (names the certificate; ``revoke`` takes it).
    path
        Where to write the file; an existing file is replaced.
    days
        How long the certificate is valid.
    """
    if not re.fullmatch(LABEL, label):
        raise LaunchError(f"--for {label!r}: a label is letters, digits and _ . @ - (e.g. a user name)")
    if not days > 0:
        raise LaunchError(f"--days {days:g}: must be more than 0")
    with state.lock(name, "share"):
        rec = _record(name)
        if rec.ca_key is None:
            raise LaunchError(f"cluster '{name}' was launched by a pyku-launch without shares "
                              f"(its CA key was not kept): stop and launch it again to share it")
        material = tls.issue(tls.CA(rec.tls.ca, rec.ca_key), f"pyku-launch {name} share {label}", days)
        serial, expires = tls.certificate_info(material.cert)
        srec = rec.scheduler_host
        conn = ConnectionFile(name=name, label=label, scheduler=rec.scheduler, dashboard=rec.dashboard,
                              scheduler_host=srec.address if srec else "", serial=f"{serial:X}",
                              expires=expires.isoformat(timespec="seconds"), tls=material)
        _write_private(Path(path), json.dumps(conn.to_json(), indent=1))
        rec.shares.append({"label": label, "serial": conn.serial, "expires": conn.expires,
                           "issued": _now().isoformat(timespec="seconds"), "revoked": None})
        state.write(rec)
    return conn


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, from its first byte."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_connection_file(target: str) -> bool:
    """Whether ``target`` (a ``connect()`` argument or ``$PYKU_CLUSTER``) names a file, not a cluster.

    A cluster name is letters, digits, ``_`` and ``-``: anything else is a path.
    """
    return not re.fullmatch(NAME, target)


def load(path: str | os.PathLike) -> ConnectionFile:
    """Read a connection file; warn if others may read it; refuse an expired certificate."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise LaunchError(f"{path}: no such connection file, nor a cluster name "
                          f"(pyku-launch share -o FILE writes one)") from None
    except (OSError, ValueError) as e:
        raise LaunchError(f"{path}: not a readable connection file ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise LaunchError(f"{path}: not a pyku-launch connection file (pyku-launch share -o FILE writes one)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(f"{path}: readable by others (mode {stat.S_IMODE(mode):04o}); it holds a private "
                      f"key: chmod 600 {path}", stacklevel=3)
    try:
        fields = {k: data[k] for k in ("name", "label", "scheduler", "dashboard", "scheduler_host",
                                       "serial", "expires")}
        conn = ConnectionFile(**fields, tls=tls.Material(**data["tls"]))
    except (KeyError, TypeError) as e:
        raise LaunchError(f"{path}: connection file lacks {e} (ask for a new one)") from None
    if _dt.datetime.fromisoformat(conn.expires) <= _now():
        raise LaunchError(f"{path}: the certificate for '{conn.label}' expired on {conn.expires} "
                          f"(ask the cluster's owner for a new one: pyku-launch share --for {conn.label})")
    return conn


def listed(rec: ClusterRecord) -> list[dict]:
    """The record's shares with their state now: ``valid``, ``expired`` or ``revoked``."""
    now = _now()
    out = []
    for s in rec.shares:
        st = "revoked" if s.get("revoked") else (
            "expired" if _dt.datetime.fromisoformat(s["expires"]) <= now else "valid")
        out.append(dict(s, state=st))
    return out


def revoked_text(rec: ClusterRecord) -> str:
    """``revoked.txt`` for this record: ``<serial> <label> <date>`` per revoked certificate."""
    return "".join(f"{s['serial']} {s['label']} {s['revoked']}\n" for s in rec.shares if s.get("revoked"))


async def _push(rec: ClusterRecord, timeout: float = 30) -> list[str]:
    """Rewrite the revocation list on every host of the cluster; the hosts not reached."""
    files = {commands.REVOKED_FILE: revoked_text(rec)}
    conns, failed = await open_connections([h.spec for h in rec.hosts])
    try:
        reached = [h for h in rec.hosts if connection_key(h.spec) in conns]
        replies = await asyncio.gather(*(conns[connection_key(h.spec)].request(Put(h.rundir, files), timeout)
                                         for h in reached), return_exceptions=True)
        missed = [f"{h.address}: {r}" for h, r in zip(reached, replies) if isinstance(r, BaseException)]
        return missed + [f"{h.address}: {failed[connection_key(h.spec)]}" for h in rec.hosts
                         if connection_key(h.spec) in failed]
    finally:
        await close_all(conns)


async def revoke_async(name: str, label: str) -> dict:
    """Revoke every certificate issued for ``label``; returns what changed and hosts not reached."""
    with state.lock(name, "revoke"):
        rec = _record(name)
        hits = [s for s in rec.shares if s["label"] == label]
        if not hits:
            known = ", ".join(sorted({s["label"] for s in rec.shares})) or "none"
            raise LaunchError(f"cluster '{name}' has no share for '{label}' (issued: {known})")
        when = _now().isoformat(timespec="seconds")
        for s in hits:
            s["revoked"] = s.get("revoked") or when
        state.write(rec)
        missed = await _push(rec)
    if missed:
        raise LaunchError(f"'{label}' is revoked in the state, but not every host got the list "
                          f"({'; '.join(missed)}): run pyku-launch revoke {label} again")
    return {"name": name, "label": label, "serials": [s["serial"] for s in hits], "revoked": when}
