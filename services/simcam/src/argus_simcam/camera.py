"""One simulated camera: its streams (main and sub), their producers, and the media shared between cameras.

`MediaHub` holds what every camera of a process shares: the panorama, the frame clocks (one per frame rate, all
from the same origin), the pre-encoded clip library, and one frame ticker task per frame rate that drives every
pre-encoded stream (so 100 cameras cost 25 wake-ups a second, not 2,500). Make one per process and pass it to
every `SimCamera`; a camera given none makes its own.

`SimCamera` ties one camera together. Each stream has a `StreamSource` (what RTSP sessions subscribe to) fed by

- `mode="live"`: a `LiveEncoder` thread, always on, following `view_provider()` (PTZ) and every fault;
- `mode="preencoded"`: the shared clip with this camera's own timecode slice, made only while someone watches.
  While the picture must differ from the clip (freeze, cover, defocus, shift, a main-stream resolution fault, or
  the view away from home), the stream is encoded live instead, and it returns to the clip at a clip keyframe.
  H.265 cameras always encode live: the running time code is spliced into H.264 clips only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Final, Literal

from argus_simcam import h264, h265
from argus_simcam.encoder import EncoderError, LiveEncoder, ViewProvider, codec_available
from argus_simcam.faults import FaultState
from argus_simcam.preencoded import ClipKey, PreencodedLibrary, PreencodedStream
from argus_simcam.rtp import DEFAULT_MTU, max_payload_for
from argus_simcam.scene import Panorama, ViewWindow
from argus_simcam.stream import AccessUnit, Codec, FrameClock, StreamSource, StreamSpec

__all__ = ["MediaHub", "Mode", "SimCamera", "StreamSpec", "ViewWindow"]

_log = logging.getLogger(__name__)

Mode = Literal["live", "preencoded"]
STREAM_NAMES: Final = ("main", "sub")
_HOME: Final = (0.0, 0.0, 0.0)
_SWITCH_LEAD_FRAMES: Final = 2

TickCallback = Callable[[int], None]


class _Ticker:
    """Calls every callback once per frame of `clock`, in frame order, on the event loop."""

    def __init__(self, clock: FrameClock) -> None:
        self.clock = clock
        self.callbacks: list[TickCallback] = []
        self.task: asyncio.Task[None] | None = None
        self.late_ticks = 0

    async def run(self) -> None:
        clock = self.clock
        n = clock.now_index() + 1
        while True:
            delay = (clock.due_ns(n) - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            behind = clock.now_index() - n
            if behind > clock.fps:
                _log.warning("frame ticker at %d fps is %d frames behind; skipping ahead", clock.fps, behind)
                self.late_ticks += behind
                n += behind
            for callback in tuple(self.callbacks):
                try:
                    callback(n)
                except Exception:  # noqa: BLE001 - one stream's failure must not stop the others' frames
                    _log.exception("frame tick callback failed")
            n += 1


class MediaHub:
    """Media shared by the cameras of one process. `close()` when done (idempotent)."""

    def __init__(self, *, loop_s: float = 8.0, mtu: int = DEFAULT_MTU, seed: int = 7) -> None:
        wall = time.time_ns()
        mono = time.monotonic_ns()
        below_ms = wall % 1_000_000
        self._wall0 = wall - below_ms
        self._mono0 = mono - below_ms
        self.loop_s = loop_s
        self.mtu = mtu
        self._seed = seed
        self._panorama: Panorama | None = None
        self._panorama_lock = threading.Lock()
        self._clocks: dict[int, FrameClock] = {}
        self._tickers: dict[int, _Ticker] = {}
        self.library = PreencodedLibrary(self.panorama, max_payload_for(mtu))
        self._closed = False

    def panorama(self) -> Panorama:
        """The shared panorama, built on first use (thread-safe; blocking for a fraction of a second)."""
        with self._panorama_lock:
            if self._panorama is None:
                self._panorama = Panorama.build(self._seed)
            return self._panorama

    def clock(self, fps: int) -> FrameClock:
        clock = self._clocks.get(fps)
        if clock is None:
            clock = self._clocks[fps] = FrameClock(fps, self._mono0, self._wall0)
        return clock

    def add_tick(self, fps: int, callback: TickCallback) -> Callable[[], None]:
        """Call `callback(frame_index)` every frame at `fps`; returns a function that removes it."""
        if self._closed:
            raise RuntimeError("media hub closed")
        ticker = self._tickers.get(fps)
        if ticker is None:
            ticker = self._tickers[fps] = _Ticker(self.clock(fps))
            ticker.task = asyncio.get_running_loop().create_task(ticker.run(), name=f"simcam-ticker-{fps}")
        ticker.callbacks.append(callback)

        def remove() -> None:
            if callback in ticker.callbacks:
                ticker.callbacks.remove(callback)

        return remove

    async def close(self) -> None:
        self._closed = True
        tasks = [t.task for t in self._tickers.values() if t.task is not None]
        self._tickers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise


class _StreamRunner:
    """Feeds one `StreamSource` from a live encoder or from the pre-encoded clip."""

    def __init__(self, camera: SimCamera, name: str, spec: StreamSpec, source: StreamSource, hub: MediaHub) -> None:
        self.camera = camera
        self.name = name
        self.spec = spec
        self.source = source
        self.hub = hub
        self.clock = hub.clock(spec.fps)
        self.label = f"{camera.name}/{name}"
        self._live: LiveEncoder | None = None
        self._live_token: object | None = None
        self._live_stop_at: int | None = None
        self._retired: list[LiveEncoder] = []
        self._pre: PreencodedStream | None = None
        self._pre_active = False
        self._pre_need_key = False
        self._remove_tick: Callable[[], None] | None = None
        self._param_sets: tuple[bytes, ...] = ()

    async def start(self) -> None:
        camera = self.camera
        if camera.mode == "live":
            self._start_live()
            return
        key = ClipKey.for_spec(camera.codec, self.spec, self.hub.loop_s)
        clip = await self.hub.library.get(key)
        faults = camera.faults
        self._pre = PreencodedStream(clip, camera.name, self.clock, lambda: faults.clock_skew_ns, self.hub.library.text)
        self.source.set_parameter_sets(clip.parameter_sets, clip.key.width, clip.key.height)
        self.source.on_demand = self._on_demand
        self._remove_tick = self.hub.add_tick(self.spec.fps, self._tick)

    # -- live ------------------------------------------------------------------------------------------------------
    def _start_live(self) -> None:
        camera = self.camera
        token = object()
        encoder = LiveEncoder(
            label=self.label,
            name=camera.name,
            codec=camera.codec,
            spec=self.spec,
            clock=self.clock,
            faults=camera.faults,
            view_provider=camera.view_provider,
            panorama=self.hub.panorama(),
            deliver=functools.partial(self._deliver_live, token),
            loop=asyncio.get_running_loop(),
            follow_resolution=self.name == "main",
        )
        self._live, self._live_token, self._live_stop_at = encoder, token, None
        encoder.start()

    def _deliver_live(self, token: object, au: AccessUnit, width: int, height: int) -> None:
        if token is not self._live_token:
            return
        if au.keyframe:
            params = _parameter_sets(self.camera.codec, au.nals)
            if params and params != self._param_sets:
                self._param_sets = params
                self.source.set_parameter_sets(params, width, height)
        self.source.publish(au)

    def _retire_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._retired.append(self._live)
        self._live = self._live_token = self._live_stop_at = None
        self._retired = [e for e in self._retired if e.running]

    # -- pre-encoded -----------------------------------------------------------------------------------------------
    def _wants_live(self) -> bool:
        faults = self.camera.faults
        if faults.alters_picture:
            return True
        if self.name == "main" and faults.resolution is not None:
            return faults.resolution != (self.spec.width, self.spec.height)
        view = tuple(self.camera.view_provider())
        return any(abs(a - b) > 1e-6 for a, b in zip(view, _HOME, strict=True))

    def _on_demand(self, source: StreamSource) -> None:
        pre = self._pre
        if pre is None or self._live is not None or self._pre_active:
            return
        for au in pre.catch_up(self.clock.now_index()):
            source.publish(au)
        self._pre_active = True
        self._pre_need_key = False

    def _tick(self, n: int) -> None:
        pre = self._pre
        assert pre is not None
        source = self.source
        if self._wants_live():
            if self._live is not None and self._live_stop_at is not None:
                self._live.stop_before(None)
                self._live_stop_at = None
            if self._live is not None and not self._live.running:
                self._retire_live()
            if self._live is None:
                self._pre_active = False
                self._start_live()
                _log.info("%s: picture fault or moved view: encoding live", self.label)
            return
        if self._live is not None:
            gop = pre.clip.key.gop
            if self._live_stop_at is None:
                # Hand back to the clip at one of its keyframes, a few frames ahead so the encoder stops first.
                first = n + _SWITCH_LEAD_FRAMES
                self._live_stop_at = first + (-pre.position(first)) % gop
                self._live.stop_before(self._live_stop_at)
                return
            if n < self._live_stop_at:
                return
            self._retire_live()
            pre.reset()
            self._pre_active = source.subscriber_count > 0
            if not self._pre_active:
                source.reset_timeline()  # idle: the next consumer starts from a fresh catch-up
            self._pre_need_key = True
            self._param_sets = ()
            source.set_parameter_sets(pre.clip.parameter_sets, pre.clip.key.width, pre.clip.key.height)
            _log.info("%s: back to the pre-encoded clip", self.label)
        if not self._pre_active:
            return
        if source.subscriber_count == 0:
            self._pre_active = False
            source.reset_timeline()
            return
        if pre.next_index is not None and n < pre.next_index:
            return  # made already by catch_up()
        if pre.next_index is not None and n > pre.next_index:
            self._pre_need_key = True  # frames were missed: restart at a keyframe
        if self._pre_need_key:
            if pre.position(n) % pre.clip.key.gop:
                return
            pre.reset()
            self._pre_need_key = False
        source.publish(pre.make(n))

    async def close(self) -> None:
        if self._remove_tick is not None:
            self._remove_tick()
            self._remove_tick = None
        self.source.on_demand = None
        encoders = [e for e in (self._live, *self._retired) if e is not None]
        self._live = self._live_token = None
        self._retired = []
        for encoder in encoders:
            await encoder.close()

    @property
    def live_encoder(self) -> LiveEncoder | None:
        return self._live


def _parameter_sets(codec: Codec, nals: tuple[bytes, ...]) -> tuple[bytes, ...]:
    if codec == "h264":
        return tuple(n for n in nals if h264.nal_type(n) in (h264.NAL_SPS, h264.NAL_PPS))
    return h265.parameter_sets(nals)


class SimCamera:
    """A simulated camera's media: `streams["main"]` and `streams["sub"]` for the RTSP server."""

    def __init__(
        self,
        name: str,
        codec: Codec,
        main: StreamSpec,
        sub: StreamSpec | None,
        mode: Mode,
        credentials: tuple[str, str] | None,
        view_provider: ViewProvider | None,
        faults: FaultState,
        *,
        hub: MediaHub | None = None,
        queue_size: int = 150,
    ) -> None:
        if codec not in ("h264", "h265"):
            raise ValueError(f"unsupported codec {codec!r}")
        if mode not in ("live", "preencoded"):
            raise ValueError(f"unsupported mode {mode!r}")
        self.name = name
        self.codec: Codec = codec
        if mode == "preencoded" and codec == "h265":
            # The time-code slice is spliced into CAVLC H.264 only; an H.265 clip would loop with a frozen code,
            # and a receiver must always be able to read the capture time, so H.265 cameras encode live.
            _log.info("camera %s: H.265 has no pre-encoded mode with a running time code; encoding live", name)
            mode = "live"
        self.mode: Mode = mode
        self.credentials = credentials
        self.view_provider: ViewProvider = view_provider or (lambda: _HOME)
        self.faults = faults
        self.specs: dict[str, StreamSpec] = {"main": main} | ({"sub": sub} if sub is not None else {})
        rng = random.Random()
        self.streams: dict[str, StreamSource] = {
            stream: StreamSource(
                name,
                stream,
                codec,
                spec,
                corrupt_rate=lambda: faults.corrupt_nal_rate,
                drop_rate=lambda: faults.drop_nal_rate,
                rng=random.Random(rng.random()),
                queue_size=queue_size,
            )
            for stream, spec in self.specs.items()
        }
        self._hub = hub
        self._own_hub: MediaHub | None = None
        self._runners: dict[str, _StreamRunner] = {}
        self._started = False
        self._closed = False

    @property
    def hub(self) -> MediaHub | None:
        return self._hub or self._own_hub

    async def start(self) -> None:
        if self._started:
            return
        if not codec_available(self.codec):
            raise EncoderError(f"{self.codec} encoding is not available in this FFmpeg build")
        self._started = True
        hub = self._hub
        if hub is None:
            hub = self._own_hub = MediaHub()
        try:
            await asyncio.to_thread(hub.panorama)  # built once per hub, off the event loop
            for stream, spec in self.specs.items():
                runner = _StreamRunner(self, stream, spec, self.streams[stream], hub)
                self._runners[stream] = runner
                await runner.start()
        except BaseException:
            await self.close()
            raise
        _log.info("camera %s started (%s, %s)", self.name, self.codec, self.mode)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for source in self.streams.values():
            source.close()
        for runner in self._runners.values():
            await runner.close()
        if self._own_hub is not None:
            await self._own_hub.close()

    def live_encoder(self, stream: str) -> LiveEncoder | None:
        """The stream's live encoder while there is one (for tests and diagnostics)."""
        runner = self._runners.get(stream)
        return runner.live_encoder if runner is not None else None
