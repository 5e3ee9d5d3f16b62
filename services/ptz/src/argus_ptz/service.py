"""The ptz service: drives ONVIF pan/tilt/zoom with arbitration between operators.

Until its issue lands it starts, connects to what it depends on, reports ready and stops cleanly.
"""

from __future__ import annotations

from argus_core.identity import TokenVerifier
from argus_core.runtime import Runtime
from argus_ptz.config import Config

SERVICE = "ptz"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        await rt.connect_bus()
        await rt.open_db(config.db)
        TokenVerifier.from_config(config.tokens)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
