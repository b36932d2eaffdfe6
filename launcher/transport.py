"""Connections to hosts: SSH (asyncssh) or the local machine, one interface.

A :class:`Connection` is opened once per host for a whole command and every
step reuses it. Its one verb, :meth:`Connection.agent`, runs one operation
of :mod:`launcher.agent` on the host in a login shell after the inventory's
``env`` line and returns the parsed reply. Failures become
:class:`~launcher.errors.LaunchError` messages that name the host.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .agent import MARK
from .errors import LaunchError
from .inventory import HostSpec

_AGENT_SOURCE = (Path(__file__).parent / "agent.py").read_text()


def python_of(spec: HostSpec) -> str:
    """The interpreter to run on a host: the inventory's, else a sensible default.

    The local transport defaults to the interpreter running pyku-launch, so
    the embedded localhost inventory works in any virtual environment.
    """
    if spec.python:
        return spec.python
    return sys.executable if spec.transport == "local" else "python3"


def shell_command(spec: HostSpec, command: str) -> str:
    """``bash -l -c '<env> && <command>'``: what every remote step runs.

    A login shell, so the ``module load``/``source`` lines of HPC and lab
    environments work; ``env`` is the user's shell code and runs as written,
    every other value is quoted by the caller.
    """
    inner = f"{spec.env} && {command}" if spec.env else command
    return f"{shlex.quote(spec.shell)} -l -c {shlex.quote(inner)}"


def agent_command(spec: HostSpec) -> str:
    """The shell command that runs the agent program fed on standard input."""
    return shell_command(spec, f"exec {shlex.quote(python_of(spec))} -")


def agent_program(payload: dict) -> str:
    return _AGENT_SOURCE + f"\nmain({json.dumps(json.dumps(payload))})\n"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


class Connection:
    """An open connection to one host; subclasses implement :meth:`run`."""

    def __init__(self, spec: HostSpec):
        self.spec = spec
        self.round_trips = 0

    @property
    def name(self) -> str:
        return self.spec.address

    async def run(self, command: str, input: str | None, timeout: float) -> Result:
        raise NotImplementedError

    async def agent(self, op: str, timeout: float = 60.0, **payload) -> dict:
        """Run one agent operation; return its reply or raise naming the host."""
        program = agent_program({"op": op, **payload})
        self.round_trips += 1
        try:
            res = await asyncio.wait_for(self.run(agent_command(self.spec), program, timeout), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise LaunchError(f"{self.name}: step '{op}' timed out after {timeout:g} s") from None
        except (OSError, EOFError) as e:
            raise LaunchError(f"{self.name}: step '{op}' lost the connection: {e}") from None
        except Exception as e:  # asyncssh.Error: channel refused, connection lost
            if type(e).__module__.startswith("asyncssh"):
                raise LaunchError(f"{self.name}: step '{op}' failed over SSH: {e}") from None
            raise
        for line in reversed(res.stdout.splitlines()):
            if line.startswith(MARK):
                try:
                    reply = json.loads(line[len(MARK):])
                except ValueError:
                    raise LaunchError(f"{self.name}: step '{op}' sent a garbled reply") from None
                if "error" in reply and len(reply) == 1:
                    raise LaunchError(f"{self.name}: step '{op}' failed: {reply['error']}")
                return reply
        # No reply: the shell, env or interpreter failed before the agent ran.
        errs = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
        why = errs[-1] if errs else f"exit code {res.returncode}, no output"
        raise LaunchError(
            f"{self.name}: {why} (while running env={self.spec.env!r} python={python_of(self.spec)!r}; "
            f"fix env/python for this host in the inventory)"
        )

    async def close(self) -> None:
        pass


class LocalConnection(Connection):
    """The machine running pyku-launch, through local subprocesses."""

    async def run(self, command: str, input: str | None, timeout: float) -> Result:
        # exec: the shell becomes the agent, so killing it on a timeout kills the agent.
        proc = await asyncio.create_subprocess_shell(
            f"exec {command}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(input.encode() if input else None), timeout)
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


class SSHConnection(Connection):
    """One asyncssh connection, its channels reused by every step."""

    def __init__(self, spec: HostSpec, conn):
        super().__init__(spec)
        self._conn = conn

    async def run(self, command: str, input: str | None, timeout: float) -> Result:
        res = await self._conn.run(command, input=input, check=False)
        return Result(res.exit_status if res.exit_status is not None else -1, res.stdout or "", res.stderr or "")

    async def close(self) -> None:
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (asyncio.TimeoutError, TimeoutError):
            pass


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
        raise LaunchError(f"{spec.address}: ssh config file {spec.ssh_config} does not exist "
                          f"(fix [ssh] config in the inventory)")
    config = spec.ssh_config or str(Path("~/.ssh/config").expanduser())
    opts["config"] = [config] if Path(config).exists() else []
    return opts


async def _ssh_connect(spec: HostSpec) -> Connection:
    import asyncssh

    from .hostkeys import accept_new, describe_refusal

    opts = connect_options(spec)
    try:
        try:
            conn = await asyncssh.connect(spec.address, **opts)
        except asyncssh.HostKeyNotVerifiable:
            conn = await accept_new(spec, opts) if spec.accept_new else None
            if conn is None:
                raise LaunchError(await describe_refusal(spec, opts)) from None
    except asyncssh.PermissionDenied:
        who = f"{spec.user}@" if spec.user else ""
        key = spec.identity or "the agent/default keys"
        raise LaunchError(
            f"{spec.address}: SSH authentication refused for {who}{spec.address} with {key} "
            f"(check [ssh] user/identity, or the host's authorized_keys)"
        ) from None
    except (OSError, asyncio.TimeoutError, TimeoutError, asyncssh.Error) as e:
        why = str(e) or type(e).__name__
        raise LaunchError(f"{spec.address}: cannot connect over SSH: {why}") from None
    return SSHConnection(spec, conn)


def connection_key(spec: HostSpec) -> tuple:
    """Specs with equal keys share one connection: everything a step depends on."""
    return (spec.transport, spec.address, spec.user, spec.port, spec.identity, spec.known_hosts,
            spec.ssh_config, spec.env, spec.python, spec.shell)


async def open_connections(specs: list[HostSpec]) -> tuple[dict[tuple, Connection], dict[tuple, str]]:
    """Open one connection per distinct host, all at once.

    Returns the open connections and the failures (the message), both by
    :func:`connection_key`. The caller decides whether a failure is fatal;
    it must close the connections either way.
    """
    unique: dict[tuple, HostSpec] = {}
    for s in specs:
        unique.setdefault(connection_key(s), s)

    async def one(spec: HostSpec) -> Connection:
        if spec.transport == "local":
            return LocalConnection(spec)
        return await _ssh_connect(spec)

    keys = list(unique)
    results = await asyncio.gather(*(one(unique[k]) for k in keys), return_exceptions=True)
    conns, failed = {}, {}
    for k, r in zip(keys, results):
        if isinstance(r, Connection):
            conns[k] = r
        elif isinstance(r, LaunchError):
            failed[k] = str(r)
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, LaunchError)]
    if others:  # a bug or a cancellation: close what did open, then raise
        await close_all(conns)
        raise others[0]
    return conns, failed


async def close_all(conns) -> None:
    await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)

