"""Test hosts in network namespaces: links that the tests can cut.

``NetnsLab(n)`` makes a bridge in this namespace (the "switch", with the
client's address ``10.254.<k>.1``) and ``n`` namespaces, each a host with one
veth link to the bridge and the address ``10.254.<k>.<11+i>``, where ``k``
is a /24 no address of this machine is in yet (labs of two test runs on one
machine do not share a subnet). Traffic stays
inside this machine: the addresses exist only on links the lab made, and
``close()`` removes them all. Cutting a host sets its link down.
"""

from __future__ import annotations

import os
import subprocess
import uuid

from . import sshd as _sshd

PREFIX = "10.254"  # the labs' /24s are taken from 10.254.0.0/16


def _free_subnet() -> str:
    """``10.254.<k>`` for a random /24 that no address of this machine is in yet."""
    import random

    used = _ip("-o", "-4", "addr", "show").stdout
    free = [k for k in range(1, 255) if f" {PREFIX}.{k}." not in used]
    if not free:
        raise RuntimeError(f"every /24 of {PREFIX}.0.0/16 is in use here")
    return f"{PREFIX}.{random.choice(free)}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_available() -> str | None:
    """None if namespaces can be made here, else the reason."""
    if os.geteuid() != 0:
        return "not root: cannot create network namespaces"
    name = f"pykuprobe{uuid.uuid4().hex[:6]}"
    try:
        r = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "no `ip` command (iproute2)"
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


class NetnsLab:
    """A bridge plus ``n`` namespaced hosts; remove everything with :meth:`close`."""

    def __init__(self, n: int):
        tag = uuid.uuid4().hex[:5]
        self.subnet = _free_subnet()
        self.client = f"{self.subnet}.1"  # this namespace's address on the lab's bridge
        self.bridge = f"pkbr{tag}"
        self.hosts: list[str] = []
        self.namespaces: list[str] = []
        self.links: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.client}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(n):
                ns, outer, inner = f"pkns{tag}{i}", f"pk{tag}{i}a", f"pk{tag}{i}b"
                address = f"{self.subnet}.{11 + i}"
                _ip("netns", "add", ns)
                self.namespaces.append(ns)
                _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self.links.append(outer)
                _ip("link", "set", inner, "netns", ns)
                _ip("link", "set", outer, "master", self.bridge)
                _ip("link", "set", outer, "up")
                _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
                _ip("-n", ns, "link", "set", inner, "up")
                _ip("-n", ns, "link", "set", "lo", "up")
                self.hosts.append(address)
                _sshd.NAMESPACED[address] = ns
        except BaseException:
            self.close()
            raise

    def cut(self, i: int) -> None:
        """Cut host ``i`` off: its link goes down, its processes keep running."""
        _ip("link", "set", self.links[i], "down")

    def close(self) -> None:
        """Delete the namespaces, links and bridge (stop processes inside first)."""
        for address in self.hosts:
            _sshd.NAMESPACED.pop(address, None)
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        for link in self.links:
            _ip("link", "del", link, check=False)
        _ip("link", "del", self.bridge, check=False)
        self.namespaces, self.links, self.hosts = [], [], []
