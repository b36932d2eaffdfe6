"""The leader of a process tree that cleans up after itself (a cluster that stops by itself).

Sent as source in the spawn payload (``leader``) and run by the agent in
place of its :data:`launcher.remote.agent.SUBREAPER`: like it, the leader
makes itself a child subreaper first; unlike it, it does not exec the real
command but forks it and waits. When the command has ended (the scheduler
closed on ``idle_timeout``, the workers closed with it, or a crash), the
leader waits for what the tree orphaned (it is their subreaper: they are
its children), ends what is still there after a grace (SIGTERM, then
SIGKILL: only its own children), then removes the tree's run files but the
logs, and its default spill directory, and exits with the command's code.
So a cluster stopped by its scheduler leaves no process and no files but
its logs on any host, with no launcher running. ``pyku-launch stop`` ends
the leader like any process of the tree and removes the files itself.

What to remove comes in ``$PYKU_LAUNCH_CLEANUP`` (JSON, the agent fills in
``{rundir}`` and ``{local_directory}``): ``rundir`` (emptied but for
``keep`` patterns), ``spill`` (removed with its two parents if empty),
``prune`` (removed if empty).
"""

LEADER = r'''
import ctypes, fnmatch, json, os, shutil, signal, sys, time
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)
except (OSError, AttributeError):
    pass
plan = json.loads(os.environ.pop("PYKU_LAUNCH_CLEANUP", "{}"))
child = os.fork()
if child == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
code = 1
_, status = os.waitpid(child, 0)
code = os.waitstatus_to_exitcode(status)

def orphans():
    me, out = str(os.getpid()), []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if pid.isdigit() and f.read().rsplit(b")", 1)[1].split()[1].decode() == me:
                    out.append(int(pid))
        except (OSError, IndexError):
            pass
    return out

ended = time.monotonic()
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    left = orphans()
    if not left:
        break
    waited = time.monotonic() - ended
    if waited > 5:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL if waited > 10 else signal.SIGTERM)
            except OSError:
                pass
    time.sleep(0.1)

def expand(path):
    return os.path.expanduser(path) if path else path

rundir = expand(plan.get("rundir"))
if rundir and os.path.isdir(rundir):
    for name in os.listdir(rundir):
        if not any(fnmatch.fnmatch(name, k) for k in plan.get("keep", [])):
            full = os.path.join(rundir, name)
            try:
                (shutil.rmtree if os.path.isdir(full) and not os.path.islink(full) else os.remove)(full)
            except OSError:
                pass
spill = expand(plan.get("spill"))
prune = [expand(p) for p in plan.get("prune", [])]
if spill:
    shutil.rmtree(spill, ignore_errors=True)
    prune = [os.path.dirname(spill), os.path.dirname(os.path.dirname(spill))] + prune
for path in prune:
    try:
        os.rmdir(path)
    except OSError:
        pass
sys.exit(code)
'''
