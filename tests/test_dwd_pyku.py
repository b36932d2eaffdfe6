"""DWD's pyku beside the launcher: installed untouched, reached with the seed's ``Client(address)``, shipped.

In a venv holding a stand-in of DWD's pyku 1.1.1 (launcher/testing/dwd_pyku.py:
its layout, setuptools_scm version, ``persistent_processing`` finding the
client with ``default_client()``, ``clixrun --dask_cluster``), the launcher
is installed with ``pip install <checkout>`` and a cluster is launched from
that venv on the real sshd test hosts, which run the same venv. Offline:
``--no-deps --no-build-isolation --no-index`` (launcher/testing/venvs.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from launcher.remote import agent
from launcher.store import state
from launcher.testing import missing, venvs, dwd_pyku
from launcher.testing.clusters import ssh_inventory
from launcher.reach.tunnel import Tunnel


def _hashes(site: Path) -> dict[str, str]:
    """sha256 of every file of DWD's package and its dist-info (bytecode aside)."""
    files = [p for d in (site / "pyku", *site.glob("pyku-*.dist-info")) for p in d.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    return {str(p.relative_to(site)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def dwd(tmp_path_factory):
    """A venv with the stand-in of DWD's pyku 1.1.1, then ``pip install`` of this checkout (a copy).

    Yields a namespace: ``venv``, ``wheels`` (the release's and the
    launcher's), ``dwd_files`` (hashes of DWD's files before the launcher's
    install), ``installed`` (pip's output of that install).
    """
    reason = venvs.build_tools_missing()
    if reason:
        missing(reason)
    base = tmp_path_factory.mktemp("dwd")
    try:
        project = venvs.copy_project(base / "project")
        release = dwd_pyku.checkout(Path(base / "pyku-release"))
        venv = venvs.make(base / "venv")
        wheels = base / "wheels"
        venv.pip("wheel", "-w", str(wheels), str(release), str(project))  # DWD's, as installed from its repo
        venv.pip("install", str(next(wheels.glob(f"pyku-{dwd_pyku.RELEASE}-*.whl"))))
        before = _hashes(venv.site_packages)
        installed = venv.pip("install", str(project))  # the launcher: `pip install .` in the checkout
        yield type("DWD", (), dict(venv=venv, wheels=wheels, dwd_files=before, installed=installed))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _cli(venv, *args, env=None, check=False, cwd=None):
    """``pyku-launch ARGS`` as installed in ``venv`` (its entry point script)."""
    return venv.run(str(venv.bin / "pyku-launch"), *args, check=check, env=env, cwd=cwd)


def _one_line_error(proc, *words):
    err = proc.stderr.strip()
    assert proc.returncode == 1, (proc.stdout, err)
    assert len(err.splitlines()) == 1 and err.startswith("pyku-launch: error: "), err
    assert "Traceback" not in err and all(w in err for w in words), err


def test_installing_the_launcher_leaves_dwd_pyku_untouched(dwd):
    site = dwd.venv.site_packages
    assert _hashes(site) == dwd.dwd_files and dwd.dwd_files  # every file of DWD's, byte for byte
    out = dwd.venv.python_code("import json, pyku, importlib.metadata as m; "
                               "print(json.dumps([pyku.STAND_IN, pyku.__version__, m.version('pyku'), pyku.__file__]))")
    assert json.loads(out.stdout) == [dwd_pyku.MARK, dwd_pyku.RELEASE, dwd_pyku.RELEASE, str(site / "pyku" / "__init__.py")]
    check = dwd.venv.pip("check", check=False)
    assert check.returncode == 0 and "No broken requirements" in check.stdout, check.stdout + check.stderr

    # the launcher's wheel holds the launcher alone; its install claims no file of pyku
    [wheel] = dwd.wheels.glob("pyku_launch-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"launcher", "pyku_launch-0.1.0.dist-info"}, tops
    [info] = site.glob("pyku_launch-*.dist-info")
    assert (info / "top_level.txt").read_text().split() == ["launcher"]
    assert not [ln for ln in (info / "RECORD").read_text().splitlines() if ln.startswith("pyku/")]
    assert _cli(dwd.venv, "--version").stdout.startswith("pyku-launch, version 0.1.0")


def test_preflight_names_the_pyku_of_every_host(dwd, sshd, state_dir, tmp_path):
    """DWD's pyku here, the checkout's bundled pyku on the hosts: the table says which is where."""
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name="which", workers=(1,), nworkers=1)  # hosts: this checkout
    refused = _cli(dwd.venv, "check", str(inv))
    assert refused.returncode == 3, refused.stdout + refused.stderr
    here = f"pyku {dwd_pyku.RELEASE}, source "
    there = f"{agent._providers(['pyku'])['pyku']}, source {agent._fingerprint('pyku')}"  # as the hosts import it
    assert f"pyku source (client {here}" in refused.stderr, refused.stderr
    rows = [ln for ln in refused.stderr.splitlines() if ln.startswith(sshd.hosts[1].address)]
    assert rows and there in rows[0], refused.stderr
    assert state.read("which") is None


SEED = textwrap.dedent("""\
    # The seed's line, then DWD's persistent_processing as its documentation shows it.
    import json, sys
    from distributed import Client
    client = Client({address!r})
    import pyku, pyku.compute

    def preprocessing(text):
        from distributed import get_worker
        return text.upper() + "\\n" + get_worker().address   # raises off a worker

    out = pyku.compute.persistent_processing(func=preprocessing, files=sys.argv[2:], tmpdir=sys.argv[1],
                                             identifier="my-pre-processed-data")
    print(json.dumps({{"out": out, "pyku": pyku.STAND_IN, "workers": sorted(client.scheduler_info()["workers"])}}))
""")

BARE = "from distributed import Client; print(Client(timeout=20).scheduler.address)"
LOCAL = ("from distributed import Client, LocalCluster; "
         "print(Client(LocalCluster(n_workers=1, processes=False, dashboard_address=None)).submit(sum, [1, 2]).result())")

CONNECTED = textwrap.dedent("""\
    # connect() leaves its client the default one: DWD's persistent_processing finds it.
    import sys
    from distributed import default_client
    from launcher import connect
    client = connect()
    assert default_client() is client
    import pyku.compute

    def on_a_worker(text):
        from distributed import get_worker
        return get_worker().address   # raises off a worker

    out = pyku.compute.persistent_processing(func=on_a_worker, files=sys.argv[2:], tmpdir=sys.argv[1],
                                             identifier="connected")
    print(len(out), *sorted({open(f).read() for f in out} - set(client.scheduler_info()["workers"])))
""")


def _bash(venv, line, env=None):
    return venv.run("bash", "-c", line, check=False, env=env)


def test_the_seeds_client_line_reaches_the_cluster_after_eval_env(dwd, sshd, state_dir, tmp_path):
    venv, name = dwd.venv, "dwd"
    inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1,
                        env=venv.host_env(), python=venv.python)
    inputs = []
    for i in range(3):
        inputs.append(tmp_path / f"tas_{i}.txt")
        inputs[-1].write_text(f"file {i}")

    checked = _cli(venv, "check", str(inv))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.count(f"pyku: pyku {dwd_pyku.RELEASE}, source ") == 4, checked.stdout  # client + 3 hosts

    launched = _cli(venv, str(inv))
    assert launched.returncode == 0, launched.stderr
    assert f'eval "$(pyku-launch env --name {name})"' in launched.stdout
    rec = state.read(name)
    try:
        seed = tmp_path / "seed.py"
        seed.write_text(SEED.format(address=rec.scheduler))

        # without the settings, the seed's line has no certificate: refused
        plain = venv.run("python", str(seed), str(tmp_path), *map(str, inputs), check=False)
        assert plain.returncode != 0 and "TLS" in plain.stderr, plain.stderr[-2000:]

        printed = _cli(venv, "env")
        assert printed.returncode == 0, printed.stderr
        exports = dict(re.findall(r"^export (\w+)=(\S+)$", printed.stdout, re.M))
        assert exports["DASK_SCHEDULER_ADDRESS"] == rec.scheduler and exports["PYKU_CLUSTER"] == name
        assert "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION" not in exports  # see LOCAL below
        files = [Path(exports[f"DASK_DISTRIBUTED__COMM__TLS__{k}"]) for k in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY")]
        assert {f.parent for f in files} == {state.env_dir(name)}
        assert files[2].read_text() == rec.tls.key and "PRIVATE KEY" not in printed.stdout
        assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
        assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 for d in (state.env_dir(name), state.env_dir(name).parent))

        # the seed's line, a bare Client(), DWD's CLI with --dask_cluster and without, and a
        # LocalCluster of one's own: one shell
        (tmp_path / "out").mkdir()
        ran = _bash(venv, f"""set -e; eval "$(pyku-launch env)"
            python {seed} {tmp_path / "out"} {' '.join(map(str, inputs))}
            python -c '{BARE}'
            clixrun --dask_cluster "$DASK_SCHEDULER_ADDRESS"
            clixrun
            python -c '{LOCAL}'""")
        assert ran.returncode == 0, ran.stderr[-3000:]
        seeded, bare, *clix, local = ran.stdout.strip().splitlines()[-5:]
        assert local == "3"
        result = json.loads(seeded)
        assert result["pyku"] == dwd_pyku.MARK and len(result["workers"]) == 2
        assert len(result["out"]) == 3
        for path in result["out"]:  # each written by the worker that ran it
            text, by = Path(path).read_text().splitlines()
            assert text.startswith("FILE ") and by in result["workers"], (path, text, by)
        assert bare == rec.scheduler
        assert clix == [f"clixrun: 2 workers at {rec.scheduler}"] * 2, ran.stdout

        # a process not started from that shell reads a dask config file (a JupyterLab server)
        config = Path(os.environ["HOME"]) / ".config" / "dask" / "pyku-launch.yaml"
        wrote = _cli(venv, "env", "--dask-config", str(config))
        assert wrote.returncode == 0 and str(config) in wrote.stdout, wrote.stderr
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        got = venv.python_code(BARE, check=False)
        assert got.returncode == 0 and got.stdout.strip() == rec.scheduler, got.stderr[-2000:]
        config.unlink()

        # connect() leaves its client the default one; DWD's persistent_processing runs on it
        connected = tmp_path / "connected.py"
        connected.write_text(CONNECTED)
        got = venv.run("python", str(connected), str(tmp_path / "out"), *map(str, inputs), check=False)
        assert got.returncode == 0 and got.stdout.strip() == "3", got.stdout + got.stderr[-2000:]

        # through a port forwarded by hand (the scheduler reached only over SSH): --address
        with Tunnel(rec.scheduler_host.spec, *rec.scheduler.split("://")[1].rsplit(":", 1)).start() as fwd:
            via = f"tls://{fwd.address}"
            got = _bash(venv, f'eval "$(pyku-launch env --address {via})" && python -c \'{BARE}\'')
            assert got.returncode == 0 and got.stdout.strip() == via, got.stderr[-2000:]
        _one_line_error(_cli(venv, "env", "--address", via), "does not answer at", via)
        _one_line_error(_cli(venv, "env", "--address", "127.0.0.1:http"), "--address 127.0.0.1:http: not an address")

        # a colleague with a connection file, and nothing else of the owner's
        shared = _cli(venv, "share", "--for", "alice", "-o", str(tmp_path / "alice.json"))
        assert shared.returncode == 0, shared.stderr
        alice = {v: str(tmp_path / "alice" / v) for v in ("HOME", "XDG_STATE_HOME")}
        (tmp_path / "alice-out").mkdir()
        got = _bash(venv, f'eval "$(pyku-launch env --file {tmp_path / "alice.json"})" && '
                          f'python {seed} {tmp_path / "alice-out"} {" ".join(map(str, inputs))}', venv.env(**alice))
        assert got.returncode == 0, got.stderr[-3000:]
        assert len(json.loads(got.stdout.splitlines()[-1])["out"]) == 3
        assert [p.name for p in (tmp_path / "alice" / "XDG_STATE_HOME" / "pyku-launch" / "env").iterdir()] == \
               [f"{name}.{json.loads((tmp_path / 'alice.json').read_text())['serial']}"]

        status = _cli(venv, "status")
        assert status.returncode == 0 and f'eval "$(pyku-launch env --name {name})"' in status.stdout
    finally:
        stopped = _cli(venv, "stop", "--name", name)
    assert stopped.returncode == 0, stopped.stderr
    assert not state.env_dir(name).exists()  # the certificate files went with the cluster
    _one_line_error(_cli(venv, "env", "--name", name), f"cluster '{name}' is not launched")
    _one_line_error(_cli(venv, "env"), "no launched cluster is known")
    _one_line_error(_cli(venv, "env", "--name", "nosuch"), "cluster 'nosuch' is not launched")
    unset = _cli(venv, "env", "--unset")
    assert unset.stdout.split()[:2] == ["unset", "DASK_SCHEDULER_ADDRESS"] and "PYKU_CLUSTER" in unset.stdout


def test_a_dwd_working_copy_is_refused_then_shipped(dwd, sshd, state_dir, tmp_path):
    """The hosts run the release; this machine a DWD-layout checkout installed editable, edited."""
    name = "dwdship"
    copy = dwd_pyku.edit(dwd_pyku.checkout(tmp_path / "pyku"))
    client = venvs.make(tmp_path / "client-venv")
    try:
        client.pip("install", "-e", str(copy), str(next(dwd.wheels.glob("pyku_launch-*.whl"))))
        inv = ssh_inventory(tmp_path / "h.toml", sshd, name=name, workers=(1, 2), nworkers=1,
                            env=dwd.venv.host_env(), python=dwd.venv.python)

        refused = _cli(client, str(inv))
        assert refused.returncode == 3, refused.stderr
        assert "differ from this machine" in refused.stderr
        assert re.search(r"pyku source \(client pyku 1\.1\.2\.dev0\+g\w+\.d\d+, source \w+\)", refused.stderr), \
            refused.stderr
        assert refused.stderr.count(f"pyku {dwd_pyku.RELEASE}, source ") == 3, refused.stderr  # each host
        assert state.read(name) is None

        launched = _cli(client, str(inv), "--ship", "pyku")
        assert launched.returncode == 0, launched.stderr
        assert "shipped    pyku (source fingerprint" in launched.stdout
        got = client.python_code(textwrap.dedent("""\
            import json
            from launcher import connect
            with connect() as client:
                ran = client.run(lambda: __import__("pyku").working_copy_feature())
                files = [*client.run(lambda: __import__("pyku").__file__).values(),
                         client.run_on_scheduler(lambda: __import__("pyku").__file__)]
            print(json.dumps([sorted(ran.values()), files]))
        """), check=False)
        assert got.returncode == 0, got.stderr[-2000:]
        ran, files = json.loads(got.stdout.splitlines()[-1])
        assert ran == ["working copy", "working copy"]  # every worker, both hosts
        assert all(f.endswith("/ship/pyku/__init__.py") and "/.pyku-launch/" in f for f in files), files
    finally:
        stopped = _cli(client, "stop", "--name", name) if (client.bin / "pyku-launch").exists() else None
        client.close()
    assert stopped is None or stopped.returncode == 0, stopped.stderr


def test_uninstalling_either_leaves_the_other_working(dwd):
    venv = dwd.venv
    launcher_wheel = str(next(dwd.wheels.glob("pyku_launch-*.whl")))
    dwd_wheel = str(next(dwd.wheels.glob("pyku-*.whl")))
    try:
        venv.pip("uninstall", "-y", "pyku")
        assert _cli(venv, "--version").returncode == 0
        assert venv.python_code("import launcher.cli, launcher.reach.dask_env").returncode == 0
        venv.pip("install", dwd_wheel)

        venv.pip("uninstall", "-y", "pyku-launch")
        assert not (venv.bin / "pyku-launch").exists()
        assert _hashes(venv.site_packages) == dwd.dwd_files
        out = venv.python_code("import pyku, pyku.compute; print(pyku.STAND_IN, pyku.__version__)").stdout
        assert out.strip() == f"{dwd_pyku.MARK} {dwd_pyku.RELEASE}"
    finally:  # as the other tests found it
        venv.pip("install", launcher_wheel, dwd_wheel, check=False)
