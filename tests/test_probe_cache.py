"""The probe's cache on a host: a second probe stats instead of reading, and never answers stale.

What a probe reports (versions from distribution metadata, fingerprints of
package source) is kept in the user's launcher directory on the host,
~/.pyku-launch/cache (0700, files 0600), keyed by the mtime_ns, size and
inode of what it was computed from. Each case changes what a user would
change (an edited source file, an installed release) and checks the probe
sees it.
"""

from __future__ import annotations

import importlib
import os
import stat

import pytest

from launcher.remote import agent


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A package ``fpkg`` and a distribution ``fdist`` 1.0 on sys.path."""
    root = tmp_path / "site"
    (root / "fpkg" / "sub").mkdir(parents=True)
    (root / "fpkg" / "__init__.py").write_text("x = 1\n")
    (root / "fpkg" / "sub" / "mod.py").write_text("y = 2\n")
    info = root / "fdist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fdist\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


def probe():
    importlib.invalidate_caches()
    r = agent.op_probe({"distributions": ["fdist"], "fingerprint": ["fpkg"]})
    return r["versions"]["fdist"], r["fingerprints"]["fpkg"]


def test_cache_is_private_and_answers_the_same(site):
    first = probe()
    cache = os.path.expanduser(agent.CACHE_DIR)
    files = os.listdir(cache)
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(cache, files[0])).st_mode) == 0o600
    assert probe() == first == ("1.0", agent._fingerprint_dir(str(site / "fpkg")))


def test_an_edited_source_file_changes_the_fingerprint(site):
    _, fp = probe()
    (site / "fpkg" / "sub" / "mod.py").write_text("y = 3\n")  # same size, new content
    _, edited = probe()
    assert edited != fp and edited == agent._fingerprint_dir(str(site / "fpkg"))
    new = site / "fpkg" / "new.py"
    new.write_text("z = 1\n")
    _, added = probe()
    assert added not in (fp, edited)
    new.unlink()
    assert probe()[1] == edited


def test_a_file_replaced_by_rename_changes_the_fingerprint(site):
    _, fp = probe()
    target = site / "fpkg" / "__init__.py"
    st = os.stat(target)
    tmp = site / "fpkg" / "__init__.py.new"
    tmp.write_text("x = 9\n")
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: only the inode differs
    os.replace(tmp, target)
    assert probe()[1] != fp


def test_another_release_installed_is_seen(site):
    assert probe()[0] == "1.0"
    meta = site / "fdist-1.0.dist-info" / "METADATA"
    meta.write_text("Metadata-Version: 2.1\nName: fdist\nVersion: 1.1\n")  # edited in place
    assert probe()[0] == "1.1"
    (site / "fdist-1.0.dist-info").rename(site / "fdist-2.0.dist-info")
    (site / "fdist-2.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: fdist\nVersion: 2.0\n")
    assert probe()[0] == "2.0"


def test_a_damaged_cache_is_recomputed(site):
    first = probe()
    cache = os.path.expanduser(agent.CACHE_DIR)
    for name in os.listdir(cache):
        with open(os.path.join(cache, name), "w") as f:
            f.write("{not json")
    assert probe() == first
