"""The audit service: appends audit events to a hash-chained, verifiable log.

Until its issue lands it starts, connects to what it depends on, reports ready and stops cleanly.
"""

from __future__ import annotations

from argus_audit.config import Config
from argus_core.runtime import Runtime

SERVICE = "audit"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        await rt.connect_bus()
        await rt.open_db(config.db)
        await rt.open_store(config.s3)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
