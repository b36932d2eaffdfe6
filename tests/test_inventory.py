"""The inventory: what a user writes in hosts/*.toml and what the launcher gets.

Everything here is offline: a file is written under tmp_path, loaded, and
either resolves to the expected HostSpecs or fails with one line naming the
file and the key.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from launcher.errors import InventoryError, LaunchError
from launcher.config.inventory import HostSpec, Inventory, load_inventory, parse_memory

HOSTS = Path(__file__).resolve().parent.parent / "hosts"
GiB = 2**30

MINIMAL = """
[scheduler]
address = "sched"

[[host]]
address = "w1"

[[host]]
address = "w2"
"""


def write(tmp_path: Path, content: str | bytes, name: str = "hosts.toml") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def load_text(tmp_path: Path, content: str | bytes) -> Inventory:
    return load_inventory(write(tmp_path, content))


def error_of(tmp_path: Path, content: str | bytes) -> str:
    path = write(tmp_path, content)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    message = str(info.value)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{path}: "), message
    assert info.value.exit_code == 2
    return message


# --- the shipped inventories -------------------------------------------------


def test_example_is_the_seed_setup():
    inv = load_inventory(HOSTS / "example.toml")
    assert inv.name == "pyku" and inv.protocol == "tls"
    assert (inv.port, inv.dashboard_port) == (8786, 8787)
    assert inv.scheduler.address == "machine_scheduler"
    assert inv.scheduler.transport == "ssh"
    assert [h.address for h in inv.hosts] == ["machine_worker1", "machine_worker2"]
    assert [h.label for h in inv.hosts] == ["machine_worker1", "machine_worker2"]
    for host in (inv.scheduler, *inv.hosts):
        assert host.env == "source /path/to/your/environment.src"
        assert host.transport == "ssh"
        assert host.identity == os.path.expanduser("~/.ssh/id_ed25519")
    for host in inv.hosts:
        assert (host.nworkers, host.nthreads, host.memory_limit) == (30, 1, 4 * GiB)


def test_localhost_needs_no_ssh():
    inv = load_inventory(HOSTS / "localhost.toml")
    assert inv.name == "local" and inv.protocol == "tls"
    assert (inv.port, inv.dashboard_port) == (8786, 8787)
    assert inv.scheduler.transport == "local" and inv.scheduler.address == "127.0.0.1"
    (host,) = inv.hosts
    assert (host.address, host.transport) == ("127.0.0.1", "local")
    assert (host.nworkers, host.nthreads, host.memory_limit) == (2, 1, None)


def test_loading_contacts_nothing(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the inventory must not touch the network")
    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    load_inventory(HOSTS / "example.toml")


# --- defaults, cascade, labels -----------------------------------------------


def test_defaults(tmp_path):
    path = write(tmp_path, MINIMAL)
    inv = load_inventory(path)
    assert inv.path == str(path.resolve())
    assert inv.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (inv.name, inv.protocol, inv.port, inv.dashboard_port) == ("pyku", "tls", 8786, 8787)
    assert (inv.death_timeout, inv.timeout, inv.check, inv.min_hosts) == (60.0, 120.0, (), None)
    assert inv.hosts[0] == HostSpec(
        address="w1", label="w1", transport="ssh", user=None, port=None, identity=None,
        known_hosts=None, ssh_config=None, accept_new=False, env=None, python=None,
        shell="bash", nworkers=30, nthreads=1, memory_limit=None, reserve=None,
        local_directory=None, listen=None, connect_timeout=10.0)


PRECEDENCE = """
[cluster]
name = "lab-2"
env = "module load cluster"
python = "py-cluster"
shell = "/bin/zsh"
protocol = "tcp"
port = 0
dashboard_port = 0
death_timeout = 30
timeout = 5.5
check = ["numpy", "xarray"]
min_hosts = 1

[ssh]
user = "u-ssh"
port = 2222
identity = "~/id_ssh"
known_hosts = "~/kh"
config = "~/ssh_config"
accept_new = true
connect_timeout = 3

[scheduler]
address = "sched"
listen = "10.0.0.1"
python = "py-sched"

[workers]
nworkers = 4
nthreads = 2
memory_limit = "1GiB"
reserve = "512MiB"
local_directory = "/scratch"

[[host]]
address = "inherits"

[[host]]
address = "overrides"
transport = "local"
user = "u.b"
port = 22
identity = "/id_b"
known_hosts = "/kh_b"
env = ""
python = "py-b"
nworkers = 8
nthreads = 1
memory_limit = "auto"
reserve = "auto"
local_directory = "~/spill"
listen = "10.0.0.2"
"""


def test_host_overrides_tables_and_tables_override_cluster(tmp_path):
    inv = load_text(tmp_path, PRECEDENCE)
    home = os.path.expanduser("~")
    assert (inv.name, inv.protocol, inv.port, inv.dashboard_port) == ("lab-2", "tcp", 0, 0)
    assert (inv.death_timeout, inv.timeout, inv.check, inv.min_hosts) == (30.0, 5.5, ("numpy", "xarray"), 1)
    inherits, overrides = inv.hosts
    assert inherits == HostSpec(
        address="inherits", label="inherits", transport="ssh", user="u-ssh", port=2222,
        identity=f"{home}/id_ssh", known_hosts=f"{home}/kh", ssh_config=f"{home}/ssh_config",
        accept_new=True, env="module load cluster", python="py-cluster", shell="/bin/zsh",
        nworkers=4, nthreads=2, memory_limit=GiB, reserve=512 * 2**20,
        local_directory="/scratch", listen=None, connect_timeout=3.0)
    # An override to "nothing" (env = "", "auto") beats the table's value;
    # local_directory is a remote path and keeps its "~" for the remote shell.
    assert overrides == HostSpec(
        address="overrides", label="overrides", transport="local", user="u.b", port=22,
        identity="/id_b", known_hosts="/kh_b", ssh_config=f"{home}/ssh_config",
        accept_new=True, env=None, python="py-b", shell="/bin/zsh",
        nworkers=8, nthreads=1, memory_limit=None, reserve=None,
        local_directory="~/spill", listen="10.0.0.2", connect_timeout=3.0)
    sched = inv.scheduler
    assert (sched.address, sched.listen, sched.python, sched.env) == (
        "sched", "10.0.0.1", "py-sched", "module load cluster")
    assert (sched.user, sched.port, sched.transport) == ("u-ssh", 2222, "ssh")


@pytest.mark.parametrize("tables, scheduler, host", [
    ({}, "ssh", "ssh"),
    ({"cluster": "local"}, "local", "local"),
    ({"ssh": "local"}, "local", "local"),
    ({"cluster": "local", "ssh": "ssh"}, "ssh", "ssh"),
    ({"workers": "local"}, "ssh", "local"),  # [workers] is not the scheduler's
    ({"cluster": "local", "workers": "ssh"}, "local", "ssh"),
    ({"scheduler": "local"}, "local", "ssh"),
    ({"workers": "local", "host": "ssh"}, "ssh", "ssh"),
])
def test_transport_cascade(tmp_path, tables, scheduler, host):
    text = "".join(f'[{t}]\ntransport = "{x}"\n' for t, x in tables.items()
                   if t not in ("scheduler", "host"))
    text += '[scheduler]\naddress = "s"\n' + (
        f'transport = "{tables["scheduler"]}"\n' if "scheduler" in tables else "")
    text += '[[host]]\naddress = "h"\n' + (
        f'transport = "{tables["host"]}"\n' if "host" in tables else "")
    inv = load_text(tmp_path, text)
    assert (inv.scheduler.transport, inv.hosts[0].transport) == (scheduler, host)


def test_labels_are_safe_and_unique(tmp_path):
    hosts = [("w", 22), ("w", 2222), ("a:b", None), ("a_b", None), ("A_B", 7),
             ("fe80::1%eth0", None), ("10.0.0.1", None)]
    text = '[scheduler]\naddress = "::1"\n' + "".join(
        f'[[host]]\naddress = "{a}"\n' + (f"port = {p}\n" if p else "") for a, p in hosts)
    inv = load_text(tmp_path, text)
    assert [h.label for h in inv.hosts] == [
        "w", "w-2222", "a_b", "a_b-2", "A_B-7", "fe80__1_eth0", "10.0.0.1"]
    assert inv.scheduler.label == "__1"


def test_bom_and_path_objects_are_accepted(tmp_path):
    inv = load_inventory(write(tmp_path, b"\xef\xbb\xbf" + MINIMAL.encode()))
    assert len(inv.hosts) == 2


@pytest.mark.parametrize("table, key, value", [
    ("scheduler", "address", "::1"),
    ("scheduler", "address", "fe80::1%eth0"),
    ("scheduler", "address", "node-01.cluster.example.org"),
    ("scheduler", "address", "my_alias"),
    ("scheduler", "user", "first.last"),
    ("host", "listen", "192.168.1.20"),
    ("host", "python", "/opt/conda envs/x/bin/python"),
])
def test_unusual_but_valid_values(tmp_path, table, key, value):
    load_text(tmp_path, _with(table, key, f'"{value}"'))


def test_login_shell_is_on_unless_turned_off(tmp_path):
    from launcher.remote.transport import agent_command

    on = load_text(tmp_path, _with("cluster", "name", '"a"'))
    off = load_text(tmp_path, _with("cluster", "login_shell", "false"))
    assert all(s.login_shell for s in (on.scheduler, *on.hosts))
    assert not any(s.login_shell for s in (off.scheduler, *off.hosts))
    assert agent_command(on.hosts[0]).startswith("bash -l -c ") and agent_command(off.hosts[0]).startswith("bash --norc -c ")


# --- errors: one line, the file, the key, what to do ----------------------------


def _with(table: str, key: str, value: str) -> str:
    """MINIMAL with ``key = value`` (TOML source) set in that table; "host" means host[2]."""
    scheduler, host2, head = {"address": '"sched"'}, {"address": '"w2"'}, ""
    if table == "scheduler":
        scheduler[key] = value
    elif table == "host":
        host2[key] = value
    else:
        head = f"[{table}]\n{key} = {value}\n"
    def lines(table: dict[str, str]) -> str:
        return "".join(f"{k} = {x}\n" for k, x in table.items())
    return (head + "[scheduler]\n" + lines(scheduler)
            + '[[host]]\naddress = "w1"\n[[host]]\n' + lines(host2))


BAD = {
    # the file as a whole
    "toml-syntax": ("[cluster]\nname = \n", "line 2, column 8: invalid TOML"),
    "toml-duplicate-key": ("[cluster]\nport = 1\nport = 2\n", "line 3, column"),
    "toml-unclosed-table": ("[cluster\n", "invalid TOML"),
    "empty": ("", "is empty (see hosts/example.toml"),
    "only-comments": ("# nothing\n\n", "holds no settings"),
    "binary-nul": (b"\x7fELF\x02\x01\x00\x00", "binary file"),
    "not-utf8": (b'[cluster]\nname = "caf\xe9"\n', "not UTF-8 text (byte 0xe9"),
    # tables
    "unknown-table": (MINIMAL + "[wrokers]\nnworkers = 2\n", "wrokers: unknown table (did you mean [workers]?)"),
    "hosts-plural": ('[scheduler]\naddress = "s"\n[[hosts]]\naddress = "a"\n', "hosts: unknown table (did you mean [[host]]?)"),
    "key-outside-table": ("nworkers = 3\n" + MINIMAL, "nworkers: key outside any table (put it under [workers] or [[host]] or [[slurm]])"),
    "table-as-array": ("[[workers]]\nnworkers = 2\n" + MINIMAL, "workers: must be a table, got an array of tables"),
    "table-as-value": ("ssh = 3\n" + MINIMAL, "ssh: must be a table, got 3"),
    "missing-scheduler": ('[[host]]\naddress = "a"\n', "scheduler: missing"),
    "missing-scheduler-address": ('[scheduler]\nlisten = "10.0.0.1"\n[[host]]\naddress = "a"\n', "scheduler.address: missing"),
    "scheduler-as-array": ('[[scheduler]]\naddress = "s"\n[[host]]\naddress = "a"\n', "scheduler: must be a table"),
    "no-host": ('[scheduler]\naddress = "s"\n', "host: no hosts"),
    "empty-host-array": ('host = []\n[scheduler]\naddress = "s"\n', "host: no hosts"),
    "host-as-table": ('[scheduler]\naddress = "s"\n[host]\naddress = "a"\n', "host: must be an array of tables, got a single [host] table (write [[host]]"),
    "host-as-string": ('host = "a"\n[scheduler]\naddress = "s"\n', 'host: must be an array of tables, got "a"'),
    "host-item-not-table": ('host = [1]\n[scheduler]\naddress = "s"\n', "host[1]: must be a table"),
    "host-missing-address": ('[scheduler]\naddress = "s"\n[[host]]\nnworkers = 2\n', "host[1].address: missing"),
    # keys
    "unknown-key": (_with("workers", "nworker", "2"), 'workers.nworker: unknown key (did you mean "nworkers"?)'),
    "unknown-host-key": (_with("host", "nwrkers", "2"), 'host[2].nwrkers: unknown key (did you mean "nworkers"?)'),
    "key-in-wrong-table": (_with("cluster", "nworkers", "2"), "cluster.nworkers: unknown key here (it belongs in [workers] or [[host]] or [[slurm]])"),
    "unknown-key-no-match": (_with("ssh", "zzz", "2"), "ssh.zzz: unknown key (allowed: user, port"),
    "nested-table": (MINIMAL + "[workers.extra]\na = 1\n", "workers.extra: unknown key"),
    "quoted-key-newline": ('[workers]\n"a\\nb" = 1\n' + MINIMAL, 'workers."a\\nb": unknown key'),
    # types
    "nworkers-string": (_with("host", "nworkers", '"ten"'), 'host[2].nworkers: must be a positive integer, got "ten"'),
    "nworkers-bool": (_with("workers", "nworkers", "true"), "workers.nworkers: must be a positive integer, got true"),
    "nworkers-float": (_with("workers", "nworkers", "2.0"), "workers.nworkers: must be a positive integer, got 2.0"),
    "port-bool": (_with("ssh", "port", "true"), "ssh.port: must be an integer from 1 to 65535, got true"),
    "accept-new-string": (_with("ssh", "accept_new", '"yes"'), 'ssh.accept_new: must be true or false, got "yes"'),
    "python-array": (_with("cluster", "python", '["python3"]'), "cluster.python: must be a string, got an array"),
    "env-number": (_with("cluster", "env", "1"), "cluster.env: must be a string of shell code, got 1"),
    "address-number": ('[scheduler]\naddress = 10\n[[host]]\naddress = "a"\n', "scheduler.address: must be a string, got 10"),
    "address-empty": (_with("host", "address", '""'), "host[2].address: must not be empty"),
    "check-not-array": (_with("cluster", "check", '"numpy"'), 'cluster.check: must be an array of distribution names, got "numpy"'),
    "check-bad-name": (_with("cluster", "check", '["numpy", "numpy; rm -rf ~"]'), 'cluster.check: must be an array of distribution names, "numpy; rm -rf ~" is not one'),
    "timeout-string": (_with("cluster", "timeout", '"long"'), 'cluster.timeout: must be a positive number of seconds, got "long"'),
    "death-timeout-zero": (_with("cluster", "death_timeout", "0"), "cluster.death_timeout: must be a positive number of seconds, got 0"),
    "connect-timeout-inf": (_with("ssh", "connect_timeout", "inf"), "ssh.connect_timeout: must be a positive number of seconds, got inf"),
    # values
    "nworkers-zero": (_with("workers", "nworkers", "0"), "workers.nworkers: must be a positive integer, got 0"),
    "nthreads-negative": (_with("host", "nthreads", "-1"), "host[2].nthreads: must be a positive integer, got -1"),
    "memory-junk": (_with("workers", "memory_limit", '"4 gigs"'), 'workers.memory_limit: must be a size like "4GiB" or "auto", got "4 gigs"'),
    "memory-float": (_with("host", "memory_limit", "4.5"), 'host[2].memory_limit: must be a size like "4GiB" or "auto", got 4.5'),
    "memory-tiny": (_with("workers", "memory_limit", '"1MB"'), 'workers.memory_limit: must be at least 64 MiB, got "1MB" (= 1000000 bytes)'),
    "memory-negative": (_with("workers", "memory_limit", "-5"), "workers.memory_limit: must be a size"),
    "reserve-junk": (_with("host", "reserve", '"lots"'), 'host[2].reserve: must be a size like "4GiB" or "auto", got "lots"'),
    "ssh-port-high": (_with("ssh", "port", "70000"), "ssh.port: must be an integer from 1 to 65535, got 70000"),
    "ssh-port-zero": (_with("ssh", "port", "0"), "ssh.port: must be an integer from 1 to 65535, got 0"),
    "host-port-zero": (_with("host", "port", "0"), "host[2].port: must be an integer from 1 to 65535, got 0"),
    "scheduler-ssh-port-negative": (_with("scheduler", "port", "-22"), "scheduler.port: must be an integer from 1 to 65535"),
    "cluster-port-high": (_with("cluster", "port", "65536"), "cluster.port: must be an integer from 0 to 65535, got 65536 (0 picks any free port)"),
    "dashboard-port-negative": (_with("cluster", "dashboard_port", "-1"), "cluster.dashboard_port: must be an integer from 0 to 65535, got -1"),
    "dashboard-port-false": (_with("cluster", "dashboard_port", "false"), "cluster.dashboard_port: must be an integer from 0 to 65535, got false"),
    "dashboard-equals-port": ("[cluster]\nport = 9000\ndashboard_port = 9000\n" + MINIMAL, "cluster.dashboard_port: must differ from cluster.port"),
    "duplicate-host": (MINIMAL + '[[host]]\naddress = "w1"\n', 'host[3].address: duplicate of host[1]: "w1", default port (remove one'),
    "duplicate-host-case": (MINIMAL + '[[host]]\naddress = "W2"\n', "host[3].address: duplicate of host[2]"),
    "duplicate-host-port": ('[ssh]\nport = 22\n' + MINIMAL + '[[host]]\naddress = "w1"\nport = 22\n', 'host[3].address: duplicate of host[1]: "w1", port 22'),
    "duplicate-local-host": ('[workers]\ntransport = "local"\n' + MINIMAL + '[[host]]\naddress = "w2"\nport = 2\n', "host[3].address: duplicate of host[2]"),
    "protocol": (_with("cluster", "protocol", '"http"'), 'cluster.protocol: must be "tls" or "tcp", got "http"'),
    "login-shell-string": (_with("cluster", "login_shell", '"no"'), 'cluster.login_shell: must be true or false, got "no"'),
    "protocol-case": (_with("cluster", "protocol", '"TLS"'), 'cluster.protocol: must be "tls" or "tcp", got "TLS"'),
    "transport-workers": (_with("workers", "transport", '"rsh"'), 'workers.transport: must be "ssh" or "local", got "rsh"'),
    "transport-host": (_with("host", "transport", '"mpi"'), 'host[2].transport: must be "ssh" or "local"'),
    "transport-scheduler": (_with("scheduler", "transport", "1"), 'scheduler.transport: must be "ssh" or "local", got 1'),
    "name-space": (_with("cluster", "name", '"my cluster"'), 'cluster.name: must be a letter then up to 63 letters, digits, _ or -, got "my cluster"'),
    "name-digit-first": (_with("cluster", "name", '"1st"'), "cluster.name: must be a letter"),
    "name-too-long": (_with("cluster", "name", '"' + "a" * 65 + '"'), "cluster.name: must be a letter"),
    "name-injection": (_with("cluster", "name", '"x;rm -rf ~"'), "cluster.name: must be a letter"),
    "name-path": (_with("cluster", "name", '"../x"'), "cluster.name: must be a letter"),
    "min-hosts-too-many": (_with("cluster", "min_hosts", "3"), "cluster.min_hosts: is 3 but the inventory lists 2 host(s)"),
    "min-hosts-zero": (_with("cluster", "min_hosts", "0"), "cluster.min_hosts: must be a positive integer, got 0"),
    "shell-with-arguments": (_with("cluster", "shell", '"bash -c evil"'), "cluster.shell: must be a shell program"),
    # strings that would break out of quoting
    "python-newline": (_with("cluster", "python", '"python3\\ntouch /tmp/x"'), "cluster.python: must not contain NUL or line breaks"),
    "python-nul": (_with("host", "python", '"py\\u0000"'), "host[2].python: must not contain NUL"),
    "identity-newline": (_with("ssh", "identity", '"~/k\\ney"'), "ssh.identity: must not contain NUL or line breaks"),
    "known-hosts-nul": (_with("host", "known_hosts", '"/kh\\u0000"'), "host[2].known_hosts: must not contain NUL"),
    "config-newline": (_with("ssh", "config", '"/cfg\\r"'), "ssh.config: must not contain NUL or line breaks"),
    "local-directory-newline": (_with("host", "local_directory", '"/tmp\\n/x"'), "host[2].local_directory: must not contain NUL"),
    "env-nul": (_with("cluster", "env", '"source a\\u0000b"'), "cluster.env: must not contain NUL"),
}


@pytest.mark.parametrize("content, expected", list(BAD.values()), ids=list(BAD))
def test_malformed_inventory_names_file_and_key(tmp_path, content, expected):
    message = error_of(tmp_path, content)
    assert expected in message


INJECTIONS = ["127.0.0.13; touch /tmp/x", "$(touch /tmp/x)", "`touch /tmp/x`", "a b",
              "a&&b", "a|b", "a>b", "-oProxyCommand=touch", "a\nb", "..", "[::1]", "a'b", 'a"b']


@pytest.mark.parametrize("table, key", [
    ("scheduler", "address"), ("scheduler", "listen"), ("scheduler", "user"),
    ("host", "address"), ("host", "listen"), ("host", "user"), ("ssh", "user"),
])
@pytest.mark.parametrize("value", INJECTIONS, ids=range(len(INJECTIONS)))
def test_shell_syntax_is_rejected_where_a_name_is_expected(tmp_path, table, key, value):
    toml_value = '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    message = error_of(tmp_path, _with(table, key, toml_value))
    keypath = {"host": "host[2]"}.get(table, table) + "." + key
    assert f": {keypath}: must be" in message


def test_env_is_shell_code_and_may_span_lines(tmp_path):
    inv = load_text(tmp_path, _with("cluster", "env", '"""\nmodule load a\nsource /x/env.src\n"""'))
    assert inv.hosts[0].env == "module load a\nsource /x/env.src\n"


def test_file_problems(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(InventoryError, match=r"nope\.toml: no such file"):
        load_inventory(missing)
    with pytest.raises(InventoryError, match="is a directory"):
        load_inventory(tmp_path)
    huge = write(tmp_path, "# x\n" * 300_000)
    with pytest.raises(InventoryError, match="larger than 1 MiB"):
        load_inventory(huge)


def test_errors_are_launch_errors_with_exit_code_2(tmp_path):
    with pytest.raises(LaunchError) as info:
        load_inventory(tmp_path / "nope.toml")
    assert info.value.exit_code == 2


def test_path_is_reported_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "[oops\n", name="lab.toml")
    with pytest.raises(InventoryError) as info:
        load_inventory("lab.toml")
    assert str(info.value).startswith("lab.toml: line 1, column")


# --- memory sizes --------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("4GiB", 4 * GiB),
    ("4G", 4 * 10**9),
    ("4 GB", 4 * 10**9),
    ("4gib", 4 * GiB),
    ("500MB", 500 * 10**6),
    ("0.5 TiB", GiB * 512),
    ("1.5KiB", 1536),
    ("64Mi", 64 * 2**20),
    ("2k", 2000),
    ("100", 100),
    ("100B", 100),
    (" 3 GiB ", 3 * GiB),
    (".5GiB", GiB // 2),
    ("1e3MB", 10**9),
    ("1.0000000001 B", 1),
    (4294967296, 4 * GiB),
    (0, 0),
])
def test_parse_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("junk", [
    "", "auto", "abc", "GB", "4 gigs", "4 G B", "-1GB", "1.2.3GB", "inf", "nan", "4GiBs",
    "1e999GB", -5, True, None, 4.0, [4],
])
def test_parse_memory_rejects_junk(junk):
    with pytest.raises(ValueError):
        parse_memory(junk)


def test_readme_shows_the_shipped_example_inventory():
    """README's inventory is hosts/example.toml, to the byte: the two cannot drift apart."""
    readme = (HOSTS.parent / "README.md").read_text()
    block = readme.split("`hosts/example.toml` is the seed's setup", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == (HOSTS / "example.toml").read_text()
