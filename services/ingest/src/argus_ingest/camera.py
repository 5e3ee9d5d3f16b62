"""Pulling one camera stream for as long as this pod holds the camera: connect, publish, report, reconnect.

`StreamPuller.run()` loops over sessions. Each session is one RTSP connection with a new session id: a demux
thread (`demux.demux_rtsp`) reads access units, the loop turns them into `MediaPacket`s (`session.Session`),
gathers them into batches for recording (`batch.Batcher`; streams of `record_streams` only) and publishes those
(`publisher.AckWindow`); each packet also goes to the stream's `live.LiveTap`, which keeps the current GOP and
publishes it live while watched. When the connection ends (the camera closed it, a read stalled, an error) the
camera is reported offline with the reason and dialled again after an exponential back-off with jitter; a session
that stayed online for `stable_s` resets the back-off.

The main stream's puller also reports the camera's health (`CameraStatus`): connecting (with the pod it took the
camera from, on the first session after a takeover), online at the first packet of a session and then every
`status_interval_s` with frame rate, bitrate, last keyframe and clock offset (and at once when the codec
configuration changes), offline with the error.

`stop()` ends the current session: no packet is taken after it, the batch being filled is published and what was
sent is flushed (acks awaited), `quiesced` is set (the pod may release the lease now), then the demux thread is
joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Literal

from argus_core.bus import Bus
from argus_core.bus.messages import CameraState, CameraStatus, CodecConfig, MediaBatch, StreamName
from argus_ingest.batch import Batcher
from argus_ingest.demux import Closed, Coalescer, Handoff, Opened, Source, demux_rtsp
from argus_ingest.live import LiveDemands, LiveTap
from argus_ingest.metrics import Metrics
from argus_ingest.publisher import PUBLISH_ERRORS, AckRouter, AckWindow
from argus_ingest.session import Session, SessionPolicy
from argus_ingest.status import StatusReporter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PullSettings:
    stall_s: float = 5.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    stable_s: float = 10.0
    status_interval_s: float = 5.0
    queue_packets: int = 250
    put_wait_s: float = 0.5
    coalesce_s: float = 0.004
    publish_window: int = 16
    batch_max_s: float = 1.0
    batch_max_bytes: int = 4 * 1024 * 1024
    ack_timeout_s: float = 5.0
    flush_timeout_s: float = 5.0
    session: SessionPolicy = field(default_factory=SessionPolicy)


def backoff_delay(failures: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with jitter: a random point in the upper half of min(max, initial * 2^failures)."""
    ceiling = min(max_s, initial_s * 2.0 ** min(failures, 30))
    draw = rng.random() if rng is not None else random.random()
    return ceiling * (0.5 + 0.5 * draw)


@dataclass(frozen=True, slots=True)
class Takeover:
    previous_pod: str = ""
    kind: Literal["", "released", "expired"] = ""


@dataclass(slots=True)
class _Outcome:
    error: str
    online_s: float
    stopped: bool
    session: str


@dataclass(slots=True)
class _Stats:
    """Counts since the last status, for frame rate and bitrate."""

    since: float = field(default_factory=time.monotonic)
    packets: int = 0
    bytes: int = 0

    def take(self) -> tuple[float, float]:
        now = time.monotonic()
        elapsed = max(1e-3, now - self.since)
        fps, bps = self.packets / elapsed, self.bytes * 8 / elapsed
        self.since, self.packets, self.bytes = now, 0, 0
        return fps, bps


class StreamPuller:
    def __init__(
        self,
        bus: Bus,
        router: AckRouter,
        source: Source,
        *,
        pod: str,
        settings: PullSettings,
        metrics: Metrics,
        status: StatusReporter | None,
        takeover: Takeover | None = None,
        coalescer: Coalescer | None = None,
        live: LiveDemands | None = None,
        record: bool = True,
    ) -> None:
        self.bus = bus
        self.router = router
        self.source = source
        self.camera = source.camera
        self.stream: StreamName = source.stream
        self.pod = pod
        self.settings = settings
        self.metrics = metrics
        self._status = status  # None: this stream does not report the camera's health
        self._takeover = takeover or Takeover()
        self._coalescer = coalescer
        self._live = live
        self._record = record  # False: no batches for recording, live packets only
        self._tap: LiveTap | None = None
        self._stopping = False
        self._handoff: Handoff | None = None
        self._window: AckWindow | None = None
        self.quiesced = asyncio.Event()
        self.state: CameraState = "connecting"
        self.error = ""
        self.sessions = 0
        self.session: Session | None = None
        self._seen: dict[str, int] = {}
        self._stored_packets = 0
        self._stored_bytes = 0
        self._stop_event = asyncio.Event()
        self._packets = metrics.packets.labels(self.camera, self.stream)
        self._bytes = metrics.bytes.labels(self.camera, self.stream)

    def __repr__(self) -> str:
        return f"StreamPuller({self.camera}/{self.stream})"

    # --- control --------------------------------------------------------------------------------------------------

    def stop(self) -> None:
        """End pulling: the current session stops publishing now; `run()` returns once its thread ended."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_event.set()
        if self._window is not None:
            self._window.stop_retrying()
        if self._handoff is not None:
            self._handoff.interrupt()
        else:
            self.quiesced.set()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _stop_requested(self) -> bool:
        """`stop()` was called (a method, not a property: it changes across awaits)."""
        return self._stopping

    @property
    def online(self) -> bool:
        return self.state == "online"

    # --- the session loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        failures = 0
        rng = random.Random()
        if not self._stopping:
            self.quiesced.clear()  # a restart after a failure: publishing again until stopped
        if self._live is not None and self._tap is None:
            self._tap = self._live.tap(self.camera, self.stream)
        try:
            while not self._stopping:
                outcome = await self._run_session()
                if self._stopping or outcome.stopped:
                    break
                self.metrics.reconnects.labels(self.camera).inc()
                failures = 0 if outcome.online_s >= self.settings.stable_s else failures + 1
                delay = backoff_delay(failures, self.settings.backoff_initial_s, self.settings.backoff_max_s, rng)
                log.info(
                    "camera %s/%s offline (%s); reconnecting in %.1f s",
                    self.camera,
                    self.stream,
                    outcome.error,
                    delay,
                    extra={"camera": self.camera, "stream": self.stream},
                )
                await self._report("offline", outcome.error, outcome.session)
                try:
                    async with asyncio.timeout(delay):
                        await self._stop_event.wait()
                except TimeoutError:
                    pass
        finally:
            if self._live is not None and self._tap is not None:
                self._live.untap(self._tap)
                self._tap = None
            self.quiesced.set()

    async def _run_session(self) -> _Outcome:
        settings = self.settings
        session_id = uuid.uuid4().hex
        self.sessions += 1
        first = self.sessions == 1
        self.session = None
        self._seen = {}
        self.state = "connecting"
        self.error = ""
        await self._report(
            "connecting",
            "",
            session_id,
            takeover=self._takeover if first else None,
        )
        if self._stop_requested():  # stopped while reporting: no connection, nothing published
            return _Outcome("stopped", 0.0, True, session_id)
        loop = asyncio.get_running_loop()
        handoff = self._handoff = Handoff(
            loop, settings.queue_packets, put_wait_s=settings.put_wait_s, coalescer=self._coalescer
        )
        window = self._window = AckWindow(
            self.bus,
            self.router,
            window=settings.publish_window,
            ack_timeout_s=settings.ack_timeout_s,
            on_stored=self._stored,
            on_failure=self._publish_failed,
        )
        if self._stop_requested():
            window.stop_retrying()
        batcher = (
            Batcher(
                self.camera,
                self.stream,
                session_id,
                max_s=settings.batch_max_s,
                max_bytes=settings.batch_max_bytes,
            )
            if self._record
            else None
        )
        tap = self._tap
        if tap is not None:
            tap.reset(session_id)
        stopped = threading.Event()
        thread = threading.Thread(
            target=demux_rtsp,
            args=(self.source, handoff, stopped),
            name=f"ingest-{self.camera}-{self.stream}",
            daemon=True,
        )
        thread.start()
        online_at: float | None = None
        error = "stopped"
        closed_by_us = False
        stats = _Stats()
        last_report = time.monotonic()
        reported_config: CodecConfig | None = None
        try:
            while True:
                item = await handoff.get()
                if item is None:
                    closed_by_us = True
                    break
                if isinstance(item, Closed):
                    error = item.error
                    closed_by_us = item.stopped
                    break
                if isinstance(item, Opened):
                    self.session = Session(self.camera, self.stream, session_id, item.info, settings.session)
                    continue
                current: Session | None = self.session
                if current is None:  # pragma: no cover - the thread always says Opened first
                    continue
                for packet in current.push(item):
                    if self._stop_requested():
                        break
                    if tap is not None and tap.keep(packet):  # no coroutine per packet of an unwatched camera
                        await tap.publish(packet)
                    if batcher is not None and (batch := batcher.add(packet)) is not None:
                        await window.publish(batch)
                    stats.packets += 1
                    stats.bytes += len(packet.data)
                    if online_at is None:
                        online_at = time.monotonic()
                        self.state = "online"
                        last_report = online_at
                        stats = _Stats()
                        reported_config = current.config
                        await self._report("online", "", session_id)
                    elif current.config is not reported_config and packet.config is not None:
                        reported_config = current.config
                        await self._report("online", "", session_id, stats)
                        last_report = time.monotonic()
                if online_at is not None and time.monotonic() - last_report >= settings.status_interval_s:
                    last_report = time.monotonic()
                    self._flush_stored()
                    self._count_skips(current)
                    await self._report("online", "", session_id, stats)
        except PUBLISH_ERRORS as exc:
            error = f"publishing failed: {type(exc).__name__}"
        finally:
            stopped.set()
            self._handoff = None
            handoff.close()
            session = self.session
            try:
                if batcher is not None:
                    if session is not None and not closed_by_us and not self._stop_requested():
                        for packet in session.finish():
                            if (batch := batcher.add(packet)) is not None:
                                await window.publish(batch)
                    if (rest := batcher.take()) is not None:
                        await window.publish(rest)
            except PUBLISH_ERRORS:
                pass
            abandoned = await window.flush(settings.flush_timeout_s)
            if abandoned:
                self.metrics.publish_failures.inc(abandoned)
            self._window = None
            self._flush_stored()
            if session is not None:
                self._count_skips(session)
            if self._stop_requested():
                self.quiesced.set()
            await self._join(thread, handoff)
        self.error = error
        self.state = "offline"
        online_s = 0.0 if online_at is None else time.monotonic() - online_at
        return _Outcome(error, online_s, closed_by_us or self._stop_requested(), session_id)

    async def _join(self, thread: threading.Thread, handoff: Handoff) -> None:
        """Wait for the demux thread to end without blocking the loop (it ends at its next read at the latest)."""
        limit = 2 * self.settings.stall_s + 2.0  # a connect and a read, each bounded by the socket timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await handoff.finished.wait()
                while thread.is_alive():  # it returns right after its last word  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
        if thread.is_alive():
            log.warning("demux thread of %s/%s did not end in time", self.camera, self.stream)

    # --- accounting -----------------------------------------------------------------------------------------------

    def _stored(self, batch: MediaBatch, seconds: float) -> None:
        self._stored_packets += len(batch.packets)
        self._stored_bytes += sum(len(packet.data) for packet in batch.packets)
        self.metrics.publish_latency.observe(seconds)
        if self._stored_packets >= 250:
            self._flush_stored()

    def _flush_stored(self) -> None:
        """Counters are bumped in batches: a prometheus increment per packet costs more than the packet."""
        if self._stored_packets:
            self._packets.inc(self._stored_packets)
            self._bytes.inc(self._stored_bytes)
            self._stored_packets = self._stored_bytes = 0

    def _publish_failed(self, text: str) -> None:
        self.metrics.publish_failures.inc()

    def _count_skips(self, session: Session) -> None:
        """Move the session's skip counters into the metrics (at status time and at the end of a session)."""
        counters = session.counters
        seen = self._seen
        for reason, value in (
            ("no_pts", counters.no_pts),
            ("before_keyframe", counters.before_keyframe),
            ("lost", counters.lost),
            ("repaired", counters.repaired),
        ):
            delta = value - seen.get(reason, 0)
            if delta:
                seen[reason] = value
                if reason == "repaired":
                    self.metrics.repaired.labels(self.camera).inc(delta)
                else:
                    self.metrics.skipped.labels(self.camera, reason).inc(delta)

    # --- health ---------------------------------------------------------------------------------------------------

    async def _report(
        self,
        state: CameraState,
        error: str,
        session_id: str = "",
        stats: _Stats | None = None,
        *,
        takeover: Takeover | None = None,
    ) -> None:
        if self._status is None:
            return
        fps, bps = stats.take() if stats is not None else (0.0, 0.0)
        session = self.session
        config = session.config if session is not None else None
        offset = session.clock.offset_ns if session is not None else None
        await self._status.report(
            CameraStatus(
                camera=self.camera,
                state=state,
                at_ns=time.time_ns(),
                ingest_pod=self.pod,
                error=error,
                fps=round(fps, 2),
                bitrate_bps=round(bps),
                last_keyframe_ns=session.last_keyframe_ns if session is not None else 0,
                clock_offset_ms=None if offset is None else round(offset / 1e6, 3),
                codec=config.codec if config is not None else None,
                width=config.width if config is not None else 0,
                height=config.height if config is not None else 0,
                session=session_id,
                previous_pod=takeover.previous_pod if takeover is not None else "",
                takeover=takeover.kind if takeover is not None else "",
                time_trusted=bool(session is not None and session.clock.trusted),
            )
        )
