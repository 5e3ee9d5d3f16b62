"""The recorder service: writes camera media to segments in object storage and indexes them.

Until its issue lands it starts, connects to what it depends on, reports ready and stops cleanly.
"""

from __future__ import annotations

from argus_core.runtime import Runtime
from argus_recorder.config import Config

SERVICE = "recorder"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        await rt.connect_bus()
        await rt.open_db(config.db)
        await rt.open_store(config.s3)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
