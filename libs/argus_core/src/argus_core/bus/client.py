"""A NATS connection that speaks Argus's typed subjects: encode on the way out, decode at the edge on the way in."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from argus_core.bus.codec import DecodeError, decode, encode
from argus_core.bus.jetstream import Topology, ensure_topology
from argus_core.bus.subjects import Subject

log = logging.getLogger(__name__)

M = TypeVar("M", bound=msgspec.Struct)
R = TypeVar("R", bound=msgspec.Struct)


class Bus:
    """Owns one NATS connection; `drain()` may be called twice."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self._drained = False
        self._mark_closing: Callable[[], None] = lambda: None

    @classmethod
    async def connect(cls, url: str, *, name: str, connect_timeout_s: float = 5.0) -> Bus:
        closing = False  # a disconnect while draining is expected, not news

        async def on_error(exc: Exception) -> None:
            log.warning("nats: %s", exc)

        async def on_disconnect() -> None:
            if not closing:
                log.warning("nats: disconnected")

        async def on_reconnect() -> None:
            log.info("nats: reconnected")

        nc = await nats.connect(
            servers=[u.strip() for u in url.split(",") if u.strip()],
            name=name,
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            allow_reconnect=True,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
        )
        bus = cls(nc)

        def mark_closing() -> None:
            nonlocal closing
            closing = True

        bus._mark_closing = mark_closing
        return bus

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def ensure(self, topology: Topology) -> None:
        await ensure_topology(self.js, topology)

    async def publish(self, subject: Subject[M], message: M, /, **tokens: str) -> None:
        """Core NATS publish: at most once, for live data and events that a later one supersedes."""
        await self.nc.publish(subject.format(**tokens), encode(subject, message))

    async def persist(
        self,
        subject: Subject[M],
        message: M,
        /,
        *,
        msg_id: str | None = None,
        ack_timeout_s: float = 5.0,
        **tokens: str,
    ) -> api.PubAck:
        """JetStream publish: stored before this returns; `msg_id` makes a retry a no-op on the server."""
        headers = {"Nats-Msg-Id": msg_id} if msg_id else None
        return await self.js.publish(
            subject.format(**tokens), encode(subject, message), timeout=ack_timeout_s, headers=headers
        )

    async def subscribe(
        self,
        subject: Subject[M],
        handler: Callable[[M, str], Awaitable[None]],
        /,
        *,
        queue: str = "",
        pending_msgs_limit: int = 1024,
        **tokens: str,
    ) -> Subscription:
        """Core subscription on a (possibly wildcard) subject; a message that does not decode is logged, dropped."""

        async def on_message(msg: Msg) -> None:
            try:
                message = decode(subject, msg.data, msg.subject)
            except DecodeError as exc:
                log.warning("%s", exc, extra={"subject": msg.subject})
                return
            await handler(message, msg.subject)

        return await self.nc.subscribe(
            subject.wildcard(**tokens), queue=queue, cb=on_message, pending_msgs_limit=pending_msgs_limit
        )

    async def request(
        self, subject: Subject[M], message: M, reply: Subject[R], /, *, reply_timeout_s: float = 5.0, **tokens: str
    ) -> R:
        msg = await self.nc.request(subject.format(**tokens), encode(subject, message), timeout=reply_timeout_s)
        return decode(reply, msg.data, msg.subject)

    async def respond(self, msg: Msg, reply: Subject[R], message: R) -> None:
        await msg.respond(encode(reply, message))

    async def drain(self) -> None:
        """Flush what is published, let subscriptions deliver what they hold, then close."""
        if self._drained:
            return
        self._drained = True
        self._mark_closing()
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except nats.errors.ConnectionClosedError:
            pass

    async def close(self) -> None:
        self._drained = True
        self._mark_closing()
        if not self.nc.is_closed:
            await self.nc.close()


def decode_msg(subject: Subject[M], msg: Msg) -> M:
    return decode(subject, msg.data, msg.subject)
