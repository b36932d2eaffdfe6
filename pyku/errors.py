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
    """One or more files or pieces failed in :func:`pyku.compute.persistent_processing`.

    Attributes
    ----------
    failures : dict[str, BaseException]
        What failed -> its exception: an input path (the file could not be
        planned) or ``"<input path> piece <K>"``.
    outputs : list[str | None]
        Output paths in input order, then time order; ``None`` for each
        failed file or piece.
    """

    def __init__(self, failures, outputs):
        self.failures = dict(failures)
        self.outputs = list(outputs)
        lines = [f"{len(self.failures)} of {len(self.outputs)} file(s)/piece(s) failed; "
                 "the results of the others are kept and a re-run only redoes these:"]
        for what, exc in self.failures.items():
            lines.append(f"  {what}: {type(exc).__name__}: {exc}")
        super().__init__("\n".join(lines))


class _Rebuilt:
    """Pickles by the constructor's arguments, so the error crosses from a worker to the client."""

    def __reduce__(self):
        return type(self), self._init


class StepTooLargeError(_Rebuilt, PykuError, MemoryError):
    """One time step of an input cannot fit in the memory one piece may use at worst.

    The message gives the figures the refusal used: the step's size (or the
    measured working set of one step), the memory_limit, what the process
    held and the threshold (see :func:`pyku.pieces.memory_budget`).
    """

    def __init__(self, path, variable, step_bytes, budget, working_set=None):
        self._init = (path, variable, step_bytes, budget, working_set)
        need = (f"one time step of '{variable}' is {step_bytes / 2**20:.1f} MiB (twice that with its output)"
                if working_set is None else
                f"one time step needs {working_set / 2**20:.1f} MiB with func's temporaries by the measured "
                f"estimate ('{variable}': {step_bytes / 2**20:.1f} MiB a step)")
        super().__init__(f"{path}: {need}, more than the {budget.most / 2**20:.1f} MiB one piece may use "
                         f"on {budget.source}; give each worker more memory (memory_limit) or run "
                         "fewer workers per host")


class DiskFullError(_Rebuilt, PykuError, OSError):
    """The output directory ran out of space while a piece was written."""

    def __init__(self, directory, needed, free):
        self._init = (directory, needed, free)
        super().__init__(f"no space left in {directory}: writing a piece needs up to {needed} bytes "
                         f"({needed / 2**20:.1f} MiB, uncompressed) and {free} bytes are free there; "
                         "free space there or pass another tmpdir")


class WorkerDiedError(PykuError, RuntimeError):
    """The worker processing a piece died (most often: it exceeded its memory limit)."""
