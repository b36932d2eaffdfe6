"""Cache keys of :func:`pyku.compute.persistent_processing` (module formerly ``pyku.fingerprint``).

An output may be reused only if it came from the same input bytes and the
same processing code.  The key therefore covers

* the input: its absolute path, size, mtime and a blake2b hash of its whole
  content (sampling would let two files that differ only in the middle
  collide).  The hash is remembered in a small sidecar file next to the
  outputs together with the stat identity it holds for (path, size,
  mtime_ns, ctime_ns, inode), so a re-run of a finished collection costs one ``stat``
  and one tiny read per input instead of reading every input again;
* the function: its bytecode, constants, defaults, closure values and the
  globals it uses — recursively for functions, following ``mod.attr`` for
  the user's own modules — and every other captured value by value through
  :func:`dask.base.tokenize` (dataclasses such as a :class:`pyku.Grid`,
  paths, numpy arrays, pandas objects, anything picklable).  An edit to
  ``func``, to a helper or to a captured setting recomputes, while comments
  and formatting do not.  Library code (the standard library, installed
  packages, pyku itself) counts by name and version, not by its code.

Limits: a module reached other than as a global name (imported inside the
function, passed in a closure or an argument) counts by name only, so an
edit to that module's functions is not seen; values that cannot be
serialised deterministically (locks, open files, clients) count by type,
with a warning.
"""

from __future__ import annotations

import dis
import functools
import hashlib
import importlib.resources
import json
import os
import site
import socket
import sys
import sysconfig
import types
import uuid
import warnings
from pathlib import Path

KEY_VERSION = "pyku-persistent-v1"
BLOCK = 4 * 1024 * 1024
_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_SMALL = 1000  # containers longer than this are tokenized by dask in one go
_ATTR_OPS = {"LOAD_ATTR", "LOAD_METHOD"}


# --- the input ---------------------------------------------------------------

def cache_key(path, token, cache_dir=None):
    """Hex key of processing ``path`` with a function/settings ``token``.

    ``cache_dir`` keeps the sidecar files of :func:`content_digest`; without
    it the input is read and hashed every time.
    """
    path = os.path.abspath(path)
    st = os.stat(path)
    digest = content_digest(path, st, cache_dir)
    text = repr((KEY_VERSION, path, st.st_size, st.st_mtime_ns, digest, token))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def content_digest(path, st=None, cache_dir=None):
    """blake2b hex digest of the whole content of ``path``, remembered in ``cache_dir``.

    The sidecar ``.<name>.<path hash>.hash`` (one per input path, so nothing
    accumulates and no directory listing is needed) holds the digest with
    the stat identity it was taken at: path, size, mtime_ns, ctime_ns and
    inode.  A write to the file changes mtime_ns and ctime_ns (ctime also
    when mtime is forged with ``os.utime``), a replacement changes the
    inode, so a changed file never matches the sidecar and is hashed again.
    As in git's "racy" check, a sidecar not written strictly after the
    file's last change (same clock tick) is not trusted: the file could have
    changed again within that tick.  Sidecars are written to a temporary
    name and renamed, so concurrent writers never leave a torn one.
    """
    path = os.path.abspath(path)
    st = st or os.stat(path)
    if cache_dir is None:
        return _hash_content(path)
    ident = _stat_identity(path, st)
    sidecar = Path(cache_dir) / f".{os.path.basename(path)}.{_short_hash(path, 8)}.hash"
    digest = _read_sidecar(sidecar, ident, st)
    if digest is None:
        digest = _hash_content(path)
        if _stat_identity(path, os.stat(path)) == ident:  # unchanged while we read it
            _write_sidecar(sidecar, ident, digest)
    return digest


def file_digest(path):
    """(size, mtime_ns, blake2b hex digest of the whole content) of ``path``."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, _hash_content(path)


def _hash_content(path):
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return h.hexdigest()


def _stat_identity(path, st):
    return {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}


def _short_hash(text, size):
    return hashlib.blake2b(text.encode(), digest_size=size).hexdigest()


def _read_sidecar(sidecar, ident, st):
    """The digest in ``sidecar`` if it is for ``ident`` and was written after the file changed."""
    try:
        with open(sidecar, "rb") as f:
            written = os.fstat(f.fileno()).st_mtime_ns
            record = json.loads(f.read())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("ident") != ident or written <= st.st_ctime_ns:
        return None
    digest = record.get("digest")
    return digest if isinstance(digest, str) else None


def _write_sidecar(sidecar, ident, digest):
    part = sidecar.with_name(f"{sidecar.name}.{host_tag()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_text(json.dumps({"ident": ident, "digest": digest}))
        os.replace(part, sidecar)
    except OSError:  # a read-only or full directory only costs the next run a read
        part.unlink(missing_ok=True)


def host_tag():
    """This host's name, without dots so that it is one field of a ``.part`` name."""
    return socket.gethostname().replace(".", "_")


# --- the function --------------------------------------------------------------

def func_token(func, *extra):
    """Hex token of ``func``'s code and the values it depends on, plus ``extra``."""
    h = hashlib.blake2b(digest_size=16)
    seen = {}  # id -> object: holding the object keeps its id from being reused
    _feed(h, func, seen)
    _feed(h, extra, seen)
    h.update(library_token().encode())
    return h.hexdigest()


@functools.cache
def library_token():
    """Digest of pyku's own source and tables: a fixed pyku makes old outputs stale."""
    h = hashlib.blake2b(digest_size=16)
    root = importlib.resources.files("pyku")
    entries = [e for e in root.iterdir() if e.name.endswith(".py")]
    entries += [e for e in root.joinpath("etc").iterdir() if e.name.endswith(".toml")]
    for entry in sorted(entries, key=lambda e: e.name):
        h.update(entry.name.encode())
        h.update(entry.read_bytes())
    return h.hexdigest()


def _feed(h, obj, seen):
    """Update ``h`` with a deterministic description of ``obj``."""
    if isinstance(obj, _SCALARS):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
        return
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    seen[id(obj)] = obj
    if isinstance(obj, functools.partial):
        h.update(b"partial")
        for part in (obj.func, obj.args, obj.keywords):
            _feed(h, part, seen)
    elif isinstance(obj, types.MethodType):
        _feed(h, obj.__func__, seen)
        _feed(h, obj.__self__, seen)
    elif isinstance(obj, types.FunctionType):
        if _is_library(obj.__module__):
            h.update(_library_name(obj.__module__, obj.__qualname__).encode())
        else:
            _feed_function(h, obj, seen)
    elif isinstance(obj, types.CodeType):
        _feed_code(h, obj, seen)
    elif isinstance(obj, types.ModuleType):
        h.update(f"module:{obj.__name__};".encode())
    elif isinstance(obj, type):
        _feed_class(h, obj, seen)
    elif isinstance(obj, (list, tuple, set, frozenset, dict)) and len(obj) <= _SMALL:
        _feed_container(h, obj, seen)
    else:  # a value: by value, and a user class by its code too
        if not _is_library(type(obj).__module__):
            _feed_class(h, type(obj), seen)
        h.update(f"value:{_tokenize(obj)};".encode())


def _feed_container(h, obj, seen):
    h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
    if isinstance(obj, dict):
        for key, value in obj.items():
            _feed(h, key, seen)
            _feed(h, value, seen)
        return
    items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
    for item in items:
        _feed(h, item, seen)


def _tokenize(obj):
    """dask's deterministic token of a value, or its type if it has none."""
    import dask
    from dask.base import tokenize

    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return tokenize(obj)
    except Exception:  # TokenizationError (a RuntimeError); older dask raised others
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        warnings.warn(f"persistent_processing: a {name} used by func cannot be hashed "
                      "deterministically; it counts by its type only, so changing it "
                      "does not recompute", stacklevel=4)
        return f"type:{name}"


def _feed_function(h, func, seen):
    _feed_code(h, func.__code__, seen)
    _feed(h, func.__defaults__, seen)
    _feed(h, func.__kwdefaults__, seen)
    for cell in func.__closure__ or ():
        try:
            _feed(h, cell.cell_contents, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty cell>")
    globals_ = func.__globals__
    for name in sorted(_global_names(func.__code__)):
        if name in globals_:
            h.update(f"global {name}=".encode())
            _feed(h, globals_[name], seen)
    for chain in sorted(_module_attributes(func.__code__, globals_)):
        value = _resolve(globals_, chain)
        if value is not None:
            h.update(f"global {'.'.join(chain)}=".encode())
            _feed(h, value[0], seen)


def _feed_code(h, code, seen):
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount)).encode())
    for const in code.co_consts:
        _feed(h, const, seen)


def _feed_class(h, cls, seen):
    """A class by name; one of the user's own also by its methods and plain class attributes."""
    h.update(f"class:{cls.__module__}.{cls.__qualname__};".encode())
    if _is_library(cls.__module__):
        return
    for base in cls.__bases__:
        _feed(h, base, seen)
    for name, member in sorted(vars(cls).items()):
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        elif isinstance(member, property):
            member = (member.fget, member.fset)
        elif isinstance(member, functools.cached_property):
            member = member.func
        if isinstance(member, (types.FunctionType, tuple, *_SCALARS)) and name != "__doc__":
            h.update(f"{name}=".encode())
            _feed(h, member, seen)


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def _module_attributes(code, globals_):
    """Chains ``(module, attr, ...)`` read as ``module.attr...`` from the user's own modules."""
    chains = set()
    chain = None
    for ins in dis.get_instructions(code):
        if ins.opname == "LOAD_GLOBAL" and isinstance(globals_.get(ins.argval), types.ModuleType):
            module = globals_[ins.argval]
            chain = None if _is_library(module.__name__) else (ins.argval,)
        elif chain is not None and ins.opname in _ATTR_OPS:
            chain = chain + (ins.argval,)
            value = _resolve(globals_, chain)
            if value is None or not isinstance(value[0], types.ModuleType):
                chains.add(chain)  # the end of the chain: a function, a class or a value
                chain = None
        else:
            chain = None
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            chains |= _module_attributes(const, globals_)
    return chains


def _resolve(globals_, chain):
    """``(value,)`` of ``globals_[chain[0]].chain[1]...``, or None if it does not exist."""
    value = globals_.get(chain[0])
    for attr in chain[1:]:
        try:
            value = getattr(value, attr)
        except Exception:  # a lazy module attribute may raise anything
            return None
    return (value,)


def _library_name(module, qualname):
    top = module.partition(".")[0]
    version = getattr(sys.modules.get(top), "__version__", "")
    return f"library:{module}.{qualname}@{version};"


def _is_library(module_name):
    """True for the standard library, installed packages and pyku (hashed by library_token)."""
    if not module_name:
        return False
    top = module_name.partition(".")[0]
    if top in ("pyku", "builtins") or top in sys.stdlib_module_names:
        return True
    file = getattr(sys.modules.get(top), "__file__", None)
    if file is None:
        return False
    file = os.path.realpath(file)
    return any(file.startswith(root + os.sep) for root in _library_roots())


@functools.cache
def _library_roots():
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(sorted(os.path.realpath(r) for r in roots))
