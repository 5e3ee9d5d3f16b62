"""PTZ commands off the bus: request/reply on `argus.ptz.command.<camera>`, shared by every ptz pod (a queue group).

Each camera's commands run in order on a worker of their own, so one camera that is slow to answer never delays
another; a worker ends after a while without commands. A camera's queue is bounded (`ARGUS_PTZ_CAMERA_QUEUE`): a
command that finds it full is answered `busy` at once rather than late. While the pod stops it answers no new
command (the queue group sends them to the other pods once it unsubscribes) and finishes the queued ones.
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from argus_core.bus import Bus, DecodeError, decode
from argus_core.bus import messages as m
from argus_core.bus import subjects as s
from argus_core.bus.subjects import SubjectError
from argus_ptz.commands import CommandHandler

log = logging.getLogger(__name__)

QUEUE_GROUP = "ptz"


class CommandServer:
    def __init__(self, bus: Bus, handler: CommandHandler, *, queue_size: int, worker_idle_s: float = 30.0) -> None:
        self._bus = bus
        self._handler = handler
        self._queue_size = queue_size
        self._worker_idle = worker_idle_s
        self._queues: dict[str, asyncio.Queue[Msg | None]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._sub: Subscription | None = None
        self._draining = False
        self._started = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Serve commands until `stopping` is set, then finish the queued ones."""
        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            self._sub = await self._bus.nc.subscribe(
                s.PTZ_COMMAND.wildcard(), queue=QUEUE_GROUP, cb=self._on_message, pending_msgs_limit=65536
            )
            await self._bus.nc.flush()  # the server knows the subscription before this pod says it is ready
            self._started.set()
            try:
                await stopping.wait()
            finally:
                await self.stop_intake()
                self._draining = True
                for queue in self._queues.values():
                    try:
                        queue.put_nowait(None)  # wakes an idle worker so it sees the drain
                    except asyncio.QueueFull:
                        pass  # a busy worker sees it when its queue empties

    async def wait_started(self) -> None:
        await self._started.wait()

    async def stop_intake(self) -> None:
        """Stop taking commands: the queue group sends them to the other pods from now on."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("unsubscribe: %s", exc)

    async def _answer(self, msg: Msg, result: m.PtzResult) -> None:
        if not msg.reply:
            return
        try:
            await self._bus.respond(msg, s.PTZ_RESULT, result)
        except nats.errors.Error as exc:
            log.warning("camera %s: reply not sent: %s", result.camera, exc, extra={"camera": result.camera})

    async def _on_message(self, msg: Msg) -> None:
        try:
            camera = s.PTZ_COMMAND.parse(msg.subject)["camera"]
        except SubjectError:
            return
        if self._draining or self._tasks is None:
            await self._answer(msg, m.PtzResult(camera=camera, ok=False, error="unavailable", detail="pod stopping"))
            return
        queue = self._queues.get(camera)
        if queue is None:
            queue = asyncio.Queue(self._queue_size)
            self._queues[camera] = queue
            self._tasks.create_task(self._work(camera, queue), name=f"ptz.commands.{camera}")
        try:
            queue.put_nowait(msg)
        except asyncio.QueueFull:
            detail = f"{self._queue_size} commands already wait for camera {camera}"
            await self._answer(msg, m.PtzResult(camera=camera, ok=False, error="busy", detail=detail))

    async def _work(self, camera: str, queue: asyncio.Queue[Msg | None]) -> None:
        try:
            while True:
                if self._draining and queue.empty():
                    return
                try:
                    msg = await asyncio.wait_for(queue.get(), self._worker_idle)
                except TimeoutError:
                    if queue.empty():
                        return
                    continue
                if msg is not None:
                    await self._serve(camera, msg)
        finally:
            if self._queues.get(camera) is queue:
                del self._queues[camera]

    async def _serve(self, camera: str, msg: Msg) -> None:
        try:
            command = decode(s.PTZ_COMMAND, msg.data, msg.subject)
        except DecodeError as exc:
            log.warning("%s", exc, extra={"camera": camera, "subject": msg.subject})
            result = m.PtzResult(camera=camera, ok=False, error="bad_request", detail=exc.problem)
        else:
            if command.camera != camera:
                detail = f"the command is for camera {command.camera} but was sent to {msg.subject}"
                result = m.PtzResult(camera=camera, ok=False, error="bad_request", detail=detail)
            else:
                try:
                    result = await self._handler.handle(command)
                except Exception:
                    log.exception("camera %s: command failed", camera, extra={"camera": camera})
                    result = m.PtzResult(camera=camera, ok=False, error="internal", detail="the error was logged")
        await self._answer(msg, result)
