"""Pipelined JetStream publishing of one camera stream's batches, in order, with a bounded window of pending acks.

nats-py's `js.publish` (and so `Bus.persist`) waits for each ack: one round trip per message. Here a batch is
published with a reply subject and the next one goes out at once; JetStream's ack comes back on that subject. At
most `window` batches of a stream wait for their ack; the next publish waits for the oldest when the window is
full, which is how a slow server slows ingest down (the demux thread then drops, see `demux.Handoff`) instead of a
queue growing without bound.

The acks of every stream of a pod arrive on one wildcard inbox subscription (`AckRouter`), each reply subject a
counter: no future, random token or JSON parse per message, which nats-py's `publish_async` would cost.

Every message has `Nats-Msg-Id: {session}:{first seq}`, so a publish that is sent again after a lost ack is stored
once (the MEDIA stream's duplicate window). A batch whose ack says error or does not come within `ack_timeout_s` is
sent again, with every batch after it, by `Bus.persist` (waiting for each ack), with a back-off, until stored or
the stream stops; a batch sent again can land in the stream after later ones (its seqs tell the recorder).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from argus_core.bus import Bus
from argus_core.bus import subjects as s
from argus_core.bus.codec import encode
from argus_core.bus.messages import MediaBatch

log = logging.getLogger(__name__)

_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0

# Everything a publish to JetStream can fail with, short of a bug.
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (nats.errors.Error, TimeoutError, OSError)

StoredCallback = Callable[[MediaBatch, float], None]  # (batch, seconds from send to ack)

_PENDING, _STORED, _FAILED = 0, 1, 2


@dataclass(slots=True)
class _InFlight:
    batch: MediaBatch
    subject: str
    msg_id: str
    sent: float
    window: AckWindow
    token: str = ""
    state: int = _PENDING
    error: str = ""


class AckRouter:
    """The acks of every stream a pod publishes, on one wildcard inbox. `start()` before use, `close()` after."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._prefix = ""
        self._pending: dict[str, _InFlight] = {}
        self._counter = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        if self._sub is not None:
            return
        self._prefix = self._bus.nc.new_inbox() + "."
        self._sub = await self._bus.nc.subscribe(self._prefix + "*", cb=self._on_ack, pending_msgs_limit=1_000_000)

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not self._bus.nc.is_closed:
            try:
                await sub.unsubscribe()
            except nats.errors.Error as exc:
                log.debug("ack subscription: %r", exc)
        self._pending.clear()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def reply_for(self, item: _InFlight) -> str:
        token = str(next(self._counter))
        item.token = token
        self._pending[token] = item
        return self._prefix + token

    def forget(self, item: _InFlight) -> None:
        self._pending.pop(item.token, None)

    async def _on_ack(self, msg: Msg) -> None:
        item = self._pending.pop(msg.subject[len(self._prefix) :], None)
        if item is None:
            return
        data = msg.data
        if msg.headers and msg.headers.get("Status") == "503":
            item.window.acked(item, "no JetStream stream answers for this subject")
        elif b'"error"' in data:
            item.window.acked(item, data.decode(errors="replace")[:200])
        else:
            item.window.acked(item, "")


class AckWindow:
    """One camera stream's publisher. Not shared between tasks: one task calls `publish` and `flush`."""

    def __init__(
        self,
        bus: Bus,
        router: AckRouter,
        *,
        window: int = 64,
        ack_timeout_s: float = 5.0,
        on_stored: StoredCallback | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._bus = bus
        self._router = router
        self._window = max(1, window)
        self._ack_timeout_s = ack_timeout_s
        self._on_stored = on_stored
        self._on_failure = on_failure
        self._inflight: deque[_InFlight] = deque()
        self._progress = asyncio.Event()
        self._stopping = False
        self._subject = ""
        self._subject_of: tuple[str, str] = ("", "")
        self.retries = 0
        self.abandoned = 0

    @property
    def pending(self) -> int:
        return len(self._inflight)

    def stop_retrying(self) -> None:
        """Make a retry loop give up at its next attempt (the stream is being stopped); acks are still awaited."""
        self._stopping = True

    def acked(self, item: _InFlight, error: str) -> None:
        """The router's call: JetStream answered for `item` (`error` empty when stored)."""
        if error:
            item.state, item.error = _FAILED, error
        else:
            item.state = _STORED
            if self._on_stored is not None:
                self._on_stored(item.batch, time.monotonic() - item.sent)
        self._progress.set()

    async def publish(self, batch: MediaBatch) -> None:
        if self._subject_of != (batch.camera, batch.stream):
            self._subject_of = (batch.camera, batch.stream)
            self._subject = s.RECORD.format(camera=batch.camera, stream=batch.stream)
        item = _InFlight(batch, self._subject, f"{batch.session}:{batch.packets[0].seq}", time.monotonic(), self)
        self._reap()
        while len(self._inflight) >= self._window:
            await self._settle_oldest()
        self._inflight.append(item)
        reply = self._router.reply_for(item)
        try:
            await self._bus.nc.publish(
                item.subject, encode(s.RECORD, batch), reply=reply, headers={"Nats-Msg-Id": item.msg_id}
            )
        except PUBLISH_ERRORS as exc:
            self._failed(item, f"{type(exc).__name__}: {exc}")
            await self._retry_all()

    async def flush(self, timeout_s: float) -> int:
        """Wait until every batch is stored (retrying what fails) or `timeout_s` passed; returns how many packets
        were given up."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._inflight:
                    await self._settle_oldest()
        except PUBLISH_ERRORS:  # out of time, or a retry gave up because the stream is stopping
            pass
        return self.abandon()

    def abandon(self) -> int:
        """Give up on every pending batch; returns how many packets they held."""
        count = 0
        while self._inflight:
            item = self._inflight.popleft()
            self._router.forget(item)
            if item.state != _STORED:
                count += len(item.batch.packets)
        if count:
            self.abandoned += count
            log.warning("gave up %d unacknowledged packet(s)", count)
        return count

    # --- internals ----------------------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Drop stored batches from the head of the window (never waits)."""
        inflight = self._inflight
        while inflight and inflight[0].state == _STORED:
            inflight.popleft()

    async def _settle_oldest(self) -> None:
        self._reap()
        if not self._inflight:
            return
        head = self._inflight[0]
        while head.state == _PENDING:
            remaining = self._ack_timeout_s - (time.monotonic() - head.sent)
            if remaining <= 0:
                break
            self._progress.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
            except TimeoutError:
                break
        if head.state == _STORED:
            self._reap()
            return
        self._failed(head, head.error or f"no ack within {self._ack_timeout_s:g} s")
        await self._retry_all()

    def _failed(self, item: _InFlight, text: str) -> None:
        message = f"publish of {item.msg_id} failed: {text}"
        log.warning("%s", message, extra={"camera": item.batch.camera})
        if self._on_failure is not None:
            self._on_failure(message)

    async def _retry_all(self) -> None:
        """Send every batch not yet stored again, in order, each until stored (duplicates are dropped by the
        server)."""
        for item in list(self._inflight):
            if item.state == _STORED:
                continue
            self._router.forget(item)
            await self._persist(item)
        self._inflight.clear()

    async def _persist(self, item: _InFlight) -> None:
        delay = _RETRY_FIRST_S
        while True:
            self.retries += 1
            try:
                await self._bus.persist(
                    s.RECORD,
                    item.batch,
                    msg_id=item.msg_id,
                    ack_timeout_s=self._ack_timeout_s,
                    camera=item.batch.camera,
                    stream=item.batch.stream,
                )
            except PUBLISH_ERRORS as exc:
                self._failed(item, f"{type(exc).__name__}: {exc}")
                if self._stopping:
                    raise
                await asyncio.sleep(delay)
                delay = min(_RETRY_MAX_S, delay * 2)
                continue
            item.state = _STORED
            if self._on_stored is not None:
                self._on_stored(item.batch, time.monotonic() - item.sent)
            return
