"""The remote half of the launcher: one small Python program per host and command.

The launcher never relies on the launcher package being installed on a host.
It starts the host's interpreter once per command and host, in a login shell
after the inventory's ``env`` line, with a fixed one-line bootstrap
(:data:`BOOTSTRAP`) that reads this file's source as the first line of
standard input and runs :func:`serve`, which says hello (so the launcher
can tell a broken ``env`` from an agent that died later). From then on each
step is one request
line (JSON, with an id) on standard input and one reply line prefixed with
:data:`MARK` on standard output: one round trip on a channel that is already
open, so the SSH session, the login shell (``module load``, ``conda
activate``, ``pyenv init`` …) and the interpreter's start are paid once per
host, not once per step. Requests run in threads, so a slow one (a scheduler
being waited for) does not hold up the next. Sending everything on stdin
keeps secrets (TLS keys) out of command lines, process listings and logs.

Only the standard library may be imported here, and only what an operation
needs: a probe must not pay for importing dask.

Processes are started in a session of their own (detached from SSH) with a
random token in their environment, inherited by everything they fork
(nanny, forkserver, workers). ``stop`` and ``status`` find a cluster's
processes by that token, so they end exactly the processes the launcher
started and nothing else, even after the leader has died or a pid was
reused.
"""

import json
import os
import signal
import socket
import stat as _stat
import subprocess
import sys
import threading
import time

MARK = "@@pyku-launch@@ "

# What the host runs (``python -S -c BOOTSTRAP``: no site-packages, nor .pth
# files run, until a probe needs them): read the agent's source from the
# first line of stdin (kept as ``SOURCE``: a spawn writes a copy for the
# nanny's half of a relayed stop), then serve. The trailing comment names
# the process in ``ps``.
BOOTSTRAP = "import sys,json;SOURCE=json.loads(sys.stdin.readline());exec(SOURCE);serve()  # pyku-launch agent"

_out = threading.Lock()


def _reply(rid, reply):
    line = MARK + json.dumps({"id": rid, "reply": reply}) + "\n"
    with _out:
        sys.stdout.write(line)
        sys.stdout.flush()


def _tmpdir():
    """The host's temporary directory: ``$TMPDIR`` (node-local scratch on HPC
    nodes) if it is an absolute path, else /tmp."""
    tmp = os.environ.get("TMPDIR", "")
    return tmp.rstrip("/") or "/" if os.path.isabs(tmp) else "/tmp"


def _subst(text, rundir="", local_directory=""):
    """Fill in the placeholders ``{uid}``, ``{tmpdir}``, ``{rundir}`` and ``{local_directory}``."""
    return (text.replace("{uid}", str(os.getuid())).replace("{tmpdir}", _tmpdir())
            .replace("{rundir}", rundir).replace("{local_directory}", local_directory))


def _expand(path, rundir=""):
    """An absolute path: ``~`` and the placeholders expanded, a relative path
    read against the home directory (the same for every transport: the local
    agent's working directory is wherever pyku-launch was started)."""
    path = os.path.expanduser(_subst(path, rundir))
    return os.path.normpath(os.path.join(os.path.expanduser("~"), path))


def _make_dirs(path, top, policy):
    """Make ``path`` and every missing directory between ``top`` and it, mode 0700.

    ``policy`` says what to do with levels that exist already:
    ``"private"`` (under a shared /tmp, where another user could have made a
    directory or a symlink first): ``top`` and every level below it must be
    a real directory owned by us, and is made 0700; ``"ours"`` (run
    directories under home): levels below ``top`` owned by us are made
    0700; ``"new"`` (a directory the user chose): existing levels are left
    as they are.
    """
    levels = [path]
    while levels[-1] != top and os.path.dirname(levels[-1]) != levels[-1]:
        levels.append(os.path.dirname(levels[-1]))
    if levels[-1] != top:  # ``path`` is not below ``top``: only it is ours to make
        levels = [path]
    elif policy != "private":
        levels.pop()
    for d in reversed(levels):
        try:
            os.mkdir(d, 0o700)
            continue
        except FileExistsError:
            pass
        st = os.lstat(d) if policy == "private" else os.stat(d)
        if policy == "private" and (not _stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid()):
            raise RuntimeError(f"{d} is not a directory owned by uid {os.getuid()}: refusing to use it")
        if policy != "new" and st.st_uid == os.getuid():
            os.chmod(d, 0o700)


TOKEN_VAR = "PYKU_LAUNCH_TOKEN"


def _processes():
    """(pid, parent pid, environment) of this user's live processes, this agent excepted."""
    me, uid = os.getpid(), os.getuid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:  # gone
            continue
        if fields[0] != b"Z":
            yield int(name), int(fields[1]), env


def _members(token, processes=None, prefix=False):
    """Pids of this user's live processes that carry ``token`` in their environment.

    Every process a launch starts gets a random token (one per host and
    role) in its environment, and so do all the processes it forks (nanny,
    forkserver, workers). Finding processes by token cannot mistake a reused
    pid for ours, and finds them even when a spawn's reply was lost.
    ``prefix``: every token that starts with ``token`` (a token starts with
    its cluster's name, so a sweep finds a cluster without its record).
    """
    needle = f"{TOKEN_VAR}={token}".encode()
    processes = processes if processes is not None else _processes()
    if prefix:
        return [pid for pid, _, env in processes if any(e.startswith(needle) for e in env)]
    return [pid for pid, _, env in processes if needle in env]


def _tree(tokens, known=(), prefixes=(), own=False):
    """Every process of these tokens, the still living ``known`` ones, and all their descendants.

    A process a task starts with a fresh environment (``env -i``, a
    ``subprocess`` with ``env={}``) and a session of its own carries no
    token, but it is still a descendant: of its worker, or, once orphaned,
    of the tree's leader, which is a child subreaper (see
    :data:`SUBREAPER`). Walking the parent links before any signal finds it;
    ``known`` keeps what an earlier walk found once its parent is gone.
    ``own``: this process is the tree's leader (a nanny stopping its own
    tree, launcher/remote/treestop.py): its children are the tree's too,
    though the scans never list this process itself.
    """
    processes = list(_processes())
    found = {pid for t in tokens for pid in _members(t, processes)}
    found |= {pid for t in prefixes for pid in _members(t, processes, prefix=True)}
    found |= {pid for pid, _, _ in processes if pid in known}
    children = {}
    for pid, ppid, _ in processes:
        children.setdefault(ppid, []).append(pid)
    if own:
        found |= set(children.get(os.getpid(), ()))
    stack = list(found)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return sorted(found)


# What a spawned process runs first: it makes itself a child subreaper
# (Linux prctl PR_SET_CHILD_SUBREAPER, kept across exec), so that processes
# its tasks start and orphan (a double fork, ``setsid cmd &``) become its
# children instead of init's, where stop's tree walk finds them; then it
# execs the real command, keeping its pid.
SUBREAPER = ("import ctypes, os, sys\n"
             "try:\n"
             "    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)\n"
             "except (OSError, AttributeError):\n"
             "    pass  # not Linux, or no prctl: orphans go to init, stop finds what is still a descendant\n"
             "os.execvp(sys.argv[1], sys.argv[1:])\n")


def _tail(path, n):
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 200 * n - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
    return lines[-n:]


# --------------------------------------------------------------------------
# operations


def _site():
    """sys.path as a normal start of this interpreter has it (the agent starts with -S; a probe needs it)."""
    if sys.flags.no_site and not _site_done:
        import site

        site.main()
        _site_done.append(True)


_site_done = []


def op_probe(p):
    """Versions, source fingerprints, CPUs, memory, free ports, our address."""
    import platform

    _site()

    mem = _meminfo()
    listen = _listen_address(p)
    busy, free_port = _try_ports(listen, p.get("ports", []))
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count()
    cache = _ProbeCache()
    versions = cache.versions(p.get("distributions", []))
    fingerprints = {pkg: cache.fingerprint(pkg) for pkg in p.get("fingerprint", [])}
    providers = cache.providers(p.get("fingerprint", []))
    cache.save()
    return {
            "versions": dict({"python": platform.python_version()}, **versions),
            "fingerprints": fingerprints,
            "providers": providers,
            "cpus": cpus,
            "mem_total": mem.get("MemTotal"),
            "mem_available": mem.get("MemAvailable"),
            "hostname": socket.gethostname(),
            "listen": listen,
            "busy_ports": busy,
            "free_port": free_port,
            "executable": sys.executable,
            "shared": [_shared_dir(d) for d in p.get("shared", [])],
    }


#: Where a host keeps what its probes found, in the user's own launcher directory (0700).
CACHE_DIR = "~/.pyku-launch/cache"


def _stat_key(path):
    """What tells a file or directory changed: mtime_ns, size, inode (None if it is gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


class _ProbeCache:
    """A probe's answers kept on the host, so that the next probe stats instead of reading.

    Versions come from distribution metadata on ``sys.path`` (a scan of
    site-packages per distribution), fingerprints from reading and hashing
    every source file of a package. Both are kept in one file per host,
    interpreter and ``sys.path`` (a home shared by many hosts holds one per
    host), each with the key that proves it current: for versions the
    mtime_ns, size and inode of every ``sys.path`` directory (installing,
    upgrading or removing a distribution adds or removes an entry there);
    for a fingerprint the same of every file of the package, in walk order.
    A changed key recomputes; a cache that cannot be read or written only
    costs the time it would have saved.
    """

    def __init__(self):
        import hashlib

        ident = hashlib.sha256("\0".join([sys.executable, *sys.path]).encode()).hexdigest()[:16]
        self.path = os.path.join(_expand(CACHE_DIR), f"probe-{socket.gethostname()}-{ident}.json")
        self.changed = False
        try:
            with open(self.path) as f:
                self.data = json.load(f)
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}

    def versions(self, distributions):
        old = self.data.get("versions")
        if (isinstance(old, dict) and all(d in old.get("values", {}) for d in distributions)
                and old.get("key") == self._versions_key(old.get("files", []))):
            return {d: old["values"][d] for d in distributions}
        values, files = _versions(distributions)
        self.data["versions"] = {"key": self._versions_key(files), "files": files, "values": values}
        self.changed = True
        return values

    @staticmethod
    def _versions_key(files):
        """Every ``sys.path`` directory (an entry added or removed) and the metadata files read (edited)."""
        return [[d, _stat_key(d or ".")] for d in sys.path] + [[f, _stat_key(f)] for f in files]

    def fingerprint(self, pkg):
        root = _package_dir(pkg)
        if root is None:
            return None
        files = list(_source_files(root))
        key = [root] + [[rel, _stat_key(full)] for rel, full in files]
        old = self.data.setdefault("fingerprints", {}).get(pkg)
        if isinstance(old, dict) and old.get("key") == key:
            return old["value"]
        value = _fingerprint_files(files)
        self.data["fingerprints"][pkg] = {"key": key, "value": value}
        self.changed = True
        return value

    def providers(self, pkgs):
        """:func:`_providers`, kept while no ``sys.path`` directory or package directory changed."""
        key = self._versions_key([]) + [[pkg, _package_dir(pkg)] for pkg in pkgs]
        old = self.data.get("providers")
        if isinstance(old, dict) and old.get("key") == key:
            return old["value"]
        value = _providers(pkgs)
        self.data["providers"] = {"key": key, "value": value}
        self.changed = True
        return value

    def save(self):
        if not self.changed:
            return
        tmp = f"{self.path}.{os.getpid()}.{threading.get_ident()}"
        try:
            _make_dirs(os.path.dirname(self.path), os.path.expanduser("~"), "ours")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(self.data, f)
            os.replace(tmp, self.path)  # concurrent probes: the last complete file wins
        except OSError:
            try:
                os.remove(tmp)
            except OSError:
                pass
def _shared_dir(d):
    """One shared directory, as this host sees it (launcher/verbs/shared_dirs.py).

    ``d``: ``path``, ``read`` (the file the client wrote there) and its
    ``token``, ``write`` (this host's file, for the client to read). Replies
    ``error`` (missing, not a directory, not writable), ``seen`` (the
    client's token read back) and ``free`` bytes. This host's file stays only
    where the client can remove it: in a directory that showed its token.
    """
    path, out = d["path"], {"path": d["path"]}
    try:
        st = os.statvfs(path)
        if not os.path.isdir(path):
            return dict(out, error="is not a directory")
        out["free"] = st.f_bavail * st.f_frsize
        own = os.path.join(path, d["write"])
        with open(own, "w") as f:
            f.write(d["token"])
    except OSError as e:
        return dict(out, error=e.strerror or str(e))
    try:
        with open(os.path.join(path, d["read"])) as f:
            out["seen"] = f.read() == d["token"]
    except OSError:
        out["seen"] = False
    if not out["seen"]:
        os.remove(own)
    return out


def _versions(distributions):
    """Installed version of each distribution (None if missing), and the metadata files they came from."""
    from importlib import metadata

    versions, files = {}, []
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
            continue
        versions[name] = dist.version
        where = getattr(dist, "_path", None)  # its .dist-info / .egg-info (a PathDistribution)
        if where is not None:
            files += [str(where)] + [os.path.join(str(where), f) for f in ("METADATA", "PKG-INFO")]
    return versions, files


def _package_dir(pkg):
    """The directory ``import pkg`` would load (``find_spec``: located, not imported), None if missing."""
    from importlib import util

    spec = util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def _fingerprint(pkg):
    """A hash of an importable package's source files (not its version), None if missing."""
    root = _package_dir(pkg)
    return None if root is None else _fingerprint_dir(root)


def _providers(pkgs):
    """Which installed distribution each importable package of ``pkgs`` comes from: ``"name version"``.

    The same package name can come from different distributions (DWD's
    ``pyku`` or the launcher's ``pyku-bundled``), so the preflight names the
    one each host imports. Several owners are joined with `` + `` (one's
    files written over the other's: a broken mix); ``"from DIR"`` when no
    distribution owns the directory (a checkout on ``PYTHONPATH``); None if
    the package is not importable. One pass over the dist-info files, read
    as text (no stat of every installed file).
    """
    from importlib import metadata

    roots = {pkg: _package_dir(pkg) for pkg in pkgs}
    owners = {pkg: [] for pkg in pkgs}
    for dist in metadata.distributions():
        try:
            top = dist.read_text("top_level.txt")
            wanted = [p for p, root in roots.items() if root is not None and (top is None or p in top.split())]
            record = dist.read_text("RECORD") or "" if wanted else ""
            for pkg in wanted:
                if _owns(dist, record, pkg, roots[pkg]):
                    owner = f"{dist.metadata['Name']} {dist.version}"
                    owners[pkg] += [owner] if owner not in owners[pkg] else []
        except (OSError, ValueError, UnicodeDecodeError):  # an unreadable dist-info: not the one
            continue
    return {pkg: None if root is None else " + ".join(owners[pkg]) or f"from {root}"
            for pkg, root in roots.items()}


def _owns(dist, record, pkg, root):
    """Whether distribution ``dist`` (its RECORD text ``record``) installed the directory ``root`` of ``pkg``.

    A regular install lists the package's files; an editable one lists only
    its import hook: a ``.pth`` file naming the parent directory, or a
    setuptools finder whose mapping names the directory.
    """
    if f"\n{pkg}/" not in "\n" + record and "__editable__" not in record:  # the common case, fast
        return False
    real = os.path.realpath(root)
    for line in record.splitlines():
        path = line.rsplit(",", 2)[0]
        first = path.split("/", 1)[0]
        if first == pkg and path.endswith(".py"):
            return os.path.realpath(str(dist.locate_file(path))).startswith(real + os.sep)
        if first.startswith("__editable__") and path.endswith((".pth", "_finder.py")):
            text = dist.locate_file(path).read_text()
            if repr(root) in text or repr(real) in text or os.path.dirname(root) in text.splitlines():
                return True
    return False


def _source_files(root):
    """(path relative to ``root``, full path) of a package's files in a fixed order, no bytecode."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith((".pyc", ".pyo")):
                full = os.path.join(dirpath, fn)
                yield os.path.relpath(full, root), full


def _fingerprint_dir(root):
    """A hash of the source files (not the version) of the package whose directory is ``root``."""
    return _fingerprint_files(_source_files(root))


def _fingerprint_files(files):
    import hashlib

    h = hashlib.sha256()
    for rel, full in files:
        h.update(rel.encode() + b"\0")
        with open(full, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def _meminfo():
    mem = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                mem[key] = int(rest.split()[0]) * 1024
    return mem


def _listen_address(p):
    """The inventory's listen address, else the one this host was reached on over SSH."""
    # (Not for the local transport: there SSH_CONNECTION is the user's own login.)
    ssh_conn = os.environ.get("SSH_CONNECTION", "").split() if p.get("over_ssh") else []
    reached = ssh_conn[2] if len(ssh_conn) == 4 else None
    return p.get("listen") or reached or p.get("address")


def _try_ports(listen, ports):
    """(busy ports, a free port if 0 was asked for), by binding as the scheduler will."""
    busy, free_port = [], None
    # Port 0 asks for a free port: the launch then knows the scheduler's
    # address before starting it, and starts the workers at once.
    for port in ports:
        s = socket.socket(socket.AF_INET6 if ":" in listen else socket.AF_INET)
        # As the scheduler will: TIME_WAIT leftovers of a previous run do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((listen, port))
            if port == 0 and free_port is None:
                free_port = s.getsockname()[1]
        except OSError:
            busy.append(port)
        finally:
            s.close()
    return busy, free_port


def op_spawn(p):
    """Start one detached process tree; optionally wait for a file it writes.

    Files in ``p["files"]`` (TLS material) are written first with mode 0600
    into the run directory (mode 0700).
    """
    if p.get("fresh"):  # a launch: the run directory's last logs go with the cluster it was
        _remove(_expand(p["rundir"]))
    rundir, local_directory = _prepare_rundir(p)
    shipped = _unpack(rundir, p.get("archives", {}))
    wait_file = p.get("wait_file") and os.path.join(rundir, p["wait_file"])
    if wait_file and os.path.exists(wait_file):
        os.remove(wait_file)

    log = os.path.join(rundir, p["log"])
    env = dict(os.environ, **{k: _subst(v, rundir, local_directory) for k, v in p.get("env", {}).items()})
    env[TOKEN_VAR] = p["token"]
    if shipped:  # the shipped packages come first on the path
        env["PYTHONPATH"] = os.pathsep.join(x for x in (os.path.join(rundir, "ship"), env.get("PYTHONPATH")) if x)
    # -S: the subreaper step needs no site-packages (nor .pth files run): ~0.05 CPU-s less per tree.
    # ``leader``: a leader that cleans up when its tree ends by itself (launcher/remote/leader.py, stdlib only)
    argv = [sys.executable, "-S", "-c", p.get("leader") or SUBREAPER] + [_subst(a, rundir, local_directory)
                                                                         for a in p["argv"]]
    logf = open(log, "ab")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=rundir,
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    logf.close()
    _spawned[p["token"]] = (proc.pid, _start_time(proc.pid))
    result = {"pid": proc.pid, "log": log, "rundir": rundir, "local_directory": local_directory or None,
              "shipped": shipped}
    if wait_file:
        result.update(_wait_for_file(proc, wait_file, log, p))
    return result


def _unpack(rundir, archives):
    """Unpack shipped packages (name -> base64 tar.gz) into ``rundir/ship``; their fingerprints.

    Each is unpacked beside its target first; a target that already holds
    the same files is left as it is (a Slurm pool's running jobs import from
    it while another chain is submitted), else it is replaced by the new copy.
    """
    import shutil

    out = {}
    for name, data in archives.items():
        target = os.path.join(rundir, "ship", name)
        fresh = os.path.join(rundir, "ship", f".{name}.new")
        shutil.rmtree(fresh, ignore_errors=True)
        os.makedirs(fresh, mode=0o700)
        _extract(name, data, fresh)
        out[name] = _fingerprint_dir(fresh)
        if os.path.isdir(target) and _fingerprint_dir(target) == out[name]:
            shutil.rmtree(fresh)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.rename(fresh, target)
    return out


def _extract(name, data, target):
    """Extract one shipped package's base64 tar.gz into ``target``: plain files and directories only."""
    import base64
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(data)), mode="r:gz") as tar:
        for m in tar.getmembers():
            if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in m.name.split("/"):
                raise ValueError(f"shipped {name}: refusing archive member {m.name!r}")
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)


def _prepare_rundir(p):
    """The run directory with its files (0600) in place, and the spill space; both absolute.

    Every level of the run directory below home (``~/.pyku-launch``, its
    cluster, the run directory) is 0700. The workers' spill space is resolved
    here once, for all that use it.
    """
    rundir = _expand(p["rundir"])
    _make_dirs(rundir, os.path.expanduser("~"), "ours")
    local_directory = ""
    if "local_directory" in p:
        local_directory = _expand(p["local_directory"])
        if p.get("private_top"):  # under a shared temporary directory
            _make_dirs(local_directory, _expand(p["private_top"]), "private")
        else:  # the user's own; its existing parents are left as they are
            _make_dirs(local_directory, "/", "new")
    files = dict(p.get("files", {}))
    if p.get("agent_copy"):  # this agent's own source (launcher/remote/treestop.py runs its op_stop)
        files[p["agent_copy"]] = globals().get("SOURCE") or open(__file__).read()
    for name, content in files.items():
        path = os.path.join(rundir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        os.chmod(path, 0o600)
    return rundir, local_directory


def _wait_for_file(proc, wait_file, log, p):
    """``{"wait_file": <its JSON>}`` once written, else ``error`` and ``log_tail``."""
    timeout = p.get("wait_timeout", 30)
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(wait_file):
            try:
                with open(wait_file) as f:
                    return {"wait_file": json.load(f)}
            except ValueError:
                pass  # being written
        if proc.poll() is not None:
            return {"error": f"exited with code {proc.returncode}", "log_tail": _tail(log, 60)}
        if time.monotonic() > deadline:
            return {"error": f"did not write {p['wait_file']} within {timeout} s", "log_tail": _tail(log, 60)}
        time.sleep(0.05)


def op_status(p):
    """How many processes of each token are alive.

    A tree this agent spawned is counted from its leader down
    (/proc/<pid>/task/*/children, then the environment of those only), as
    long as the leader lives: it is a child subreaper, so every process of
    its tree stays its descendant. That is what a launch asks every 2 s
    while it waits; other trees need a scan of every process.
    """
    out, processes = {}, None
    for token in p["tokens"]:
        count = _count_from_leader(token)
        if count is None:
            processes = processes if processes is not None else list(_processes())
            count = len(_members(token, processes))
        out[token] = count
    return {"alive": out}


_spawned = {}  # token -> (leader pid, its start time): the trees this agent started


def _count_from_leader(token):
    """Live processes of a tree this agent spawned, by walking from its leader; None if that cannot be done."""
    pid, born = _spawned.get(token, (None, None))
    if pid is None or _start_time(pid) != born:
        return None
    needle = f"{TOKEN_VAR}={token}".encode()
    count, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/environ", "rb") as f:
                count += needle in f.read().split(b"\0")
            for tid in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    stack += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if current == pid:
                return None  # no children files (an old kernel), or the leader just went: scan
        except OSError:
            continue  # a child that went meanwhile
    return count


def op_stop(p):
    """End every process carrying one of the tokens (or a token starting with
    one of the ``prefixes``), and their descendants; verify, remove run files.

    SIGTERM first so nannies close their workers cleanly, SIGKILL for what is
    left after ``grace`` seconds; returns only when none of them is left (or
    reports the survivors). ``own``: run by the tree's leader itself (a
    nanny, launcher/remote/treestop.py): its children count too.
    """
    tokens, prefixes = p.get("tokens", []), p.get("prefixes", [])
    grace = p.get("grace", 3.0)
    seen = set()

    def members():
        found = _tree(tokens, seen, prefixes, own=bool(p.get("own")))
        seen.update(found)  # kept: once its parent dies, a tokenless descendant is an orphan
        return found

    found = members()
    initial = len(found)
    left = _end(found, signal.SIGTERM, time.monotonic() + grace, members)
    killed = 0
    if not left and p.get("settle"):
        # A launcher that died mid-spawn may have agents still starting
        # processes with these tokens: look again after they had time to.
        time.sleep(p["settle"])
        left = members()
        initial += len(left)
    if left:
        killed = len(left)
        left = _end(left, signal.SIGKILL, time.monotonic() + 5, members)

    # A namesake launched from another state directory (other tokens, same
    # directories) keeps its files: a sweep removes them only if none runs.
    shared = bool(p.get("keep_if_running") and _members(p["keep_if_running"], prefix=True))
    removed = _remove_files(p) if not left and not shared else []
    return {"found": initial, "killed": killed, "left": left, "removed": removed, "kept": shared}


def _start_time(pid):
    """The start time of a live process (not a zombie), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in (b"Z", b"X") else fields[19]


def _end(pids, sig, until, members):
    """Send ``sig`` to ``pids`` and wait until they are gone, or ``until``; what is left then.

    While waiting only the known pids are looked at (a read of their
    /proc/<pid>/stat, same start time = same process): a full scan
    (``members``: every process's environment and the parent links) costs
    far more, on a host of many processes and with many agents stopping at
    once. The full scan is made when the known ones are gone, and again
    0.1 s after an empty one: two empty scans prove nothing is left, and what
    a scan finds (a process forked meanwhile, or started again and again by
    something outside the cluster) gets the signal too and is waited for.
    """
    born = {}
    while True:
        for pid in pids:
            if pid not in born:
                born[pid] = _start_time(pid)
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        while pids and time.monotonic() < until:
            pids = [pid for pid in pids if born[pid] is not None and _start_time(pid) == born[pid]]
            if pids:
                time.sleep(0.05)
        pids = members()
        if not pids:  # one more look: what something keeps starting again has had time to show
            time.sleep(0.1)
            pids = members()
            if not pids:
                return []
        if time.monotonic() >= until:
            return pids
        born = {pid: t for pid, t in born.items() if pid not in pids}  # a reused pid is a new process


def _remove_files(p):
    """Remove a stop's ``remove`` paths (but what matches ``keep``), then its ``prune`` directories
    if empty; the removed ones."""
    import fnmatch

    removed = []
    for path in p.get("remove", []):
        path = _expand(path)
        if os.path.lexists(path):
            _remove(path)
            removed.append(path)
    for path in p.get("empty", []):  # run directories whose logs stay (a post-mortem)
        path = _expand(path)
        if os.path.isdir(path) and not os.path.islink(path):
            for name in os.listdir(path):
                if not any(fnmatch.fnmatch(name, k) for k in p.get("keep", [])):
                    _remove(os.path.join(path, name))
            removed.append(path)
    # Parents shared with other clusters or hosts go only when empty.
    for path in p.get("prune", []):
        try:
            os.rmdir(_expand(path))
        except OSError:
            pass
    return removed


def _remove(path):
    import shutil

    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def op_logs(p):
    """The last ``n`` lines of each file in the run directory matching ``*.log``."""
    rundir = _expand(p["rundir"])
    out = {}
    try:
        names = sorted(n for n in os.listdir(rundir) if n.endswith(".log"))
    except OSError:
        names = []
    for name in names:
        out[name] = _tail(os.path.join(rundir, name), p.get("n", 20))
    return {"logs": out}


def op_put(p):
    """Rewrite files (0600) in an existing run directory (the revocation list)."""
    if not os.path.isdir(_expand(p["rundir"])):
        return {"written": []}
    _prepare_rundir(p)
    return {"written": sorted(p["files"])}


def op_run(p):
    """Run one shell command (a batch system's sbatch, squeue, scancel) and return its output.

    With ``rundir``, the command runs there, after ``files`` are written
    into it (0600, the directory 0700, as for a spawn) and ``archives``
    (shipped packages) unpacked into its ``ship/``: a job script, the TLS
    material and the packages it points to reach the login host on stdin,
    never in an argument. The command is the launcher's own (its values quoted);
    it runs in this agent's environment, the inventory's ``env`` applied.
    """
    cwd = _prepare_rundir(p)[0] if p.get("rundir") else None
    shipped = _unpack(cwd, p.get("archives", {})) if cwd else {}
    try:
        done = subprocess.run(["/bin/sh", "-c", p["command"]], cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=p.get("seconds", 30))
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": f"timed out after {p.get('seconds', 30)} s"}
    limit = 1 << 20
    return {"rc": done.returncode, "stdout": done.stdout.decode("utf-8", "replace")[-limit:],
            "stderr": done.stderr.decode("utf-8", "replace")[-8192:], "shipped": shipped}


OPS = {"probe": op_probe, "spawn": op_spawn, "status": op_status, "stop": op_stop, "logs": op_logs,
       "put": op_put, "run": op_run}


def _answer(request):
    try:
        reply = OPS[request["op"]](request)
    except Exception as e:  # reported to the launcher, which names the host
        reply = {"error": f"{type(e).__name__}: {e}"}
    try:
        _reply(request.get("id"), reply)
    except (OSError, ValueError):
        pass  # the launcher has gone: nobody to tell


def serve():
    """Answer request lines from stdin, each in a thread of its own, until EOF.

    EOF means the launcher closed the channel (or died): the agent exits,
    and with it any request still running; whatever that request had
    already started carries its token and is found by the next ``stop``.
    Terminal signals (Ctrl-C reaches the whole foreground process group of a
    local launch) are ignored so that the launcher's rollback can still use
    this agent; a Python handler, unlike SIG_IGN, is not inherited by the
    processes the agent starts.
    """
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: None)
    _reply(0, {"ready": True})  # the shell, env and interpreter worked
    for line in sys.stdin:
        if line.strip():
            threading.Thread(target=_answer, args=(json.loads(line),), daemon=True).start()
