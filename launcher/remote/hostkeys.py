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

from launcher.errors import InventoryError
from launcher.config.inventory import HostSpec
from launcher.remote.sshlib import asyncssh


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


def resolved_port(spec: HostSpec, opts: dict) -> int:
    """The port asyncssh connects to, after ``~/.ssh/config``."""
    return _target(spec, opts).port


def check_files(specs: list[HostSpec]) -> None:
    """Refuse unusable key files before any connection, naming the file and its key.

    asyncssh would raise a bare ``KeyImportError``/``ValueError`` (or an
    errno) from deep inside the connect, once per host; these are one
    mistake in the inventory, said once with what to do (exit 2). A missing
    known_hosts file is created empty when ``accept_new`` will fill it.
    """
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        if spec.transport != "ssh":
            continue
        if spec.identity and ("identity", spec.identity) not in seen:
            seen.add(("identity", spec.identity))
            _check_identity(spec.identity)
        if spec.known_hosts and ("known_hosts", spec.known_hosts) not in seen:
            seen.add(("known_hosts", spec.known_hosts))
            _check_known_hosts(spec.known_hosts, spec.accept_new)


def _check_identity(path: str) -> None:
    hint = "(set identity under [ssh] or the host's table to your private key file, e.g. ~/.ssh/id_ed25519)"
    try:
        asyncssh.load_keypairs([path])
    except FileNotFoundError:
        raise InventoryError(f"identity {path}: no such key file {hint}") from None
    except OSError as e:
        raise InventoryError(f"identity {path}: cannot read the key file: {e.strerror} {hint}") from None
    except (ValueError, asyncssh.Error) as e:  # KeyImportError is a ValueError
        what = "a public key, not the private key" if Path(path).suffix == ".pub" else "not a private key"
        raise InventoryError(f"identity {path}: {what} ({e}) {hint}") from None


def _check_known_hosts(path: str, accept_new: bool) -> None:
    hint = "(set known_hosts under [ssh] to an OpenSSH known_hosts file, e.g. ~/.ssh/known_hosts)"
    p = Path(path)
    if not p.exists() and accept_new:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        p.touch(mode=0o600)
        return
    try:
        asyncssh.read_known_hosts(path)
    except FileNotFoundError:
        raise InventoryError(f"known_hosts {path}: no such file (add the hosts' keys with ssh-keyscan, "
                             f"or set accept_new = true under [ssh]) {hint}") from None
    except OSError as e:
        raise InventoryError(f"known_hosts {path}: cannot read it: {e.strerror} {hint}") from None
    except (ValueError, asyncssh.Error) as e:
        raise InventoryError(f"known_hosts {path}: not a known_hosts file ({e}) {hint}") from None


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
