"""Test hosts in network namespaces: links that the tests can cut.

``NetnsLab(n)`` makes a bridge in this namespace (the "switch", with the
client's address ``10.254.77.1``) and ``n`` namespaces, each a host with one
veth link to the bridge and the address ``10.254.77.<11+i>``. Traffic stays
inside this machine: the addresses exist only on links the lab made, and
``close()`` removes them all. Cutting a host sets its link down.
"""

from __future__ import annotations

import os
import subprocess
import uuid

from . import sshd as _sshd

SUBNET = "10.254.77"
CLIENT = f"{SUBNET}.1"


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
        self.bridge = f"pkbr{tag}"
        self.hosts: list[str] = []
        self.namespaces: list[str] = []
        self.links: list[str] = []
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{CLIENT}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i in range(n):
                ns, outer, inner = f"pkns{tag}{i}", f"pk{tag}{i}a", f"pk{tag}{i}b"
                address = f"{SUBNET}.{11 + i}"
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
