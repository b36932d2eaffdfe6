"""Cache keys of :func:`pyku.compute.persistent_processing`.

An output may be reused only if it came from the same input bytes and the
same processing code.  The key therefore covers the input's absolute path,
size, mtime and a hash of its whole content (blake2b in 4 MiB blocks runs at
disk speed, ~1 GB/s, and is computed by the worker that reads the file
anyway; sampling would let two files that differ only in the middle collide),
and a token of the function: its bytecode, constants, names, defaults,
closure values and the globals it uses (recursively for functions), so an
edit to ``func`` or to a helper it calls recomputes, while comments and
formatting do not.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import types

import numpy as np

KEY_VERSION = "pyku-persistent-v1"
BLOCK = 4 * 1024 * 1024
_SCALARS = (type(None), bool, int, float, complex, str, bytes)


def file_digest(path):
    """(size, mtime_ns, blake2b hex digest of the whole content) of ``path``."""
    st = os.stat(path)
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            h.update(block)
    return st.st_size, st.st_mtime_ns, h.hexdigest()


def cache_key(path, token):
    """Hex key of processing ``path`` (absolute) with a function/settings ``token``."""
    size, mtime_ns, digest = file_digest(path)
    text = repr((KEY_VERSION, os.path.abspath(path), size, mtime_ns, digest, token))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def func_token(func, *extra):
    """Hex token of ``func``'s code and the values it depends on, plus ``extra``."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, func, set())
    h.update(repr(extra).encode())
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
    seen.add(id(obj))
    if isinstance(obj, functools.partial):
        h.update(b"partial")
        for part in (obj.func, obj.args, obj.keywords):
            _feed(h, part, seen)
    elif isinstance(obj, types.MethodType):
        _feed(h, obj.__func__, seen)
        h.update(type(obj.__self__).__qualname__.encode())
    elif isinstance(obj, types.FunctionType):
        _feed_function(h, obj, seen)
    elif isinstance(obj, types.CodeType):
        _feed_code(h, obj, seen)
    elif isinstance(obj, types.ModuleType):
        h.update(f"module:{obj.__name__};".encode())
    elif isinstance(obj, type):
        h.update(f"class:{obj.__module__}.{obj.__qualname__};".encode())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"{type(obj).__name__}[{len(obj)}]".encode())
        for item in list(items)[:1000]:
            _feed(h, item, seen)
    elif isinstance(obj, dict):
        h.update(f"dict[{len(obj)}]".encode())
        for key, value in list(obj.items())[:1000]:
            _feed(h, key, seen)
            _feed(h, value, seen)
    elif isinstance(obj, np.ndarray) and obj.dtype != object:
        h.update(f"ndarray{obj.shape}{obj.dtype};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, np.generic):
        h.update(f"{obj.dtype}:{obj!r};".encode())
    else:
        # Arbitrary objects: their type only.  Their repr may hold a memory
        # address, which would make every run look new.
        h.update(f"object:{type(obj).__module__}.{type(obj).__qualname__};".encode())


def _feed_function(h, func, seen):
    _feed_code(h, func.__code__, seen)
    _feed(h, func.__defaults__, seen)
    _feed(h, func.__kwdefaults__, seen)
    for cell in func.__closure__ or ():
        try:
            _feed(h, cell.cell_contents, seen)
        except ValueError:  # an empty cell
            h.update(b"<empty cell>")
    for name in sorted(_global_names(func.__code__)):
        if name in func.__globals__:
            h.update(f"global {name}=".encode())
            _feed(h, func.__globals__[name], seen)


def _feed_code(h, code, seen):
    h.update(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_argcount, code.co_kwonlyargcount)).encode())
    for const in code.co_consts:
        _feed(h, const, seen)


def _global_names(code):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names
