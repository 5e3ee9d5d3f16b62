"""The ingest service: pulls every camera's RTSP onto the bus.

Until its issue lands it starts, connects to what it depends on, reports ready and stops cleanly.
"""

from __future__ import annotations

from argus_core.runtime import Runtime
from argus_ingest.config import Config

SERVICE = "ingest"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        await rt.connect_bus()
        await rt.open_db(config.db)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
