"""~/.ssh/config is honoured: host aliases, users, ports, keys and ProxyJump."""

from __future__ import annotations

import textwrap

import launcher
from launcher.testing.clusters import session_members


def test_aliases_and_proxyjump_from_ssh_config(sshd, state_dir, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(textwrap.dedent(f"""\
        Host sched
            HostName 127.0.0.2
        Host worker-a
            HostName 127.0.0.3
        Host worker-b
            HostName 127.0.0.4
            ProxyJump sched
        Host *
            User {sshd.user}
            Port {sshd.port}
            IdentityFile {sshd.identity}
            UserKnownHostsFile {sshd.known_hosts}
        """))
    inv = tmp_path / "hosts.toml"
    # no user, port, identity or known_hosts in the inventory: all from the config
    inv.write_text(textwrap.dedent(f"""\
        [cluster]
        name = "aliases"
        env = '{sshd.env_line()}'
        python = "{sshd.python()}"
        port = 0
        dashboard_port = 0

        [ssh]
        config = "{config}"

        [scheduler]
        address = "sched"

        [workers]
        nworkers = 2
        memory_limit = "1GiB"

        [[host]]
        address = "worker-a"

        [[host]]
        address = "worker-b"
        """))
    rec = launcher.launch(inv)
    try:
        assert rec.scheduler.startswith("tls://127.0.0.2:")
        st = launcher.status("aliases")
        assert {h["address"]: h["live"] for h in st["hosts"] if h["role"] == "workers"} == {
            "worker-a": 2, "worker-b": 2}
        with launcher.connect("aliases") as client:
            hosts = {a.split("://")[1].rsplit(":", 1)[0] for a in client.scheduler_info(n_workers=-1)["workers"]}
        # workers bind to the address their host was reached on, not 0.0.0.0
        assert hosts == {"127.0.0.3", "127.0.0.4"}
    finally:
        launcher.stop("aliases")
    assert session_members(rec) == []
