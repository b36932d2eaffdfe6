"""Opening an SSH connection to a host: asyncssh's options from the inventory, host keys, and
errors that name the host and say what to fix (every step, the tunnel and ``check`` connect so)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from launcher.config.inventory import HostSpec
from launcher.errors import LaunchError


def connect_options(spec: HostSpec) -> dict:
    """asyncssh keyword arguments for a host; () means asyncssh's own default."""
    opts: dict = {"connect_timeout": spec.connect_timeout}
    if spec.port:
        opts["port"] = spec.port
    if spec.user:
        opts["username"] = spec.user
    if spec.identity:
        opts["client_keys"] = [spec.identity]
    if spec.known_hosts:
        opts["known_hosts"] = spec.known_hosts
    if spec.ssh_config and not Path(spec.ssh_config).is_file():
        raise LaunchError(f"ssh config file {spec.ssh_config} does not exist "
                          f"(fix [ssh] config in the inventory)", host=spec.address)
    config = spec.ssh_config or str(Path("~/.ssh/config").expanduser())
    opts["config"] = [config] if Path(config).exists() else []
    return opts


async def ssh_connect(spec: HostSpec):
    """An asyncssh connection to the host (host keys, authentication and errors as every step)."""
    from launcher.remote.sshlib import asyncssh

    from launcher.remote.hostkeys import accept_new, describe_refusal

    opts = connect_options(spec)
    try:
        try:
            return await asyncssh.connect(spec.address, **opts)
        except asyncssh.HostKeyNotVerifiable:
            conn = await accept_new(spec, opts) if spec.accept_new else None
            if conn is None:
                raise LaunchError(await describe_refusal(spec, opts), host=spec.address) from None
            return conn
    except asyncssh.PermissionDenied:
        who = f"{spec.user}@" if spec.user else ""
        key = spec.identity or "the agent/default keys"
        raise LaunchError(
            f"SSH authentication refused for {who}{spec.address} with {key} "
            f"(check [ssh] user/identity, or the host's authorized_keys)", host=spec.address
        ) from None
    except (OSError, asyncio.TimeoutError, TimeoutError, asyncssh.Error) as e:
        raise LaunchError(f"cannot connect over SSH: {_connect_failure(spec, opts, e)}",
                          host=spec.address) from None


def _connect_failure(spec: HostSpec, opts: dict, e: BaseException) -> str:
    """Why a connect failed, without the address or errno noise, so that
    hosts failing for the same reason read the same (and group)."""
    from launcher.remote.hostkeys import resolved_port

    if isinstance(e, ConnectionRefusedError):
        return f"connection refused on port {resolved_port(spec, opts)}"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {spec.connect_timeout:g} s (connect_timeout)"
    if isinstance(e, socket.gaierror):
        return f"unknown host name ({e.strerror})"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    return str(e) or type(e).__name__
