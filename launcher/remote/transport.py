"""Connections to hosts: SSH (asyncssh) or the local machine, one interface.

A :class:`Connection` is opened once per host for a whole command and every
step reuses it. Its one verb, :meth:`Connection.agent`, runs one operation
of :mod:`launcher.agent` on the host and returns the parsed reply. The agent
is one process per connection, started (in a login shell, after the
inventory's ``env`` line) as soon as the connection is open, so its start
overlaps the other hosts' connects; each step is then one request line and
one reply line on its standard input and output. Failures become
:class:`~launcher.errors.LaunchError` messages that name the host.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from launcher.remote.agent import BOOTSTRAP, MARK
from launcher.errors import LaunchError
from launcher.config.inventory import HostSpec

_AGENT_SOURCE = (Path(__file__).parent / "agent.py").read_text()
_LINE_LIMIT = 1 << 24  # a reply line (a log tail, a probe) is far below this

#: ``on_step(address, op, started, ended)``, called after every agent step
#: (``time.perf_counter`` times, failed steps included): the seam that
#: bench/ counts round trips with, passed down from the API functions.
StepHook = Callable[[str, str, float, float], None]


def python_of(spec: HostSpec) -> str:
    """The interpreter to run on a host: the inventory's, else a sensible default.

    The local transport defaults to the interpreter running pyku-launch, so
    the embedded localhost inventory works in any virtual environment.
    """
    if spec.python:
        return spec.python
    return sys.executable if spec.transport == "local" else "python3"


def shell_command(spec: HostSpec, command: str) -> str:
    """``bash -l -c '{ <env>\n} && <command>'``: how the agent is started on a host.

    A login shell, so the ``module load``/``source`` lines of HPC and lab
    environments work (``login_shell = false``: ``bash --norc -c``, so only
    the rc files sshd's own shell read, as for ``ssh host cmd``); ``env`` is the user's shell code and runs as written,
    every other value is quoted by the caller. ``env`` ends with a line break
    inside a group, so whatever its last line is (a ``# comment``, a trailing
    ``;`` or ``&``, a TOML multi-line block, a here-document) it cannot
    swallow or break the command, and the command still runs only if the
    group's last command succeeded (a failed ``source`` is reported, not
    ignored).
    """
    inner = f"{{ {spec.env}\n}} && {command}" if spec.env else command
    return f"{shlex.quote(spec.shell)}{_startup(spec)} -c {shlex.quote(inner)}"


def _startup(spec: HostSpec) -> str:
    """The shell's start-up files: a login shell's (``-l``), or none (``login_shell = false``).

    Without ``--norc`` a ``bash -c`` that sshd's shell execs reads ~/.bashrc
    again (bash takes itself for the top-level shell of an ssh command).
    """
    if spec.login_shell:
        return " -l"
    return " --norc" if spec.shell.rsplit("/", 1)[-1] == "bash" else ""


def agent_command(spec: HostSpec) -> str:
    """The shell command that starts the agent, which reads its program on stdin."""
    return shell_command(spec, f"exec {shlex.quote(python_of(spec))} -S -c {shlex.quote(BOOTSTRAP)}")


class Connection:
    """An open connection to one host and its agent process.

    Subclasses implement :meth:`_start_process`, which returns an object with
    asyncio-like ``stdin`` (``write``, ``drain``), ``stdout`` and
    ``stderr`` (``readline``) byte streams.
    """

    def __init__(self, spec: HostSpec, on_step: StepHook | None = None):
        self.spec = spec
        self.on_step = on_step
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._ready = False          # the agent said hello: shell, env and interpreter worked
        self._dead: str | None = None  # why the agent is gone
        self._proc = None
        self._starting: asyncio.Task | None = None
        self._readers: list[asyncio.Task] = []

    @property
    def name(self) -> str:
        return self.spec.address

    async def _start_process(self, command: str):
        raise NotImplementedError

    @property
    def has_agent(self) -> bool:
        """Whether its agent was started (then a step costs no new session)."""
        return self._starting is not None

    def start_agent(self) -> None:
        """Start the agent in the background; the first step waits for it."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        self._proc = await self._start_process(agent_command(self.spec))
        self._readers = [asyncio.ensure_future(self._read_replies()),
                         asyncio.ensure_future(self._read_stderr())]
        await self._send(json.dumps(_AGENT_SOURCE))

    async def _send(self, line: str) -> None:
        """Write one line to the agent. If the agent has died, the reply
        reader sees its output end and fails the waiting steps, naming why."""
        try:
            self._proc.stdin.write((line + "\n").encode())
            await self._proc.stdin.drain()
        except Exception as e:  # BrokenPipeError, asyncssh's channel errors
            if not (isinstance(e, OSError) or type(e).__module__.startswith("asyncssh")):
                raise

    async def _read_replies(self) -> None:
        try:
            while line := await self._proc.stdout.readline():
                text = line.decode(errors="replace")
                if not text.startswith(MARK):
                    continue  # a login script's chatter
                try:
                    msg = json.loads(text[len(MARK):])
                except ValueError:
                    continue  # not ours after all; a step left unanswered times out
                if msg.get("id") == 0:  # the agent's hello: what the login scripts said is moot
                    self._ready = True
                    self._stderr.clear()
                    continue
                fut = self._pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    fut.set_result(msg.get("reply"))
        except Exception as e:  # the channel broke
            self._stderr.append(str(e) or type(e).__name__)
        # The last words (why the shell or interpreter failed) are on stderr.
        await asyncio.wait([self._readers[1]], timeout=1)
        self._gone()

    async def _read_stderr(self) -> None:
        try:
            while line := await self._proc.stderr.readline():
                if text := line.decode(errors="replace").strip():
                    self._stderr.append(text)
        except Exception:
            pass

    def _gone(self) -> None:
        """The agent's output ended: fail every step still waiting, naming why."""
        if self._ready:
            why = f": {self._stderr[-1]}" if self._stderr else ""
            self._dead = f"the launcher's agent there ended, or the connection dropped{why}"
        else:  # the shell, env or interpreter failed before the agent ran
            why = self._stderr[-1] if self._stderr else "no output"
            self._dead = (f"{why} (while running env={self.spec.env!r} python={python_of(self.spec)!r}; "
                          f"fix env/python for this host in the inventory)")
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LaunchError(self._dead, host=self.name))
        self._pending.clear()

    async def agent(self, op: str, timeout: float = 60.0, **payload) -> dict:
        """Run one agent operation; return its reply or raise naming the host."""
        started = time.perf_counter()
        try:
            return await self._step(op, timeout, payload)
        finally:
            if self.on_step is not None:
                self.on_step(self.spec.address, op, started, time.perf_counter())

    async def _step(self, op: str, timeout: float, payload: dict) -> dict:
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                self.start_agent()
                await asyncio.shield(self._starting)
                if self._dead:
                    raise LaunchError(self._dead, host=self.name)
                self._pending[rid] = fut
                await self._send(json.dumps({"op": op, "id": rid, **payload}))
                reply = await fut
        except TimeoutError:
            raise LaunchError(f"step '{op}' timed out after {timeout:g} s", host=self.name) from None
        except (OSError, EOFError) as e:
            raise LaunchError(f"step '{op}' lost the connection: {e}", host=self.name) from None
        except LaunchError:
            raise
        except Exception as e:  # asyncssh.Error: channel refused, connection lost
            if type(e).__module__.startswith("asyncssh"):
                raise LaunchError(f"step '{op}' failed over SSH: {e}", host=self.name) from None
            raise
        finally:
            self._pending.pop(rid, None)
        if not isinstance(reply, dict):
            raise LaunchError(f"step '{op}' sent a garbled reply", host=self.name)
        if "error" in reply and len(reply) == 1:
            raise LaunchError(f"step '{op}' failed: {reply['error']}", host=self.name)
        return reply

    async def run(self, command: str, op: str, stdin: str | None = None) -> str:
        """Run one shell command in a session of its own, without the agent (no login shell, no
        ``env``); its standard output. ``stdin``: what it reads on its standard input (else none).
        Reported to ``on_step`` as ``op``; a session that could not be had raises LaunchError (the
        caller bounds the time)."""
        started = time.perf_counter()
        try:
            return await self._run(command, stdin)
        except Exception as e:  # OSError, asyncssh.Error
            if isinstance(e, OSError) or type(e).__module__.startswith("asyncssh"):
                raise LaunchError(f"step '{op}' failed: {e}", host=self.name) from None
            raise
        finally:
            if self.on_step is not None:
                self.on_step(self.spec.address, op, started, time.perf_counter())

    async def _run(self, command: str, stdin: str | None = None) -> str:
        raise NotImplementedError

    async def request(self, request, timeout: float = 60.0):
        """Run one typed operation (:mod:`launcher.protocol`); its typed reply."""
        from launcher.remote.protocol import parse_reply

        return parse_reply(request, await self.agent(request.op, timeout, **request.to_json()))

    async def close(self) -> None:
        """End the agent (EOF on its stdin) and the connection."""
        if self._starting is not None:
            if not self._starting.done():
                self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._proc is not None:
            await self._end_process()
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def _end_process(self) -> None:
        raise NotImplementedError


class LocalConnection(Connection):
    """The machine running pyku-launch, through a local subprocess."""

    async def _start_process(self, command: str):
        # exec: the shell becomes the agent. A session of its own: Ctrl-C and a
        # closed terminal reach the launcher, which still needs the agent for
        # its rollback.
        return await asyncio.create_subprocess_shell(
            f"exec {command}", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT, start_new_session=True)

    async def _run(self, command: str, stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        return (await proc.communicate(None if stdin is None else stdin.encode()))[0].decode(errors="replace")

    async def _end_process(self) -> None:
        proc = self._proc
        try:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), 5)
        except (asyncio.TimeoutError, TimeoutError):
            proc.kill()
            await proc.wait()
        except ProcessLookupError:
            pass


class SSHConnection(Connection):
    """One asyncssh connection; the agent runs in one session on it."""

    def __init__(self, spec: HostSpec, conn, on_step: StepHook | None = None):
        super().__init__(spec, on_step)
        self._conn = conn

    async def _start_process(self, command: str):
        return await self._conn.create_process(command, encoding=None)

    async def _run(self, command: str, stdin: str | None = None) -> str:
        return (await self._conn.run(command, check=False, input=stdin)).stdout or ""

    async def _end_process(self) -> None:
        try:
            self._proc.stdin.write_eof()
        except Exception:  # the channel is already gone
            pass

    async def close(self) -> None:
        await super().close()
        self._conn.close()
        try:
            await asyncio.wait_for(self._conn.wait_closed(), 5)
        except (asyncio.TimeoutError, TimeoutError):
            pass


async def _ssh_connect(spec: HostSpec, on_step: StepHook | None) -> Connection:
    from launcher.remote.sshconnect import ssh_connect

    return SSHConnection(spec, await ssh_connect(spec), on_step)


def connection_key(spec: HostSpec) -> tuple:
    """Specs with equal keys share one connection: everything a step depends on."""
    return (spec.transport, spec.address, spec.user, spec.port, spec.identity, spec.known_hosts,
            spec.ssh_config, spec.env, spec.python, spec.shell, spec.login_shell)


async def open_connections(specs: list[HostSpec], on_step: StepHook | None = None, agents: bool = True,
                           ) -> tuple[dict[tuple, Connection], dict[tuple, LaunchError]]:
    """Open one connection per distinct host, all at once.

    ``on_step`` is given to every connection (see :data:`StepHook`).
    ``agents``: start each host's agent at once; else at its first step (a stop may need none).

    Returns the open connections and the failures (the error), both by
    :func:`connection_key`. The caller decides whether a failure is fatal;
    it must close the connections either way.
    """
    unique: dict[tuple, HostSpec] = {}
    for s in specs:
        unique.setdefault(connection_key(s), s)
    if any(s.transport == "ssh" for s in unique.values()):
        from launcher.remote.hostkeys import check_files

        check_files(list(unique.values()))  # one bad key file: one error, before any connect

    async def one(spec: HostSpec) -> Connection:
        conn = LocalConnection(spec, on_step) if spec.transport == "local" else await _ssh_connect(spec, on_step)
        if agents:
            conn.start_agent()  # its login shell and interpreter start while others connect
        return conn

    keys = list(unique)
    results = await asyncio.gather(*(one(unique[k]) for k in keys), return_exceptions=True)
    conns, failed = {}, {}
    for k, r in zip(keys, results):
        if isinstance(r, Connection):
            conns[k] = r
        elif isinstance(r, LaunchError):
            failed[k] = r
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, LaunchError)]
    if others:  # a bug or a cancellation: close what did open, then raise
        await close_all(conns)
        raise others[0]
    return conns, failed


async def close_all(conns) -> None:
    await asyncio.gather(*(c.close() for c in conns.values()), return_exceptions=True)

