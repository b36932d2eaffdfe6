"""Test helpers of pyku-launch, importable by tests, bench/ and users (as ``distributed.utils_test``).

- :mod:`launcher.testing.sshd`: real OpenSSH servers on 127.0.0.N (the test hosts).
- :mod:`launcher.testing.clusters`: write an inventory for them, find a
  cluster's processes in /proc, run the CLI as a user would.
- :mod:`launcher.testing.netns`: test hosts in network namespaces whose link can be cut.
- :mod:`launcher.testing.example`: the seed's ``preprocess`` from examples/.
- :mod:`launcher.testing.venvs`: throw-away venvs that install offline (packaging tests).
- :mod:`launcher.testing.dwd_pyku`: a stand-in of DWD's pyku, laid out as it is.

Nothing here is imported by the launcher itself.
"""

from pathlib import Path

#: The checkout this package was imported from (launcher/testing/ -> its root).
#: The test hosts import the same launcher and pyku (``SSHTestbed.env_line``).
ROOT = Path(__file__).resolve().parents[2]


def missing(what: str) -> None:
    """A test's prerequisite is missing: skip with the reason, but fail under CI (``CI=true``).

    CI installs everything the suite needs, so a missing part there is a
    broken set-up, not a reason for a green run that tested less.
    """
    import os

    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true but {what}", pytrace=False)
    pytest.skip(what)
