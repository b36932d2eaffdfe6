"""Host-key policy: strict by default, OpenSSH's ``accept-new`` on request.

A host whose key is not in known_hosts is refused, naming the key's
fingerprint so the user can compare it out of band; a host whose key
*changed* is always refused. With ``[ssh] accept_new = true`` an unknown
host's key is recorded (like ``StrictHostKeyChecking=accept-new``), a
changed one still refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncssh

from .inventory import HostSpec


def _known_hosts_path(spec: HostSpec) -> Path:
    return Path(spec.known_hosts or "~/.ssh/known_hosts").expanduser()


def _host_pattern(spec: HostSpec, port: int) -> str:
    return spec.address if port == 22 else f"[{spec.address}]:{port}"


def _has_entry(spec: HostSpec, port: int) -> bool:
    path = _known_hosts_path(spec)
    if not path.exists():
        return False
    try:
        known = asyncssh.read_known_hosts(str(path))
    except (OSError, ValueError):
        return False
    trusted = known.match(spec.address, "", port)
    return bool(trusted[0] or trusted[1])


async def _fingerprint(spec: HostSpec, opts: dict) -> tuple[str | None, object]:
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(
            spec.address, port=opts.get("port", ()), config=opts.get("config", ())),
            opts.get("connect_timeout", 10))
    except (OSError, asyncssh.Error, asyncio.TimeoutError, TimeoutError):
        return None, None
    return (key.get_fingerprint() if key else None), key


async def describe_refusal(spec: HostSpec, opts: dict, exc: Exception) -> str:
    """One line: which host, which fingerprint, unknown or changed, what to do."""
    port = opts.get("port") or 22
    fp, _ = await _fingerprint(spec, opts)
    path = _known_hosts_path(spec)
    shown = f" {fp}" if fp else ""
    if _has_entry(spec, port):
        return (
            f"{spec.address}: host key{shown} does not match the one recorded in {path} "
            f"(the host key CHANGED: verify the host, then remove its old line with "
            f"ssh-keygen -R '{_host_pattern(spec, port)}' -f {path})"
        )
    return (
        f"{spec.address}: host key{shown} is unknown, not in {path} "
        f"(verify it, then add it with ssh-keyscan -p {port} {spec.address} >> {path}, "
        f"or set accept_new = true under [ssh])"
    )


async def accept_new(spec: HostSpec, opts: dict):
    """Connect to an unknown host and record its key; None if the key changed."""
    port = opts.get("port") or 22
    if _has_entry(spec, port):
        return None
    conn = await asyncssh.connect(spec.address, **dict(opts, known_hosts=None))
    key = conn.get_server_host_key()
    path = _known_hosts_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{_host_pattern(spec, port)} {key.export_public_key().decode().strip()}\n"
    with open(path, "a") as f:
        f.write(line)
    return conn
