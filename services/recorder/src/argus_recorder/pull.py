"""A lean pull from one durable JetStream consumer: what a camera worker fetches once a second.

nats-py's `PullSubscription.fetch` waits for each message with its own `asyncio.wait_for` (a task and a timer per
message): at 25 access units per second per camera that was the largest part of the recorder's event-loop time.
Here one `no_wait` request asks for everything pending (up to `batch`); the server answers in one burst, which a
subscription callback gathers into a list, and the request's end is the server's "no messages" status (or the
batch being full). Each request has its own reply subject, so a status that answers an older request (one that
timed out) cannot end a newer one; messages are kept whichever request they answer, since the consumer delivers
them in order.
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

_STATUS = "Status"
_DESCRIPTION = "Description"
_ENCODE = msgspec.json.Encoder()


_CONSUMER_NOT_FOUND = 10014


class _ApiError(msgspec.Struct):
    err_code: int = 0
    description: str = ""


class _InfoReply(msgspec.Struct):
    error: _ApiError | None = None


class ConsumerGone(Exception):
    """The consumer is not on the server (deleted by hand, or after its inactivity threshold)."""


class _Request(msgspec.Struct):
    batch: int
    no_wait: bool = True


class Pull:
    """`fetch(batch, wait_s)` the messages pending for `durable` on `stream`. `start()` first, `stop()` at the end."""

    def __init__(self, nc: NATS, stream: str, durable: str, *, api_prefix: str = "$JS.API") -> None:
        self._nc = nc
        self._subject = f"{api_prefix}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._info = f"{api_prefix}.CONSUMER.INFO.{stream}.{durable}"
        self._inbox = ""
        self._sub: Subscription | None = None
        self._got: list[Msg] = []
        self._want = 0
        self._token = ""
        self._serial = 0
        self._done = asyncio.Event()
        self._gone = ""
        self._answered = False

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(self._inbox + ".*", cb=self._arrived)

    async def stop(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def fetch(self, batch: int, wait_s: float) -> list[Msg]:
        """Up to `batch` messages pending now (none if there are none); raises what publishing raises, and
        `ConsumerGone` once the server says the consumer does not exist."""
        if self._sub is None:
            raise RuntimeError("Pull.start() first")
        self._serial += 1
        self._token = str(self._serial)
        self._want = batch - len(self._got)
        self._done.clear()
        self._answered = False
        if self._want > 0:
            reply = f"{self._inbox}.{self._token}"
            await self._nc.publish(self._subject, _ENCODE.encode(_Request(batch=self._want)), reply=reply)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._done.wait()
        got, self._got = self._got, []
        if not got and not self._answered and not self._gone and self._want > 0:
            # A consumer answers a no_wait request at once, if only with "no messages". Silence: JetStream drops
            # requests for a consumer it does not have (without "no responders": its API listens on `$JS.API.>`).
            await self._check_exists(wait_s)
        if self._gone and not got:
            raise ConsumerGone(self._gone)
        return got

    async def _check_exists(self, wait_s: float) -> None:
        try:
            reply = await self._nc.request(self._info, b"", timeout=wait_s)
        except (nats.errors.Error, TimeoutError):
            return  # the bus is slow or away: not a verdict
        error = msgspec.json.decode(reply.data, type=_InfoReply).error
        if error is not None and error.err_code == _CONSUMER_NOT_FOUND:
            self._gone = f"{self._info}: {error.description}"

    async def _arrived(self, msg: Msg) -> None:
        self._answered = True
        headers = msg.headers
        if headers and _STATUS in headers and not msg.data:
            # 404 no messages / 408 request expired / 409 (e.g. the consumer was deleted): this request is over.
            # Heartbeats (100) do not come: the request asks for none.
            code = headers[_STATUS]
            description = headers.get(_DESCRIPTION, "")
            if code == "409" and "deleted" in description.lower():  # deleted while a request waited
                self._gone = f"{self._subject}: {code} {description}"
            if msg.subject.endswith("." + self._token):
                self._done.set()
            return
        self._got.append(msg)
        if len(self._got) >= self._want:
            self._done.set()
