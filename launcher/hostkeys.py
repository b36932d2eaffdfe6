"""Host-key policy: strict by default, OpenSSH's ``accept-new`` on request.

A host whose key is not in known_hosts is refused, naming the key's
fingerprint so the user can compare it out of band; a host whose key
*changed* is always refused. With ``[ssh] accept_new = true`` an unknown
host's key is recorded (like ``StrictHostKeyChecking=accept-new``), a
changed one still refused.

Names, ports and files are those asyncssh itself checks: after
``~/.ssh/config`` has turned an alias into its HostName, Port and
UserKnownHostsFile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from .inventory import HostSpec


@dataclass(frozen=True)
class _Target:
    host: str   # after the config's HostName
    port: int
    path: Path  # the known_hosts file checked (the first, if several)

    @property
    def pattern(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def _target(spec: HostSpec, opts: dict) -> _Target:
    o = asyncssh.SSHClientConnectionOptions(
        config=opts.get("config", ()), host=spec.address, port=opts.get("port", ()),
        known_hosts=opts.get("known_hosts", ()))
    files = [o.known_hosts] if isinstance(o.known_hosts, (str, Path)) else list(o.known_hosts or ())
    path = Path(files[0] if files else "~/.ssh/known_hosts").expanduser()
    return _Target(o.host, o.port or 22, path)


def _has_entry(t: _Target) -> bool:
    if not t.path.exists():
        return False
    try:
        known = asyncssh.read_known_hosts(str(t.path))
    except (OSError, ValueError):
        return False
    trusted = known.match(t.host, "", t.port)
    return bool(trusted[0] or trusted[1])


async def _fingerprint(t: _Target, opts: dict) -> str | None:
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(
            t.host, port=t.port, config=opts.get("config", ())), opts.get("connect_timeout", 10))
    except (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError):
        return None
    return key.get_fingerprint() if key else None


async def describe_refusal(spec: HostSpec, opts: dict) -> str:
    """One line (without the host): which fingerprint, unknown or changed, what to do."""
    t = _target(spec, opts)
    fp = await _fingerprint(t, opts)
    shown = f" {fp}" if fp else ""
    if _has_entry(t):
        return (
            f"host key{shown} does not match the one recorded in {t.path} "
            f"(the host key CHANGED: verify the host, then remove its old line with "
            f"ssh-keygen -R '{t.pattern}' -f {t.path})"
        )
    return (
        f"host key{shown} is unknown, not in {t.path} "
        f"(verify it, then add it with ssh-keyscan -p {t.port} {t.host} >> {t.path}, "
        f"or set accept_new = true under [ssh])"
    )


async def accept_new(spec: HostSpec, opts: dict):
    """Connect to an unknown host and record its key; None if the key changed."""
    t = _target(spec, opts)
    if _has_entry(t):
        return None
    conn = await asyncssh.connect(spec.address, **dict(opts, known_hosts=None))
    key = conn.get_server_host_key()
    t.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(t.path, "a") as f:
        f.write(f"{t.pattern} {key.export_public_key().decode().strip()}\n")
    return conn
