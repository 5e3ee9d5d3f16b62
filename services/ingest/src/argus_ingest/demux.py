"""The RTSP client of one camera stream: PyAV demuxing in a worker thread, handing units to the event loop.

`demux_rtsp()` runs in its own thread for one connection (one session): it opens the camera with FFmpeg's RTSP
demuxer (TCP interleaved by default, UDP as an option; video only), reports the stream's parameters, then reads
access units and hands each one over, never decoding anything. A connect or read that waits longer than the stall
time ends the connection (FFmpeg's socket timeout), as does the camera closing it. Stopping a session sets a flag
the thread reads after every packet, so it ends within a frame, or within the stall time if the camera is silent.

`Handoff` is the bounded channel from that thread to the loop: the thread takes a slot before it hands a unit
over (through the pod's `Coalescer`, which batches wake-ups of the loop) and the loop gives the slot back when it
takes the unit. When every slot stays taken for `put_wait_s` (the bus is slower than the camera), the thread drops
units instead of waiting longer, so that it keeps reading and the camera does not drop the connection; the next
unit handed over says how many were dropped.

Credentials travel only inside the URL given to FFmpeg; every message that leaves this module is redacted.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import av
import av.error

from argus_core.bus.messages import Codec
from argus_ingest.session import StreamInfo, Unit

log = logging.getLogger(__name__)

Transport = Literal["tcp", "udp"]

_CODECS: dict[str, Codec] = {"h264": "h264", "hevc": "h265", "h265": "h265"}


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with the register's credentials put in (percent-encoded), unless it carries its own."""
    if not username:
        return url
    parts = urlsplit(url)
    if "@" in parts.netloc:
        return url
    userinfo = quote(username, safe="")
    if password:
        userinfo += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{parts.netloc}"))


def redact_url(url: str) -> str:
    """`url` without its user information: safe to log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


@dataclass(frozen=True, slots=True)
class Source:
    camera: str
    stream: Literal["main", "sub"]
    url: str  # with credentials: never log it, use `safe_url`
    transport: Transport = "tcp"
    stall_s: float = 5.0

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)

    def redact(self, text: str) -> str:
        """`text` with the URL (and any credential in it) replaced by the redacted URL."""
        out = text.replace(self.url, self.safe_url)
        netloc = urlsplit(self.url).netloc
        if "@" in netloc:
            userinfo = netloc.rsplit("@", 1)[0]
            out = out.replace(userinfo, "***")
            _, _, password = userinfo.partition(":")
            if password:
                out = out.replace(password, "***")
        return out

    def __repr__(self) -> str:
        return f"Source({self.camera}/{self.stream} {self.safe_url} {self.transport})"


@dataclass(frozen=True, slots=True)
class Opened:
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection ended: `error` says why (redacted); `stopped` when we asked for it."""

    error: str
    stopped: bool = False


Item = Opened | Unit | Closed


class Coalescer:
    """Delivers items from many threads to the loop in batches, at most `delay_s` after the first one.

    One `call_soon_threadsafe` (a write to the loop's self-pipe and a wake-up) per batch instead of per packet; and
    since a batch's packets are published in one loop iteration, NATS writes them to its socket in one go and their
    acks come back together. With tens of cameras each wake-up and each write cost more than the packet's own work
    (measured: `tests/bench/ingest_bench.py`); the price is at most `delay_s` of latency.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, delay_s: float = 0.004) -> None:
        self._loop = loop
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self._ready: list[tuple[Callable[[Any], None], Any]] = []
        self._scheduled = False

    def submit(self, deliver: Callable[[Any], None], item: Any) -> None:
        """Thread side: `deliver(item)` will be called on the loop. RuntimeError if the loop is closed."""
        with self._lock:
            self._ready.append((deliver, item))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._arm)
        except RuntimeError:
            with self._lock:
                self._scheduled = False
            raise

    def _arm(self) -> None:
        if self._delay_s > 0:
            self._loop.call_later(self._delay_s, self._deliver)
        else:
            self._deliver()

    def _deliver(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
            self._scheduled = False
        for deliver, item in ready:
            deliver(item)


class Handoff:
    """Bounded thread-to-loop channel of one session (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        capacity: int,
        *,
        put_wait_s: float = 0.5,
        coalescer: Coalescer | None = None,
    ) -> None:
        self._loop = loop
        self._slots = threading.Semaphore(capacity)
        self._put_wait_s = put_wait_s
        self._coalescer = coalescer
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue()
        self._closed = threading.Event()
        self.ended = threading.Event()  # the thread handed over its Closed
        self.finished = asyncio.Event()  # the same, on the loop

    # --- thread side ----------------------------------------------------------------------------------------------

    def put(self, item: Opened | Unit) -> bool | None:
        """Hand `item` over: True; None when it had to be dropped (no slot in time); False when the loop is gone."""
        if self._closed.is_set():
            return False
        if not self._slots.acquire(timeout=self._put_wait_s):
            return None if not self._closed.is_set() else False
        return self._deliver(item)

    def end(self, closed: Closed) -> None:
        """The thread's last word; never blocks."""
        self.ended.set()
        self._deliver(closed)

    def _deliver(self, item: Item) -> bool:
        try:
            if self._coalescer is not None:
                self._coalescer.submit(self._arrive, item)
            else:
                self._loop.call_soon_threadsafe(self._arrive, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self._closed.set()
            return False
        return True

    def _arrive(self, item: Item) -> None:
        self._queue.put_nowait(item)
        if isinstance(item, Closed):
            self.finished.set()

    # --- loop side ------------------------------------------------------------------------------------------------

    async def get(self) -> Item | None:
        """The next item; None once `interrupt()` was called (the consumer should stop)."""
        item = await self._queue.get()
        if isinstance(item, Unit | Opened):
            self._slots.release()
        return item

    def interrupt(self) -> None:
        """Wake the consumer with None (on the loop)."""
        self._queue.put_nowait(None)

    def close(self) -> None:
        """No more items are wanted: a waiting thread gives up at its next attempt."""
        self._closed.set()
        self._slots.release()  # wake a thread blocked on a full channel


StopFlag = Callable[[], bool]


def _describe(exc: BaseException, source: Source, stall_s: float, opening: bool) -> str:
    if isinstance(exc, av.error.ExitError | av.error.TimeoutError | builtins.TimeoutError):
        return f"no answer within {stall_s:g} s while connecting" if opening else f"stalled: no media for {stall_s:g} s"
    if isinstance(exc, av.error.FFmpegError):
        text = exc.strerror or type(exc).__name__
    else:
        text = f"{type(exc).__name__}: {exc}"
    return source.redact(text)


def _stream_info(container: av.container.InputContainer, source: Source) -> tuple[av.VideoStream, StreamInfo] | str:
    if not container.streams.video:
        return "the camera offers no video stream"
    stream = container.streams.video[0]
    ctx = stream.codec_context
    codec = _CODECS.get(ctx.name)
    if codec is None:
        return f"unsupported codec {ctx.name} (Argus records H.264 and H.265)"
    time_base = stream.time_base
    if time_base is None:
        return "the stream has no time base"
    info = StreamInfo(
        codec=codec,
        width=int(ctx.width or 0),
        height=int(ctx.height or 0),
        extradata=bytes(ctx.extradata or b""),
        time_base_num=time_base.numerator,
        time_base_den=time_base.denominator,
    )
    return stream, info


def demux_rtsp(source: Source, handoff: Handoff, stopped: threading.Event) -> None:
    """Thread body: one connection's life. Always ends with `handoff.end()`."""
    closed = Closed("the camera closed the stream")
    # FFmpeg's own socket timeout (µs) ends a stalled read or connect in C. PyAV's `timeout=` would do it through
    # an interrupt callback that takes the GIL on every network wait: measurably dearer with tens of cameras.
    options = {
        "rtsp_transport": source.transport,
        "allowed_media_types": "video",
        "timeout": str(int(source.stall_s * 1_000_000)),
    }
    try:
        opening = True
        try:
            container = av.open(source.url, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            closed = Closed(_describe(exc, source, source.stall_s, opening), stopped=stopped.is_set())
            return
        opening = False
        with container:
            found = _stream_info(container, source)
            if isinstance(found, str):
                closed = Closed(found)
                return
            stream, info = found
            if not handoff.put(Opened(info)):
                closed = Closed("stopped", stopped=True)
                return
            lost = 0
            try:
                for packet in container.demux(stream):
                    if stopped.is_set():
                        closed = Closed("stopped", stopped=True)
                        return
                    if packet.size == 0:  # the flush packets at the end of the stream
                        continue
                    unit = Unit(
                        pts=packet.pts,
                        dts=packet.dts,
                        duration=int(packet.duration or 0),
                        keyframe=bool(packet.is_keyframe),
                        data=bytes(packet),
                        arrival_ns=time.time_ns(),
                        realtime_us=container.start_time_realtime,
                        lost=lost,
                    )
                    delivered = handoff.put(unit)
                    if delivered is None:
                        lost += 1
                    elif delivered:
                        lost = 0
                    else:
                        closed = Closed("stopped", stopped=True)
                        return
            except (av.error.FFmpegError, OSError) as exc:
                closed = Closed(_describe(exc, source, source.stall_s, opening), stopped=stopped.is_set())
                return
            if stopped.is_set():
                closed = Closed("stopped", stopped=True)
    except Exception as exc:  # noqa: BLE001 - the thread's top: report (redacted), never die silently
        trace = source.redact("".join(traceback.format_exception(exc)))
        log.error(  # noqa: TRY400 - the traceback is logged redacted, never raw
            "demux of %s/%s failed: %s", source.camera, source.stream, trace, extra={"camera": source.camera}
        )
        closed = Closed(_describe(exc, source, source.stall_s, False))
    finally:
        handoff.end(closed)
