"""Who uses a running cluster: its connected clients and the tasks in flight (``pyku-launch status``).

Asks the scheduler's ``pyku_usage`` handler (the preload of
launcher/remote/usage.py). A scheduler started before that preload existed
has no such handler: its usage is unknown (None), not empty.
"""

from __future__ import annotations

import asyncio


async def read(address: str, security, timeout: float = 5.0) -> dict | None:
    """``{"clients": [{who, since, address, tasks, client}], "processing": n, "queued": n}``, or None."""
    from distributed.core import rpc

    args = security.get_connection_args("client") if security is not None else {}
    r = rpc(address, connection_args=args, timeout=timeout)
    try:
        return await asyncio.wait_for(r.pyku_usage(), timeout)
    except Exception:  # an older scheduler (no handler), or it stopped answering meanwhile
        return None
    finally:
        await r.close_rpc()
