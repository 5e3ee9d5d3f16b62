"""Live encoding: render the scene and encode it in real time, in a worker thread (never on the event loop).

`LiveEncoder` owns one thread per (camera, stream). Every frame it asks `view_provider()` where the camera looks,
renders the scene at the frame's scene time with the frame's capture time burnt in, encodes it with PyAV
(libx264, or libx265 for H.265: `tune=zerolatency`, no B-frames, fixed GOP, SPS/PPS[/VPS] repeated before every
keyframe; H.264 at constant bit rate, padded with filler data as a CBR camera does) and hands the access unit to
the event loop with `call_soon_threadsafe`. A thread that falls behind catches up (its frames come late); one more
than a second behind skips frames rather than drifting. `request_keyframe()` makes the next frame an IDR. With
`follow_resolution`, a `FaultState.resolution` reopens the encoder at that size (new parameter sets in band, at an
IDR).

`open_encoder()` is shared with the pre-encoded clips, which use the same codec set-up with extra options.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Final

import av
from av.video.frame import PictureType

from argus_simcam import h264, h265
from argus_simcam.faults import FaultState
from argus_simcam.scene import CameraScene, Panorama, ViewWindow
from argus_simcam.stream import AccessUnit, Codec, FrameClock, StreamSpec

__all__ = [
    "EncoderError",
    "LiveEncoder",
    "ViewProvider",
    "codec_available",
    "encoder_name",
    "open_encoder",
    "packet_nals",
]

_log = logging.getLogger(__name__)

ViewProvider = Callable[[], tuple[float, float, float]]
_ENCODERS: Final[dict[str, str]] = {"h264": "libx264", "h265": "libx265"}
_MAX_LATE_SECONDS: Final = 1.0  # a thread this far behind skips frames; less is caught up (frames come late)


class EncoderError(RuntimeError):
    """The codec is not available or the encoder could not be opened."""


def encoder_name(codec: Codec) -> str:
    return _ENCODERS[codec]


def codec_available(codec: Codec) -> bool:
    return _ENCODERS[codec] in av.codecs_available


def open_encoder(
    codec: Codec,
    width: int,
    height: int,
    spec: StreamSpec,
    *,
    preset: str | None = None,
    extra_params: Mapping[str, str | int] | None = None,
    zerolatency: bool = True,
) -> av.VideoCodecContext:
    """An opened encoder: no B-frames, keyframe every `spec.gop` frames, parameter sets before each keyframe."""
    if not codec_available(codec):
        raise EncoderError(f"{_ENCODERS[codec]} is not available in this FFmpeg build")
    ctx = av.CodecContext.create(_ENCODERS[codec], "w")
    if not isinstance(ctx, av.VideoCodecContext):
        raise EncoderError(f"{_ENCODERS[codec]} is not a video encoder")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = Fraction(1, spec.fps)
    ctx.framerate = Fraction(spec.fps)
    ctx.bit_rate = spec.bitrate
    ctx.gop_size = spec.gop
    ctx.max_b_frames = 0
    gop = spec.gop
    kbps = max(1, spec.bitrate // 1000)
    params: dict[str, str | int] = {"keyint": gop, "min-keyint": gop, "scenecut": 0, "bframes": 0}
    options: dict[str, str] = {"preset": preset or (spec.preset if codec == "h264" else spec.preset_h265)}
    if zerolatency:
        options["tune"] = "zerolatency"
    if codec == "h264":
        params |= {
            "repeat-headers": 1,
            "annexb": 1,
            "aud": 0,
            "threads": 1,
            "sliced-threads": 0,
            "vbv-maxrate": kbps,
            "vbv-bufsize": kbps,
            "nal-hrd": "cbr",  # constant bit rate like most cameras: x264 pads with filler data NAL units
        }
        options["forced-idr"] = "1"
        key = "x264-params"
    else:
        params |= {
            "repeat-headers": 1,
            "info": 0,
            "log-level": "error",
            "frame-threads": 1,
            "pools": 1,
            "vbv-maxrate": kbps,
            "vbv-bufsize": kbps,
        }
        options["forced-idr"] = "1"
        key = "x265-params"
    params |= dict(extra_params or {})
    options[key] = ":".join(f"{k}={v}" for k, v in params.items())
    ctx.options = options
    try:
        ctx.open()
    except av.FFmpegError as exc:
        raise EncoderError(f"cannot open {_ENCODERS[codec]} at {width}x{height}: {exc}") from exc
    return ctx


def packet_nals(codec: Codec, data: bytes) -> tuple[bytes, ...]:
    """The NAL units of one encoded packet, without access unit delimiters and SEI."""
    nals = h264.split_annexb(data)
    if codec == "h264":
        return tuple(n for n in nals if h264.nal_type(n) not in (h264.NAL_AUD, h264.NAL_SEI))
    return tuple(n for n in nals if h265.nal_type(n) not in (h265.NAL_AUD, h265.NAL_SEI_PREFIX, h265.NAL_SEI_SUFFIX))


Deliver = Callable[[AccessUnit, int, int], None]


class LiveEncoder:
    """A thread rendering and encoding one stream in real time; units go to `deliver(au, width, height)`."""

    def __init__(
        self,
        *,
        label: str,
        name: str,
        codec: Codec,
        spec: StreamSpec,
        clock: FrameClock,
        faults: FaultState,
        view_provider: ViewProvider,
        panorama: Panorama,
        deliver: Deliver,
        loop: asyncio.AbstractEventLoop,
        follow_resolution: bool = False,
    ) -> None:
        self.label = label
        self._name = name
        self._codec: Codec = codec
        self._spec = spec
        self._clock = clock
        self._faults = faults
        self._view = view_provider
        self._panorama = panorama
        self._deliver = deliver
        self._loop = loop
        self._follow_resolution = follow_resolution
        self._stop = threading.Event()
        self._key_requested = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_at: int | None = None
        self._ctx: av.VideoCodecContext | None = None
        self._scene: CameraScene | None = None
        self._size: tuple[int, int] = (0, 0)
        self._captures: dict[int, int] = {}
        self.frames = 0
        self.skipped = 0
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"simcam-enc-{self.label}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to stop after the current frame (returns at once)."""
        self._stop.set()

    async def close(self) -> None:
        """Stop and wait for the thread to finish. Idempotent."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join)

    def request_keyframe(self) -> None:
        self._key_requested.set()

    def stop_before(self, n: int | None) -> None:
        """Stop without encoding frame `n` or later (None cancels); a hand-over to another producer at frame n."""
        self._stop_at = n

    def _run(self) -> None:
        clock = self._clock
        try:
            n = clock.now_index() + 1
            while not self._stop.is_set():
                delay = (clock.due_ns(n) - time.monotonic_ns()) / 1e9
                if delay > 0 and self._stop.wait(delay):
                    break
                late = clock.now_index() - n
                if late > _MAX_LATE_SECONDS * clock.fps:
                    self.skipped += late
                    n += late
                stop_at = self._stop_at
                if stop_at is not None and n >= stop_at:
                    break
                self._encode(n)
                n += 1
        except Exception as exc:  # noqa: BLE001 - the thread's top: logged and kept in .error
            self.error = exc
            _log.exception("%s: live encoder failed", self.label)
        finally:
            self._ctx = None

    def _open(self, size: tuple[int, int]) -> None:
        width, height = size
        self._ctx = open_encoder(self._codec, width, height, self._spec)
        self._scene = CameraScene(self._panorama, self._name, width, height)
        self._size = size
        self._captures.clear()
        _log.info("%s: encoding %s %dx%d at %d fps", self.label, self._codec, width, height, self._spec.fps)

    def _encode(self, n: int) -> None:
        faults = self._faults
        size = (self._spec.width, self._spec.height)
        if self._follow_resolution and faults.resolution is not None:
            size = faults.resolution
        if self._ctx is None or size != self._size:
            self._open(size)
        ctx, scene = self._ctx, self._scene
        if ctx is None or scene is None:
            raise EncoderError("encoder not open")
        clock = self._clock
        capture_ns = clock.capture_ns(n) + faults.clock_skew_ns
        view = ViewWindow(*self._view())
        picture = scene.render(view, clock.scene_time(n), faults, capture_ms=capture_ns // 1_000_000)
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = n
        if self._key_requested.is_set():
            self._key_requested.clear()
            frame.pict_type = PictureType.I
        if len(self._captures) > 64:
            self._captures.clear()
        self._captures[n] = capture_ns
        for packet in ctx.encode(frame):
            if packet.pts is None:
                continue
            captured = self._captures.pop(packet.pts, capture_ns)
            au = AccessUnit(
                packet_nals(self._codec, bytes(packet)), clock.pts(packet.pts), captured, packet.is_keyframe
            )
            self.frames += 1
            try:
                self._loop.call_soon_threadsafe(self._deliver, au, self._size[0], self._size[1])
            except RuntimeError:  # the loop is closed: nobody to deliver to
                self._stop.set()
                return
