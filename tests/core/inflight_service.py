"""A service built on the runtime whose work takes time: it proves SIGTERM finishes in-flight work.

It answers PTZ status requests after `ARGUS_WORK_S` seconds. On SIGTERM it stops taking requests (stage 1) and
the replies already in progress are still sent (stage 2) before NATS is drained (stage 3).
"""

from __future__ import annotations

import asyncio
import sys

from nats.aio.msg import Msg

from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.client import decode_msg
from argus_core.runtime import Runtime, RuntimeConfig, Stage
from argus_core.runtime import main as run_service


class Config(RuntimeConfig, frozen=True, kw_only=True):
    work_s: float = 1.5


async def run(config: Config) -> int:
    async with Runtime("inflight", config) as rt:
        bus = await rt.connect_bus()
        inflight: set[asyncio.Task[None]] = set()

        async def work(msg: Msg) -> None:
            command = decode_msg(s.PTZ_COMMAND, msg)
            await asyncio.sleep(config.work_s)
            await bus.respond(msg, s.PTZ_RESULT, m.PtzResult(camera=command.camera, ok=True, detail="done"))

        async def on_request(msg: Msg) -> None:
            task = asyncio.create_task(work(msg), name="inflight.work")
            inflight.add(task)
            task.add_done_callback(inflight.discard)

        sub = await bus.nc.subscribe(s.PTZ_COMMAND.wildcard(), cb=on_request)
        rt.on_stop(Stage.STOP_INTAKE, "unsubscribe", sub.unsubscribe)

        async def main() -> None:
            await rt.stopping.wait()
            if inflight:
                await asyncio.wait(set(inflight))

        rt.set_ready()
        return await rt.serve(main())


if __name__ == "__main__":
    sys.exit(run_service("inflight", Config, run))
