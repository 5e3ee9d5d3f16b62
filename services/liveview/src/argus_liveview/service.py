"""The liveview service: relays live video to browsers over WebRTC (WHEP).

Until its issue lands it starts, connects to what it depends on, reports ready and stops cleanly.
"""

from __future__ import annotations

from argus_core.identity import TokenVerifier
from argus_core.runtime import Runtime
from argus_liveview.config import Config

SERVICE = "liveview"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        await rt.connect_bus()
        TokenVerifier.from_config(config.tokens)
        rt.set_ready()
        return await rt.serve(rt.stopping.wait())
