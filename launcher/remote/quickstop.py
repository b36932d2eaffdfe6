"""A host's ``stop`` without the agent: one POSIX sh script, run in the SSH session directly.

Why: the agent costs a login shell (its rc files: ``module load``,
``conda``/``pyenv init``, twice with ``bash -l``) and a Python start, 0.3–0.5
CPU-s per host measured here (bench/README.md, section 10), while ending a
healthy tree needs a signal, a wait and a look at /proc. This script is run
as ``exec /bin/sh -c SCRIPT`` by the user's shell (no login shell, no
``env``, no interpreter) and does what the agent's ``stop``
(:func:`launcher.remote.agent.op_stop`) does in the common case, with the
same proof:

1. a *scan*: the user's own processes carrying one of the tokens (``grep -z``
   over ``/proc/*/environ``) and their live children; a scan that does not
   also find the script itself (its environment carries a nonce of its own,
   ``$PYKU_QUICKSTOP_SELF``) proves nothing: grep could not run (a host of so
   many processes that their paths pass ``ARG_MAX``...), and the agent decides; a child without a token
   (what a task started with a fresh environment) is left to the agent,
   whose tree walk remembers such processes across signals;
2. SIGTERM to what the scan found; wait for those pids (their ``stat``,
   same start time) at most ``grace``; scan again, signal what is new;
3. two empty scans 0.1 s apart: nothing of the trees is left. Only then
   the run files go (``remove``, ``empty`` but ``keep``, ``prune``), as the
   agent removes them.

Whatever it cannot prove or do it leaves to the agent, saying why in its
last line: survivors after the grace (the agent goes on with SIGKILL), a
tokenless child, or a host where the script cannot work (no ``grep -z``, no
fractional ``sleep``, no ``/proc/PID/task/*/children``; checked before any
signal). A request it does not handle (a sweep by prefix, ``settle``, a
path only the host can resolve) never gets here: :func:`resolved`. The
paths it removes are absolute: the launcher resolves them with the home
directory the tree's spawn reported (``HostRecord.home``), since the
script runs without the inventory's ``env`` (which may set ``HOME``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import re
import secrets
import shlex

from launcher.remote.agent import TOKEN_VAR
from launcher.remote.protocol import Stop

MARK = "@@pyku-quickstop@@"
POLL = 0.05  # seconds between looks at the signalled pids, as the agent's ``_end``

SCRIPT = r"""
M=@@pyku-quickstop@@
out() { echo "$M $*"; exit 0; }
ticks=$1; shift
[ -r /proc/$$/task/$$/children ] || out agent 0 no-proc-children
printf 'x\000T=y\000' | grep -qzxF -e T=y 2>/dev/null || out agent 0 no-grep-z
sleep 0.01 2>/dev/null || out agent 0 no-fractional-sleep
unset TOKEN_VAR  # a launcher run from a cluster's task: this script and its grep are none of the trees
# Every scan must find this script itself (its own environment has SELF_VAR, its children's do
# not): an empty answer from a grep that could not run is not "nothing left".
me=${SELF_VAR:-}; unset SELF_VAR
[ -n "$me" ] || out agent 0 no-self-mark
pat="-e SELF_VAR=$me"; for a; do case $a in t:*) pat="$pat -e TOKEN_VAR=${a#t:}";; esac; done
rw=; ro=  # a stop relayed by the scheduler (launcher/remote/relay.py): its request (on stdin), its answer
for a; do case $a in w:*) rw=${a#w:} ;; o:*) ro=${a#o:} ;; esac; done
if [ -n "$rw" ]; then
  rm -f -- "$ro"
  (umask 077; cat > "$rw") 2>/dev/null || out agent 0 relay-request
fi
rp=') '
st=
stt() {  # st: start time of live process $1, empty if gone or a zombie
  st=; s=; { read -r s < "/proc/$1/stat"; } 2>/dev/null
  s=${s##*"$rp"}; set -- $s
  case ${1:-Z} in Z|X) ;; *) st=${20:-} ;; esac
}
scan() {  # found: live processes with a token; stray: a live child of theirs without one
  found=; stray=; seen_me=
  for f in $(grep -lzxF $pat /proc/[0-9]*/environ 2>/dev/null); do
    f=${f#/proc/}; f=${f%/environ}
    if [ "$f" = $$ ]; then seen_me=1; continue; fi
    [ -O "/proc/$f" ] || continue  # only the user's own processes, as the agent's scan
    found="$found $f"
  done
  [ -n "$seen_me" ] || out agent $n scan-failed
  for p in $found; do
    for c in /proc/$p/task/*/children; do
      kids=; { read -r kids < "$c"; } 2>/dev/null
      for k in $kids; do
        case " $found " in *" $k "*) continue ;; esac
        stt "$k"; [ -n "$st" ] && stray=$k
      done
    done
  done
}
n=0; watch=; i=0; quiet=0
while :; do
  scan
  [ -n "$stray" ] && out agent $n stray
  if [ -z "$found" ]; then
    [ $quiet = 1 ] && break
    quiet=1; sleep 0.1; continue
  fi
  quiet=0
  for p in $found; do
    case " $watch " in *" $p:"*) continue ;; esac
    stt "$p"; [ -n "$st" ] || continue
    watch="$watch $p:$st"; n=$((n + 1)); kill -TERM "$p" 2>/dev/null
  done
  while [ -n "$watch" ]; do
    left=
    for w in $watch; do stt "${w%%:*}"; [ "$st" = "${w#*:}" ] && left="$left $w"; done
    watch=$left
    [ -z "$watch" ] && break
    [ $i -ge "$ticks" ] && out agent $n grace
    i=$((i + 1)); sleep POLL
  done
done
[ -n "$ro" ] && [ -f "$ro" ] && { printf '%s relay ' "$M"; tr -d '\n' < "$ro"; echo; }
for a; do case $a in r:*) rm -rf -- "${a#r:}" ;; esac; done
for a; do
  case $a in e:*) ;; *) continue ;; esac
  d=${a#e:}
  [ -d "$d" ] && [ ! -L "$d" ] || continue
  for f in "$d"/* "$d"/.[!.]* "$d"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    b=${f##*/}; keep=
    for k; do case $k in k:*) case $b in ${k#k:}) keep=1 ;; esac ;; esac; done
    [ -n "$keep" ] || rm -rf -- "$f"
  done
done
for a; do case $a in p:*) rmdir -- "${a#p:}" 2>/dev/null ;; esac; done
out gone $n
""".replace("TOKEN_VAR", TOKEN_VAR).replace("SELF_VAR", "PYKU_QUICKSTOP_SELF").replace("POLL", str(POLL))

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9._:-]+")


@dataclasses.dataclass
class Outcome:
    """What the script did: ``gone`` (proven, files removed) or not, the processes it signalled, why not."""

    gone: bool
    signalled: int
    why: str = ""


def resolved(request: Stop, home: str | None) -> Stop | None:
    """``request`` with its paths as the agent would resolve them on a host whose ``~`` is ``home``
    (:func:`launcher.remote.agent._expand`); None where the script would not do what the agent does
    (then ask the agent): a sweep by prefix, ``settle``, ``home`` unknown, a path with a placeholder
    the host resolves (``{tmpdir}``: a tree whose spawn never replied) or a ``~user``."""
    if request.prefixes or request.keep_if_running or request.settle or not request.tokens:
        return None
    if not isinstance(home, str) or not home.startswith("/"):  # unknown, or a record edited by hand
        return None
    if not all(_SAFE_TOKEN.fullmatch(t) for t in request.tokens) or any("\n" in k for k in request.keep):
        return None
    paths = {p: _absolute(p, home) for p in [*request.remove, *request.empty, *request.prune]}
    if None in paths.values():
        return None
    return dataclasses.replace(request, remove=[paths[p] for p in request.remove],
                               empty=[paths[p] for p in request.empty], prune=[paths[p] for p in request.prune])


def _absolute(path: str, home: str) -> str | None:
    if "{" in path or "\n" in path or not path.strip() or (path.startswith("~") and path[:2] not in ("~", "~/")):
        return None
    if path.startswith("~"):
        path = path[2:]
    return posixpath.normpath(posixpath.join(home, path))


def command(request: Stop, relay: Relay | None = None) -> str:
    """The shell command that runs the script for ``request`` (every value quoted).

    ``relay``: this host runs the scheduler, which is to relay the stop to
    the nannies (launcher/remote/relay.py): the script writes the request
    (``relay.request_json()``, given on its standard input: an argument is
    limited to 128 KiB) into the scheduler's run directory before its
    SIGTERM, and prints the answer once the scheduler's tree is gone
    (:func:`parse_relay`).
    """
    ticks = max(0, math.ceil(request.grace / POLL))
    args = ([str(ticks)] + [f"t:{t}" for t in request.tokens] + [f"r:{p}" for p in request.remove]
            + [f"e:{p}" for p in request.empty] + [f"k:{k}" for k in request.keep]
            + [f"p:{p}" for p in request.prune])
    if relay is not None:
        args += [f"w:{relay.request_path}", f"o:{relay.out_path}"]
    # A mark of its own in the script's environment (a nonce: stops of other clusters run beside it).
    return (f"exec env PYKU_QUICKSTOP_SELF={secrets.token_hex(8)} /bin/sh -c "
            + shlex.join([SCRIPT, "pyku-launch-stop", *args]))


@dataclasses.dataclass
class Relay:
    """A stop the scheduler relays to the nannies: per tree token, the agent's ``stop`` payload
    (:func:`resolved`: absolute paths) and its workers' names (whose nannies are asked), and where
    its request and answer go in the scheduler's run directory (absolute)."""

    trees: dict[str, Stop]
    rundir: str
    budget: float
    names: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # token -> its workers' names
    nonce: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))

    @property
    def request_path(self) -> str:
        return posixpath.join(self.rundir, "stop-relay.json")

    @property
    def out_path(self) -> str:
        return posixpath.join(self.rundir, "stop-relay.out.json")

    def request_json(self) -> str:
        trees = {t: {"op": "stop", **r.to_json(), "names": self.names.get(t, [])} for t, r in self.trees.items()}
        return json.dumps({"nonce": self.nonce, "budget": self.budget, "trees": trees}, separators=(",", ":"))


def parse_relay(stdout: str, relay: Relay) -> dict[str, dict]:
    """token -> the nanny's stop reply, for the trees the scheduler proved gone (answered with nothing
    left, then its process exited); an answer of another stop (its nonce) or garbled: none."""
    prefix = f"{MARK} relay "
    for line in stdout.splitlines():
        if line.startswith(prefix):
            try:
                out = json.loads(line[len(prefix):])
                trees = out["trees"] if out.get("nonce") == relay.nonce else {}
                return {t: a for t, a in trees.items()
                        if t in relay.trees and isinstance(a, dict) and a.get("exited") and a.get("left") == []}
            except (ValueError, KeyError, TypeError, AttributeError):
                return {}
    return {}


def parse(stdout: str) -> Outcome | None:
    """The script's last words; None if it did not get to say them (then the agent decides)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK + " "):
            words = line[len(MARK) + 1:].split()
            if len(words) >= 2 and words[0] in ("gone", "agent") and words[1].isdigit():
                return Outcome(words[0] == "gone", int(words[1]), " ".join(words[2:]))
            return None
    return None
