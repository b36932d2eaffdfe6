"""Slurm pools offline: the ``[[slurm]]`` inventory section, the job script, what squeue and sbatch say.

Nothing here contacts a host or Slurm (test_slurm.py submits real jobs);
the job script is checked by the real bash for syntax.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from launcher.config.inventory import load_inventory
from launcher.errors import InventoryError
from launcher.sources import slurm_queue as q
from launcher.sources import slurm_script as s

GiB = 2**30

ISSUE_EXAMPLE = """
[scheduler]
address = "sched"

[[host]]
address = "w1"

[[slurm]]
login = "hpc-login"        # SSH target where sbatch, squeue, scancel run
jobs = 4                   # jobs kept in the pool
nworkers = 30              # workers per job (one node per job)
nthreads = 1
memory_limit = "4GiB"
walltime = "02:00:00"
partition = "compute"
"""


def edited(**keys) -> str:
    """ISSUE_EXAMPLE with these [[slurm]] keys set (a TOML value as text) or removed (None)."""
    lines = [x for x in ISSUE_EXAMPLE.splitlines() if x.split(" ", 1)[0] not in keys]
    return "\n".join(lines + [f"{k} = {x}" for k, x in keys.items() if x is not None]) + "\n"


def load(tmp_path: Path, text: str):
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return load_inventory(path)


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(InventoryError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == 2, message
    return message


def test_the_issue_example_resolves(tmp_path):
    inv = load(tmp_path, ISSUE_EXAMPLE)
    (pool,) = inv.pools
    assert (pool.kind, pool.label, pool.jobs, pool.nworkers, pool.nthreads) == ("slurm", "slurm-hpc-login", 4, 30, 1)
    assert pool.memory_limit == 4 * GiB and pool.walltime_seconds == 7200 and pool.partition == "compute"
    # jobqueue's defaults: CPUs and memory of the whole job from its workers.
    assert pool.job_cpu == 30 and pool.job_mem == 120 * GiB
    assert pool.login.address == "hpc-login" and pool.login.transport == "ssh"
    assert pool.replace == "keep" and [h.address for h in inv.hosts] == ["w1"]


def test_every_slurm_key_and_the_cascade(tmp_path):
    inv = load(tmp_path, """
        [cluster]
        env = "source /etc/profile"
        python = "/opt/py/bin/python3"
        [ssh]
        user = "climate"
        [scheduler]
        address = "sched"
        [[slurm]]
        login = "hpc"
        name = "big"
        jobs = 2
        nworkers = 4
        nthreads = 2
        memory_limit = "2GiB"
        job_cpu = 10
        job_mem = "10GiB"
        walltime = "1-12:00:00"
        account = "bb1234"
        qos = "normal"
        constraint = "256G&ib"
        job_extra = ["--gres=gpu:1", "--exclusive"]
        replace = "once"
        interface = "ib0"
        local_directory = "/scratch/me/dask"
        env = "module load python3"
        port = 2222
        """.replace("\n        ", "\n"))
    (pool,) = inv.pools
    assert pool.label == "big" and pool.job_cpu == 10 and pool.job_mem == 10 * GiB
    assert pool.walltime_seconds == 36 * 3600 and pool.job_extra == ("--gres=gpu:1", "--exclusive")
    assert (pool.account, pool.qos, pool.constraint, pool.replace) == ("bb1234", "normal", "256G&ib", "once")
    # The login host: [ssh] user, its own port, the pool's env over [cluster]'s, [cluster]'s python.
    login = pool.login
    assert (login.user, login.port, login.env, login.python) == ("climate", 2222, "module load python3",
                                                                 "/opt/py/bin/python3")
    assert inv.hosts == ()  # a cluster of pools only is allowed


@pytest.mark.parametrize("key, value, expected", [
    ("walltime", '"2:00"', 'slurm[1].walltime: must be a duration "[D-]HH:MM:SS", got "2:00"'),
    ("walltime", '"02:60:00"', "slurm[1].walltime: must be a duration"),
    ("walltime", '"1-25:00:00"', "slurm[1].walltime: must have hours 0-23 after the days"),
    ("walltime", '"00:01:00"', "slurm[1].walltime: must be at least 00:02:00"),
    ("walltme", '"02:00:00"', 'slurm[1].walltme: unknown key (did you mean "walltime"?)'),
    ("reserve", '"1GiB"', "slurm[1].reserve: unknown key here (it belongs in [workers] or [[host]])"),
    ("partition", '"a b"', "slurm[1].partition: must be a partition name"),
    ("partition", '"x\\n#SBATCH --uid=0"', "slurm[1].partition: must be a partition name"),
    ("job_extra", '"--exclusive"', "slurm[1].job_extra: must be an array of sbatch options"),
    ("job_extra", '["exclusive"]', 'slurm[1].job_extra: must be sbatch options such as "--gres=gpu:1"'),
    ("replace", '"always"', 'slurm[1].replace: must be "keep" or "once"'),
    ("jobs", "-1", "slurm[1].jobs: must be an integer from 0 to 10000"),
    ("job_mem", '"1GiB"', "slurm[1].job_mem: is 1073741824 bytes, less than nworkers * memory_limit"),
    ("login", None, "slurm[1].login: missing (the SSH target where sbatch runs"),
    ("memory_limit", None, "slurm[1].memory_limit: missing"),
])
def test_bad_pool_keys_are_one_line_naming_the_key(tmp_path, key, value, expected):
    assert expected in error_of(tmp_path, edited(**{key: value}))


def test_pool_table_shapes_and_duplicate_names(tmp_path):
    assert "slurm: must be an array of tables, got a single [slurm] table" in error_of(
        tmp_path, ISSUE_EXAMPLE.replace("[[slurm]]", "[slurm]"))
    twice = ISSUE_EXAMPLE + '\n[[slurm]]\nlogin = "hpc-login"\nmemory_limit = "1GiB"\n'
    assert "slurm[2].name: 'slurm-hpc-login' is taken by slurm[1]" in error_of(tmp_path, twice)
    assert "unknown table (did you mean [[slurm]]?)" in error_of(
        tmp_path, ISSUE_EXAMPLE.replace("[[slurm]]", "[[slrum]]"))


# --- the job script -----------------------------------------------------------------------


def test_job_script_of_the_issue_example(tmp_path):
    inv = load(tmp_path, ISSUE_EXAMPLE)
    pool = inv.pools[0]
    text = s.job_script(inv, pool, "pyku.s1.abc.slurm-hpc-login.slurm", "tls://10.0.0.5:8786")
    lines = text.splitlines()
    sbatch = [x.split(" ", 1)[1] for x in lines if x.startswith("#SBATCH ")]
    assert sbatch[:8] == ["--job-name=pyku-launch.pyku", "--comment=pyku.s1.abc.slurm-hpc-login.slurm",
                          "--nodes=1", "--ntasks=1", "--cpus-per-task=30", "--mem=122880M", "--time=02:00:00",
                          "--output=job-%j.log"]
    assert "--partition=compute" in sbatch
    # Every directive comes before the first command (sbatch stops reading them there).
    first_command = next(i for i, x in enumerate(lines) if x and not x.startswith("#"))
    assert all(i < first_command for i, x in enumerate(lines) if x.startswith("#SBATCH"))
    worker = shlex.split(next(x for x in lines if "distributed.cli.dask_worker" in x))
    assert worker[:4] == ["python3", "-m", "distributed.cli.dask_worker", "tls://10.0.0.5:8786"]
    for flag, value in (("--nworkers", "30"), ("--nthreads", "1"), ("--memory-limit", str(4 * GiB)),
                        ("--lifetime", "6900s"), ("--lifetime-stagger", "150s"),
                        ("--tls-key", "$SLURM_SUBMIT_DIR/key.pem"), ("--name", "slurm-hpc-login-0")):
        assert worker[worker.index(flag) + 1] == value, flag
    # No key material, only paths to it.
    assert "PRIVATE KEY" not in text and "CERTIFICATE" not in text
    result = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_job_script_policies_env_and_extras(tmp_path):
    inv = load(tmp_path, edited(nworkers="1", env='"module load python3 # a comment ends the line"',
                                job_extra='["--exclusive"]', replace='"once"', account='"bb1"'))
    text = s.job_script(inv, inv.pools[0], "t", slot=3)
    assert "#SBATCH --exclusive" in text and "#SBATCH --account=bb1" in text
    assert "sbatch --parsable --dependency" not in text  # once: no replacement
    # The env runs in a group, so its trailing comment cannot swallow what follows.
    assert "{\nmodule load python3 # a comment ends the line\n}\n" in text
    # One worker per job is named <pool>-<job slot>-0, like a host's <label>-0.
    assert "--name slurm-hpc-login-3-0" in text
    keep = s.job_script(load(tmp_path, ISSUE_EXAMPLE), load(tmp_path, ISSUE_EXAMPLE).pools[0], "t")
    assert "sbatch --parsable --dependency=afterany:$SLURM_JOB_ID job.sh" in keep


@pytest.mark.parametrize("walltime, expected", [
    ("00:02:00", (90, 15)), ("01:00:00", (3420, 90)), ("02:00:00", (6900, 150)), ("1-00:00:00", (86100, 150)),
])
def test_workers_retire_before_the_walltime(walltime, expected, tmp_path):
    inv = load(tmp_path, ISSUE_EXAMPLE.replace("02:00:00", walltime))
    live, stagger = s.lifetime(inv.pools[0])
    assert (live, stagger) == expected
    assert live + stagger < inv.pools[0].walltime_seconds  # the last worker retires before Slurm ends the job


def test_a_pools_own_lifetime(tmp_path):
    inv = load(tmp_path, edited(lifetime="600"))
    assert s.lifetime(inv.pools[0]) == (600, 60)
    assert "slurm[1].lifetime: is 7200 s, not less than the walltime 02:00:00" in error_of(
        tmp_path, edited(lifetime="7200"))


def test_the_shipped_slurm_example_loads():
    inv = load_inventory(Path(__file__).resolve().parent.parent / "hosts" / "slurm.toml")
    (pool,) = inv.pools
    assert (pool.login.address, pool.jobs, pool.nworkers, pool.walltime) == ("hpc-login", 4, 30, "02:00:00")
    assert [h.address for h in inv.hosts] == ["machine_worker1"]


def test_shell_word_keeps_placeholders_for_the_job_shell():
    assert s.shell_word("{rundir}/ca.pem") == '"$SLURM_SUBMIT_DIR"/ca.pem'
    assert s.shell_word("a b{jobid}") == "'a b'\"$SLURM_JOB_ID\""
    assert s.shell_word("") == "''"


# --- squeue and sbatch --------------------------------------------------------------------

SQUEUE = """\
101|pyku-launch.c|RUNNING|None|node7|1:02:03|2:00:00|c.s1.aaa.pool.slurm
102|pyku-launch.c|PENDING|Resources||2:00:00|2:00:00|c.s1.aaa.pool.slurm
103|pyku-launch.c|PENDING|Dependency||2:00:00|2:00:00|c.s1.aaa.pool.slurm
104|pyku-launch.c|RUNNING|None|node8|5:00|2:00:00|c.OTHER.bbb.pool.slurm
105|pyku-launch.c|COMPLETED|None|node9|0:00|2:00:00|c.s1.aaa.pool.slurm
106|pyku-launch.c|COMPLETING|None|node9|0:00|2:00:00|c.s1.aaa.pool.slurm
squeue: warning: something
"""


def test_squeue_lines_of_this_cluster_only():
    jobs = q.parse_squeue(SQUEUE, "c.s1.")
    assert [(j.id, j.state) for j in jobs] == [("101", "RUNNING"), ("102", "PENDING"), ("103", "PENDING"),
                                               ("106", "COMPLETING")]
    running, pending = jobs[0], jobs[1]
    assert (running.node, running.left, running.hint()) == ("node7", 3723, "")
    assert pending.hint() == "Resources: waiting for a free node; it starts when one is"
    assert jobs[2].hint().startswith("Dependency: the replacement")


@pytest.mark.parametrize("text, seconds", [
    ("1-02:03:04", 93784), ("2:03:04", 7384), ("3:04", 184), ("0:00", 0), ("UNLIMITED", None), ("INVALID", None),
])
def test_slurm_durations(text, seconds):
    assert q.duration(text) == seconds


def test_sbatch_answers():
    assert q.parse_sbatch("4242\n") == "4242" and q.parse_sbatch("4242;cluster1\n") == "4242"
    with pytest.raises(ValueError):
        q.parse_sbatch("")
    stderr = ("sbatch: error: invalid partition specified: nope\n"
              "sbatch: error: Batch job submission failed: Invalid partition name specified\n")
    assert q.sbatch_error(stderr) == "Batch job submission failed: Invalid partition name specified"
    assert q.show_duration(3723) == "1h02m" and q.show_duration(184) == "3m04s" and q.show_duration(None) == "-"


# --- slots: what launcher.Cluster's scale and adapt fill -----------------------------------

MIXED = """
[scheduler]
address = "sched"

[[host]]
address = "w1"
nworkers = 2

[[host]]
address = "w2"
nworkers = 1

[[slurm]]
login = "hpc"
name = "a"
jobs = 1
max_jobs = 2
nworkers = 2
memory_limit = "1GiB"

[[slurm]]
login = "hpc"
name = "b"
jobs = 1
memory_limit = "1GiB"
"""


def test_scale_fills_ssh_workers_first_then_whole_jobs_round_robin_over_pools(tmp_path):
    from launcher.cluster import fill, slots

    allowed = slots(load(tmp_path, MIXED))
    assert [s.names for s in allowed] == [("w1-0",), ("w2-0",), ("w1-1",),
                                          ("a-0-0", "a-0-1"), ("b-0-0",), ("a-1-0", "a-1-1")]
    assert {s.label for s in allowed[3:]} == {"a", "b"}
    assert fill(allowed, [], 4) == ["w1-0", "w2-0", "w1-1", "a-0-0", "a-0-1"]  # rounded up to a whole job
    # Rounded down: a job too big to fit is passed over for a smaller slot further on.
    assert fill(allowed, [], 4, up=False) == ["w1-0", "w2-0", "w1-1", "b-0-0"]
    assert fill(allowed, [], 2, up=False) == ["w1-0", "w2-0"]
    # What runs is kept first: a scale down drops the rest, the last slots first.
    assert fill(allowed, [allowed[5], allowed[0]], 3) == ["a-1-0", "a-1-1", "w1-0"]
    assert len(fill(allowed, [], 100)) == 8  # everything the inventory allows, no more


def test_a_pools_worker_names_give_its_job_slot(tmp_path):
    from launcher.errors import LaunchError
    from launcher.sources import slurm_jobs

    (a, b) = load(tmp_path, MIXED).pools
    assert (a.most_jobs, b.most_jobs) == (2, 1)
    assert slurm_jobs.slot_of(a, "a-1-1") == 1
    for name in ("a-2-0", "a-0-2", "b-0-0", "a-x-0"):
        with pytest.raises(LaunchError, match=f"pool a: no job slot runs a worker named '{name}'"):
            slurm_jobs.slot_of(a, name)
    message = error_of(tmp_path, MIXED.replace("max_jobs = 2", "max_jobs = 0"))
    assert "slurm[1].max_jobs: is 0, less than jobs = 1" in message


@pytest.mark.parametrize("host, clash", [("node-3", True), ("NODE", True), ("node", True), ("node-x", False),
                                         ("nodes-3", False)])
def test_a_pool_whose_workers_would_take_a_hosts_worker_names_is_refused(tmp_path, host, clash):
    """Pool ``node``'s job 3 has workers node-3-0, node-3-1...: so has host ``node-3``."""
    text = ISSUE_EXAMPLE.replace('address = "w1"', f'address = "{host}"') + 'name = "node"\n'
    if clash:
        message = error_of(tmp_path, text)
        assert message.startswith(f"{tmp_path / 'hosts.toml'}: slurm[1].name: 'node' clashes with host") and \
            "give the pool another name" in message, message
    else:
        assert [p.label for p in load(tmp_path, text).pools] == ["node"]
