"""Small checkers for inventory values, and ``parse_memory``.

Each checker takes a raw TOML value and returns it normalised, or raises
:class:`Invalid` with a message of the form ``must be …, got … (what to do)``.
The checkers know nothing of files or key paths: ``launcher.inventory`` adds
those, so every user-facing error comes out as one line with the same shape.

The string patterns are deliberately strict because these values end up in
remote shell command lines: an address such as
``127.0.0.13; touch /tmp/x`` is rejected here, before anything is contacted,
and the launcher shlex-quotes whatever passes as a second line of defence.
"""

from __future__ import annotations

import json
import math
import os
import re
from fractions import Fraction
from typing import Any, Callable

from dask.utils import byte_sizes

Checker = Callable[[Any], Any]

#: Host name, IPv4, IPv6 (without brackets, zone index after ``%``) or an
#: ``~/.ssh/config`` alias. No leading ``-`` (could read as an ssh option) or
#: ``.`` (``..`` would be a path when used as a run directory label).
#: At most 200 characters: the address names run and spill directories
#: (``<label>.scheduler``), whose names the file system caps at 255 bytes,
#: with room for a ``-<port>`` suffix that keeps labels unique.
ADDRESS = re.compile(r"[A-Za-z0-9_:%][A-Za-z0-9_.:%-]{0,199}")
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
#: A shell program: ``bash``, ``/bin/zsh``; one word, no shell syntax.
SHELL = re.compile(r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]*")
#: A distribution name as PEP 508 allows it.
DISTRIBUTION = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")

MiB = 2**20


class Invalid(ValueError):
    """A value is wrong; the message says how and, in parentheses, what to do."""


def show(value: Any) -> str:
    """Render a TOML value for an error message, on one line and not too long."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        text = json.dumps(value if len(value) <= 60 else value[:57] + "...")
        return text  # json escapes newlines and NULs, so the line stays one line
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # TOML true is no integer


def integer(low: int, high: int | None, what: str, hint: str = "") -> Checker:
    """An integer in ``[low, high]`` (``high=None``: no upper bound)."""
    def check(value: Any) -> int:
        if not _is_int(value) or value < low or (high is not None and value > high):
            raise Invalid(f"must be {what}, got {show(value)}" + (f" ({hint})" if hint else ""))
        return value
    return check


def port(allow_zero: bool = False) -> Checker:
    """A TCP port; ``0`` (any free port) only where the caller allows it."""
    if allow_zero:
        return integer(0, 65535, "an integer from 0 to 65535", "0 picks any free port")
    return integer(1, 65535, "an integer from 1 to 65535")


def seconds(value: Any) -> float:
    """A positive, finite duration in seconds (integer or float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise Invalid(f"must be a positive number of seconds, got {show(value)}")
    return float(value)


_DURATION_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(?:(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(s|min|m|h|d|w)")


def duration(minimum: float) -> Checker:
    """A duration: ``"20s"``, ``"90m"``, ``"2h"``, ``"3d"``, ``"1h30m"`` or a number of seconds; at least ``minimum``."""
    def check(value: Any) -> float:
        example = '"2h" (units s, m, h, d, w) or a number of seconds'
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise Invalid(f"must be a duration like {example}, got {show(value)}")
        if isinstance(value, str):
            if not _DURATION.fullmatch(value.lower()):
                raise Invalid(f"must be a duration like {example}, got {show(value)}")
            total = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value.lower()))
        else:
            total = float(value)
        if not math.isfinite(total) or total < minimum:
            raise Invalid(f"must be at least {minimum:g} s, got {show(value)}")
        return total
    return check


def absolute_dirs(value: Any) -> tuple[str, ...]:
    """An array of absolute directory paths (``[cluster] shared``), returned as a tuple, normalised."""
    example = '(e.g. ["/scratch/pyku"])'
    if not isinstance(value, list):
        raise Invalid(f"must be an array of absolute paths, got {show(value)} {example}")
    out = []
    for item in value:
        if not isinstance(item, str) or not item.startswith("/"):
            raise Invalid(f"must be an array of absolute paths, {show(item)} is not one {example}")
        remote_directory(item)  # no '..', not the root, not too long, no line breaks
        out.append(os.path.normpath(item))
    if len(set(out)) != len(out):
        raise Invalid(f"lists a directory twice, got {show(value)}")
    return tuple(out)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, got {show(value)}")
    return value


def choice(*options: str) -> Checker:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            listed = " or ".join(json.dumps(o) for o in options)
            raise Invalid(f"must be {listed}, got {show(value)}")
        return value
    return check


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, got {show(value)}")
    if not value.strip():
        raise Invalid("must not be empty")
    return value


def matching(pattern: re.Pattern[str], what: str) -> Checker:
    """A string matching ``pattern`` in full; ``what`` describes it to the user."""
    def check(value: Any) -> str:
        if not pattern.fullmatch(_string(value)):
            raise Invalid(f"must be {what}, got {show(value)}")
        return value
    return check


def address(value: Any) -> str:
    """A host name, IP address or ssh alias (:data:`ADDRESS`), with its length said apart."""
    if isinstance(value, str) and len(value) > 200:
        raise Invalid(f"must be at most 200 characters, got {len(value)} (it names run directories,"
                      " and file names stop at 255 bytes: use a shorter ~/.ssh/config alias)")
    return matching(ADDRESS, "a host name, IP address or ssh alias"
                    " (letters, digits and _ . : % -, not starting with - or .)")(value)


def word(value: Any) -> str:
    """One argument for a command line (interpreter, path): no NUL, no line break.

    The launcher shlex-quotes it, so spaces and quotes are harmless; NUL and
    newlines cannot survive quoting and are never what the user meant.
    """
    if any(c in _string(value) for c in "\0\n\r"):
        raise Invalid(f"must not contain NUL or line breaks, got {show(value)}")
    return value


def remote_directory(value: Any) -> str:
    """A directory on a host (``local_directory``): absolute, ``~/…`` or relative to home.

    The host's agent resolves it once for every process that uses it, so
    ``..`` (which climbs out of wherever it is read against) and the root
    itself are refused, as are names longer than a file system allows.
    """
    path = word(value)
    parts = path.split("/")
    if ".." in parts:
        raise Invalid(f"must not contain '..', got {show(value)} (write the directory it means,"
                      " e.g. /scratch/me/dask or ~/dask)")
    if not path.strip("/"):
        raise Invalid(f"must not be the root directory, got {show(value)} (e.g. /scratch/me/dask)")
    if any(len(p.encode()) > 255 for p in parts) or len(path.encode()) > 1024:
        raise Invalid(f"is too long for a path (a name at most 255 bytes, the whole at most 1024),"
                      f" got {show(value)}")
    return path


def local_path(value: Any) -> str:
    """A path on the machine running pyku-launch, with ``~`` expanded."""
    return os.path.expanduser(word(value))


def shell_code(value: Any) -> str | None:
    """``env``: shell code run before every remote command, on purpose.

    It cannot be quoted (it *is* the command), so it is trusted like the
    inventory file itself; only NUL, which no shell accepts, is refused.
    An empty string means "nothing to run".
    """
    if not isinstance(value, str):
        raise Invalid(f"must be a string of shell code, got {show(value)}")
    if "\0" in value:
        raise Invalid(f"must not contain NUL, got {show(value)}")
    return value if value.strip() else None


def names(pattern: re.Pattern[str], what: str) -> Checker:
    """An array of strings, each matching ``pattern``; returned as a tuple."""
    def check(value: Any) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise Invalid(f'must be an array of {what}s, got {show(value)} (e.g. ["numpy", "xarray"])')
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise Invalid(f"must be an array of {what}s, {show(item)} is not one")
        return tuple(value)
    return check


def memory(minimum: int, *, auto: bool = True) -> Checker:
    """A size in bytes (``"4GiB"``, ``4294967296``), ``"auto"`` → ``None``."""
    example = '"4GiB"' + (' or "auto"' if auto else "")
    def check(value: Any) -> int | None:
        if auto and isinstance(value, str) and value.strip().lower() == "auto":
            return None
        if isinstance(value, float) or not isinstance(value, (int, str)):
            raise Invalid(f"must be a size like {example}, got {show(value)}")
        try:
            size = parse_memory(value)
        except ValueError:
            raise Invalid(f"must be a size like {example}, got {show(value)}") from None
        if size < minimum:
            raise Invalid(f"must be at least {minimum // MiB} MiB, got {show(value)}"
                          f" (= {size} bytes)")
        return size
    return check


# dask's own unit table, so a size means here what it means to the workers.
# Not dask.utils.parse_bytes itself: it accepts "", "GiB", negative sizes,
# booleans and 1e999 silently, and rounds through a float.
_UNITS = byte_sizes
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([A-Za-z]*)\s*")


def parse_memory(value: str | int) -> int:
    """Parse a memory size into bytes, rounding down.

    Units follow dask's ``parse_bytes``: ``kB/MB/GB/TB`` (and the bare
    ``K/M/G/T``) are powers of 1000, ``KiB/MiB/GiB/TiB`` (``Ki/Mi/…``)
    powers of 1024, case-insensitive, space optional: ``"4GiB"``, ``"4 GB"``,
    ``"500MB"``, ``"0.5 TiB"``. An integer is a number of bytes.

    Raises
    ------
    ValueError
        On anything else, including negative sizes, booleans, ``inf``/``nan``.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a memory size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"memory size must not be negative: {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a memory size: {value!r}")
    match = _SIZE.fullmatch(value)
    if not match or match.group(3).lower() not in _UNITS:
        raise ValueError(f"not a memory size: {value!r}")
    number, exponent, unit = match.groups()
    amount = Fraction(number) * _UNITS[unit.lower()]
    if exponent:
        if abs(int(exponent)) > 30:
            raise ValueError(f"memory size out of range: {value!r}")
        amount *= Fraction(10) ** int(exponent)
    return int(amount)
