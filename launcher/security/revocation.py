"""The revocation check every scheduler, nanny and worker of a TLS cluster runs.

This file is not imported by the launcher: its source is written into each
run directory (``pyku_revocation.py``) and loaded by ``dask scheduler
--preload`` / ``dask worker --preload --preload-nanny``. It needs only the
standard library and distributed.

Why not a CRL: distributed builds its ``ssl.SSLContext`` once per server and
offers no setting for CRLs or verify flags, and OpenSSL keeps the first of
several CRLs loaded into a live context. Instead, every accepted connection
(after distributed's own TLS handshake has checked the CA and the validity
dates) has its peer certificate's serial number looked up in
``revoked.txt`` in the run directory (``$PYKU_REVOKED_FILE``); ``pyku-launch revoke`` rewrites that file
on every host, and it is read again whenever it changes. A revoked peer gets
one error reply naming the revocation, then the connection is closed, so
``Client(...)`` raises ``PermissionError`` with that line.

``revoked.txt``: one line per certificate, ``<serial hex> <label> <date>``.
"""

import logging
import os

logger = logging.getLogger("distributed.pyku_revocation")
# A worker's preload runs from a copy in its local directory: the launch names
# the list in the environment every process of the tree inherits.
_FILE = os.environ.get("PYKU_REVOKED_FILE") or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "revoked.txt")
_cache = {"mtime": None, "revoked": {}}


def revoked() -> dict:
    """serial (int) -> (label, date) of every revoked certificate, re-read when the file changes."""
    try:
        mtime = os.stat(_FILE).st_mtime_ns
    except FileNotFoundError:
        return {}
    if mtime != _cache["mtime"]:
        table = {}
        with open(_FILE) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    table[int(parts[0], 16)] = (parts[1], parts[2])
        _cache.update(mtime=mtime, revoked=table)
    return _cache["revoked"]


def refusal(comm) -> str | None:
    """The one-line refusal for this connection's peer, None if it is not revoked."""
    cert = (getattr(comm, "extra_info", None) or {}).get("peercert") or {}
    serial = cert.get("serialNumber")
    if not serial:
        return None
    hit = revoked().get(int(serial, 16))
    if hit is None:
        return None
    label, date = hit
    return (f"certificate '{label}' (serial {int(serial, 16):X}) was revoked on {date}: "
            f"ask the cluster's owner for a new connection file (pyku-launch share)")


def _guard(handler):
    async def guarded(comm):
        why = refusal(comm)
        if why is None:
            return await handler(comm)
        from distributed.core import error_message

        logger.warning("refused a connection from %s: %s", comm.peer_address, why)
        try:
            msg = await comm.read()
            if isinstance(msg, dict) and msg.get("op") == "register-client":
                await comm.write([{"op": "stream-start", "error": why}])
            else:
                await comm.write(error_message(PermissionError(why), status="uncaught-error"))
        except Exception:  # noqa: S110 - the peer hung up first: nothing to tell it
            pass
        finally:
            comm.abort()

    guarded.pyku_revocation = True
    return guarded


def dask_setup(server):
    """Guard the server's listeners (preloads start once the server listens)."""
    for listener in getattr(server, "listeners", []):
        handler = listener.comm_handler
        if not getattr(handler, "pyku_revocation", False):
            listener.comm_handler = _guard(handler)
    logger.info("revocation check on %d listener(s) of %s", len(getattr(server, "listeners", [])),
                type(server).__name__)
