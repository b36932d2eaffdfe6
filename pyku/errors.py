"""Errors a user of pyku can cause, each naming what is wrong and what to do.

Everything that is not a :class:`PykuError` is a bug in pyku and keeps its
traceback.
"""


class PykuError(Exception):
    """Base class of every error pyku raises on purpose."""


class GridError(PykuError, KeyError):
    """A target grid is unknown or malformed, or a dataset has no usable grid."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class OptionError(PykuError, ValueError):
    """An argument has a value the function does not accept (unknown method, negative roi, ...)."""


class UnitsError(PykuError, ValueError):
    """A variable's units are missing, unparseable or not convertible."""


class TimeBoundsError(PykuError, ValueError):
    """Time labels cannot be set as asked (unknown ``how``, malformed bounds)."""


class ProcessingError(PykuError, RuntimeError):
    """One or more files failed in :func:`pyku.compute.persistent_processing`.

    Attributes
    ----------
    failures : dict[str, BaseException]
        Input path -> the exception that file raised.
    outputs : list[str | None]
        Output paths in input order; ``None`` where the input failed.
    """

    def __init__(self, failures, outputs):
        self.failures = dict(failures)
        self.outputs = list(outputs)
        lines = [f"{len(self.failures)} of {len(self.outputs)} file(s) failed; "
                 "the results of the others are kept and a re-run only redoes these:"]
        for path, exc in self.failures.items():
            lines.append(f"  {path}: {type(exc).__name__}: {exc}")
        super().__init__("\n".join(lines))
