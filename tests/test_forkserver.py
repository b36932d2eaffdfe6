"""One import of distributed per worker host: the nanny's process forks itself into the workers' forkserver.

What the user would check with ``ps``: per host, the nanny process, one
child of it with the same command line (its fork: no stdlib forkserver,
which is a new interpreter importing distributed and its preloads again),
and the host's workers as that forkserver's children; the workers compute, and a killed
worker is forked again from the same forkserver.
"""

from __future__ import annotations

import os
import signal

import launcher
from launcher.testing.clusters import session_members, ssh_inventory, wait_until


def _tree(pids):
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out[pid] = (ppid, comm, cmd)
    return out


def _host_tree(rec, label):
    tree = _tree([p for h in rec.hosts if h.label == label and h.role == "workers"
                  for p in session_members([h])])
    leader = [p for p, (pp, _, _) in tree.items() if pp not in tree]
    forks = [p for p, (pp, _, cmd) in tree.items() if leader and pp == leader[0] and cmd == tree[leader[0]][2]]
    trackers = [p for p in forks if _ignores_sigterm(p)]  # multiprocessing's resource tracker, forked
    servers = [p for p in forks if p not in trackers]
    workers = [p for p, (pp, _, _) in tree.items() if pp in servers]
    return tree, leader, servers, workers, trackers


def _ignores_sigterm(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        ignored = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn:"))
    return bool(ignored & (1 << (signal.SIGTERM - 1)))


def test_workers_fork_from_the_nanny_process_own_forkserver(sshd, state_dir, tmp_path):
    inv = ssh_inventory(tmp_path / "hosts.toml", sshd, name="zyg", workers=(1, 2),
                        host_extra={1: "nworkers = 1"})
    rec = launcher.launch(inv)
    try:
        labels = {h.address: h.label for h in rec.hosts if h.role == "workers"}
        for address, n in (("127.0.0.3", 1), ("127.0.0.4", 2)):
            tree, leader, servers, workers, trackers = _host_tree(rec, labels[address])
            assert len(leader) == 1 and "dask_worker" in tree[leader[0]][2], tree
            assert servers and all(tree[s][0] == leader[0] for s in servers), tree
            assert len(servers) == 1, sorted((p, pp, cmd[:60], cmd[-40:]) for p, (pp, _, cmd) in tree.items())
            assert len(workers) == n, tree
            assert not any("multiprocessing.forkserver import main" in c for _, _, c in tree.values()), tree
            # the resource tracker is a fork too, not a new interpreter
            assert len(trackers) == 1 and not any("resource_tracker import main" in c for _, _, c in tree.values()), tree

        with launcher.connect() as client:
            assert sum(client.gather(client.map(lambda x: x + 1, range(20)))) == 210
            # What a worker of the 2-worker host needed to start was imported before the fork, once.
            modules = lambda: sorted(__import__("sys").modules)  # noqa: E731
            two = [a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()
                   if w["name"].startswith(labels["127.0.0.4"])]
            nanny = set(next(iter(client.run(modules, workers=two[:1], nanny=True).values())))
            after = set(next(iter(client.run(modules, workers=two[:1]).values()))) - nanny
            assert not {m for m in after if m.split(".")[0] in ("distributed", "dask", "prometheus_client")}, after
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 3
            # A killed worker comes back, forked by the same forkserver.
            _, _, servers, workers, _ = _host_tree(rec, labels["127.0.0.3"])
            os.kill(workers[0], signal.SIGKILL)
            assert wait_until(lambda: (lambda t: len(t[3]) == 1 and t[3] != workers and t[2] == servers)(
                _host_tree(rec, labels["127.0.0.3"])), 60)
            client.wait_for_workers(3, timeout=60)
    finally:
        launcher.stop("zyg")
    assert session_members(rec) == []
