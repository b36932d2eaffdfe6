"""``pyku-launch env``: dask's own settings for a launched cluster, so that code that knows nothing of the launcher connects.

pyku's documentation and DWD pyku's CLI (``--dask_cluster ADDRESS``) connect
with ``Client(address)``; ``persistent_processing`` then finds that client
with ``default_client()``. On a TLS cluster a bare ``Client(address)`` has no
certificate and fails. dask reads its settings from ``DASK_*`` environment
variables and from YAML files in ``~/.config/dask``, and ``Client`` builds its
``Security`` from them, so this module writes the cluster's client certificate
to files (directory 0700, files 0600, under the launcher's state directory:
:func:`launcher.state.env_dir`) and gives the settings pointing at them:

- :func:`exports`: ``export`` lines for ``eval "$(pyku-launch env)"`` (the
  ssh-agent / docker-machine convention), for every process started from
  that shell: ``Client(address)``, ``Client()``, scripts, Jupyter kernels;
- :func:`write_dask_config`: the same as a dask YAML file, for processes not
  started from a shell (a JupyterLab server reads ``~/.config/dask``).

The settings name files, never key material: no key in any environment.
``stop`` removes a cluster's files with its record; a connection file's
(``pyku-launch share``) stay with the colleague who used it.

A scheduler that does not answer from here (only its host can reach it, as
``connect()``'s tunnels allow) cannot be reached by a plain ``Client``: a
variable cannot hold an SSH tunnel. Then :func:`target` refuses with the way
out: forward a port yourself and pass ``address=`` (TLS still verifies:
distributed checks the cluster's CA, not host names).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from launcher.config import options
from launcher.security import share
from launcher.store import state
from launcher.security import tls
from launcher.reach.client import resolve_name, running_record
from launcher.errors import LaunchError
from launcher.remote.commands import scheduler_host_port
from launcher.security.share import _write_private
from launcher.reach.tunnel import answers

#: The dask settings a TLS connection needs (``Security()`` reads them). Not
#: ``distributed.comm.require-encryption``: the ``tls://`` address already makes
#: every connection to the cluster TLS, and with it set a ``LocalCluster``
#: started from the same shell would fail (it has no scheduler certificate).
TLS_KEYS = ("distributed.comm.tls.ca-file", "distributed.comm.tls.client.cert", "distributed.comm.tls.client.key")
ADDRESS_KEY = "scheduler-address"   # Client() without an address connects here
CLUSTER_VAR = "PYKU_CLUSTER"        # and pyku-launch / connect() default to this cluster
VARIABLES = (options.env_name(ADDRESS_KEY), *map(options.env_name, TLS_KEYS), CLUSTER_VAR)


@dataclass(frozen=True)
class Target:
    """A cluster as a plain ``Client`` reaches it: its address and the client certificate to use."""

    what: str                     # "cluster 'pyku'" or "alice.json (cluster 'pyku')", for messages
    scheduler: str                # the address the settings name
    material: tls.Material | None  # None: a tcp cluster
    key: str                      # the directory under state.env_dir for the certificate files
    cluster: str                  # what PYKU_CLUSTER gets: the name, or the connection file's path
    via: str | None = None        # the scheduler's host over SSH (where a port can be forwarded through)

    def settings(self) -> list[tuple[str, object]]:
        """(dotted dask key, value) pairs; the certificate files are (re)written first."""
        pairs: list[tuple[str, object]] = [(ADDRESS_KEY, self.scheduler)]
        if self.material is not None:
            files = write_certificates(self.key, self.material)
            pairs += [(key, str(files[role])) for key, role in zip(TLS_KEYS, ("ca", "cert", "key"))]
        return pairs


def target(name: str | None = None, path: str | os.PathLike | None = None, address: str | None = None) -> Target:
    """The cluster ``name`` (default: ``$PYKU_CLUSTER`` or the only one), or connection file ``path``.

    ``address``: the scheduler as reached from here, when that is not its
    recorded address (a port forwarded with ``ssh -L``). LaunchError (one
    line) if there is no such running cluster or its scheduler does not
    answer at that address.
    """
    chosen = name or os.environ.get(CLUSTER_VAR)
    if path is None and chosen and share.is_connection_file(chosen):
        path = chosen
    if path is not None:
        conn = share.load(path)
        t = Target(f"{path} (cluster '{conn.name}')", conn.scheduler, conn.tls,
                   f"{conn.name}.{conn.serial}", str(Path(path).expanduser().resolve()), conn.scheduler_host or None)
        hint = "ask its owner whether it is still up"
    else:
        name = resolve_name(name)
        rec = running_record(name)
        srec = rec.scheduler_host
        via = srec.address if srec is not None and srec.spec.transport == "ssh" else None
        t = Target(f"cluster '{name}'", rec.scheduler, rec.tls if rec.protocol == "tls" else None, name, name, via)
        hint = f"pyku-launch status --name {name} tells whether it is up"
    if address is not None:
        t = dataclasses.replace(t, scheduler=_same_protocol(address, t.scheduler))
    host, port = scheduler_host_port(t.scheduler)
    if not answers(host, port):
        tunnel = "" if t.via is None or address is not None else (
            f"; if only {t.via} reaches it: forward a port (ssh -N -L 8786:{host}:{port} {t.via}) and run "
            f"pyku-launch env --address {t.scheduler.split('://', 1)[0]}://127.0.0.1:8786, since a variable "
            f"cannot hold the SSH tunnel connect() opens by itself")
        raise LaunchError(f"{t.what}: the scheduler does not answer at {t.scheduler} from here ({hint}){tunnel}")
    return t


def _same_protocol(address: str, recorded: str) -> str:
    """``address`` (``[proto://]host:port``) with the recorded protocol; LaunchError if it is not one."""
    proto = recorded.split("://", 1)[0]
    given, sep, _ = address.partition("://")
    full = address if sep else f"{proto}://{address}"
    host, port = scheduler_host_port(full)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LaunchError(f"--address {address}: not an address (host:port, e.g. {proto}://127.0.0.1:8786)")
    if sep and given != proto:
        raise LaunchError(f"--address {address}: the cluster speaks {proto}://, not {given}://")
    return full


def write_certificates(key: str, material: tls.Material) -> dict[str, Path]:
    """The CA, certificate and key as PEM files (0600) in ``state.env_dir(key)`` (0700); their paths."""
    directory = state.env_dir(key)
    for d in (directory.parent, directory):
        d.mkdir(mode=0o700, exist_ok=True)
        os.chmod(d, 0o700)
    files = {"ca": directory / "ca.pem", "cert": directory / "cert.pem", "key": directory / "key.pem"}
    for role, text in (("ca", material.ca), ("cert", material.cert), ("key", material.key)):
        _write_private(files[role], text)
    return files


def exports(t: Target) -> str:
    """Shell lines: ``export`` of every setting, ``unset`` of the TLS ones a tcp cluster does not use."""
    pairs = dict(t.settings())
    lines = [f"export {options.env_name(k)}={shlex.quote(str(v))}" for k, v in pairs.items()]
    lines += [f"unset {options.env_name(k)}" for k in TLS_KEYS if k not in pairs]
    lines.append(f"export {CLUSTER_VAR}={shlex.quote(t.cluster)}")
    lines.append(f"# {t.what} at {t.scheduler}: Client(address) and Client() in this shell connect to it"
                 + (" with its TLS certificate" if t.material else "") + "; undo: eval \"$(pyku-launch env --unset)\"")
    return "\n".join(lines)


def unset() -> str:
    """The shell line that undoes :func:`exports`."""
    return "unset " + " ".join(VARIABLES)


def nested(pairs: list[tuple[str, object]]) -> dict:
    """Dotted keys as the nested tables of a dask YAML file."""
    out: dict = {}
    for key, value in pairs:
        *parents, leaf = key.split(".")
        table = out
        for p in parents:
            table = table.setdefault(p, {})
        table[leaf] = value
    return out


def write_dask_config(t: Target, path: str | os.PathLike) -> Path:
    """The settings as a dask YAML file at ``path`` (0600), read by every dask process of this user
    whose config directory holds it (``~/.config/dask``, or ``$DASK_CONFIG``)."""
    import yaml

    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    head = f"# pyku-launch env --dask-config: {t.what}. Remove this file to undo.\n"
    _write_private(path, head + yaml.safe_dump(nested(t.settings()), sort_keys=False))
    return path
