"""The seed's ``preprocess``, taken from examples/preprocess.py, for tests and bench/."""

from __future__ import annotations

from . import ROOT

EXAMPLE = ROOT / "examples" / "preprocess.py"


def load_preprocess():
    """The example's preprocess function, shipped to workers by value.

    The file is executed under a module name that is not importable (and is
    not ``__main__``, so its main() does not run): distributed then falls
    back to cloudpickle, which sends the function by value, as it would a
    function of the user's own script.
    """
    namespace = {"__name__": "pyku_example_preprocess", "__file__": str(EXAMPLE)}
    exec(compile(EXAMPLE.read_text(), str(EXAMPLE), "exec"), namespace)
    return namespace["preprocess"]
