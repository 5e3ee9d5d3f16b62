"""Pre-encoded streams: one looping clip per (codec, size, fps, bitrate, GOP), shared by every camera, with a
timecode that still follows real time.

How (H.264). The clip is encoded once at start-up by libx264 with CAVLC (`cabac=0`), no deblocking, one reference
frame, no weighted prediction and slices of exactly `STRIP_HEIGHT / 16` macroblock rows (`slice-max-mbs`), from
the scene with the OSD strip blanked. The first slice of every picture therefore covers exactly the strip, and no
other slice can predict from it spatially (intra prediction and motion-vector prediction stop at slice borders;
deblocking is off on both sides). At send time each camera drops that slice and puts in its own, written by
`h264.StripSliceWriter` from the encoder's slice header (frame_num, POC, slice type, idr_pic_id, reference
marking are copied; first_mb_in_slice becomes 0, QP 51, deblocking off):

- in a keyframe (IDR) every strip macroblock is coded: black or white blocks as I_16x16 with a saturating DC
  coefficient (about 42 bits each), text blocks as I_PCM;
- in a P picture only the macroblocks whose content changed since the previous picture are coded (the timecode
  bits that flipped, the text once a second), every other one is P_Skip (an exact copy: all vectors are zero).

So a P picture costs a few hundred bits more than the clip's and a camera's work per frame is a few dozen
bit-writer calls. The encoder's own slices (and its CBR filler data) and their RTP payloads are made once per clip
and shared, byte for byte, by every camera; per camera and frame only the strip slice and the RTP headers differ.

The one thing the encoder could still do is point a motion vector of the picture below into the strip area of the
reference picture, where its reconstruction (black) differs from what a decoder sees; with the strip black in the
source and the scene static just below it, x264 does not. `encode_clip` checks it: it decodes the encoder's own
stream and a spliced one and compares the pictures below the strip, pixel for pixel (`Clip.drift_frames` counts
the pictures that differ, a warning is logged if any do; a difference would last to the next keyframe at most).

H.265 clips loop without a running timecode (the strip stays black): a CABAC slice writer is out of scope, so an
H.265 pre-encoded camera's pictures carry no readable time (`read_timecode` returns None).

A camera starts its loop at a phase of its own (so cameras' keyframes are spread out); a stream nobody watches
costs nothing: `PreencodedStream.catch_up()` builds the GOP in progress when the first consumer arrives.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from argus_simcam import h264, h265
from argus_simcam.encoder import open_encoder, packet_nals
from argus_simcam.rtp import payloads_for
from argus_simcam.scene import CameraScene, Panorama, ViewWindow
from argus_simcam.stream import AccessUnit, Codec, FrameClock, RtpTail, StreamSpec
from argus_simcam.timecode import BLOCK, COLUMNS, STRIP_HEIGHT, render_text, strip_text, timecode_bits

__all__ = [
    "Clip",
    "ClipFrame",
    "ClipKey",
    "PreencodedLibrary",
    "PreencodedStream",
    "TextMacroblocks",
    "encode_clip",
]

_log = logging.getLogger(__name__)

STRIP_ROWS: Final = STRIP_HEIGHT // BLOCK
_TC_ROWS: Final = 2
_PCM_CHROMA: Final = b"\x80" * 128


@dataclass(frozen=True)
class ClipKey:
    codec: Codec
    width: int
    height: int
    fps: int
    bitrate: int
    gop: int
    frames: int

    @classmethod
    def for_spec(cls, codec: Codec, spec: StreamSpec, loop_s: float, size: tuple[int, int] | None = None) -> ClipKey:
        width, height = size or (spec.width, spec.height)
        gop = spec.gop
        frames = max(1, round(loop_s * spec.fps / gop)) * gop
        return cls(codec, width, height, spec.fps, spec.bitrate, gop, frames)


@dataclass(frozen=True)
class ClipFrame:
    keyframe: bool
    header: h264.SliceHeader | None  # H.264: the first encoder slice's header, the strip slice's template
    nals: tuple[bytes, ...]  # the encoder's slices the cameras share (below the strip for H.264)
    payloads: tuple[bytes, ...]  # RTP payloads of `nals`


@dataclass(frozen=True)
class Clip:
    key: ClipKey
    frames: tuple[ClipFrame, ...]
    parameter_sets: tuple[bytes, ...]
    max_payload: int
    sps: h264.Sps | None = None
    pps: h264.Pps | None = None
    drift_frames: int = 0  # pictures whose part below the strip decoded differently once spliced (should be 0)

    @property
    def timecode(self) -> bool:
        return self.sps is not None and self.key.width >= COLUMNS * BLOCK

    @property
    def size(self) -> int:
        return sum(len(n) for f in self.frames for n in f.nals)


def encode_clip(key: ClipKey, panorama: Panorama, max_payload: int) -> Clip:
    """Render and encode the clip for `key` (blocking: seconds of CPU; run it in a thread)."""
    spec = StreamSpec(key.width, key.height, key.fps, key.bitrate, key.gop / key.fps)
    extra: dict[str, str | int] = {}
    if key.codec == "h264":
        extra = {
            "cabac": 0,
            "no-deblock": 1,
            "ref": 1,
            "weightp": 0,
            "slice-max-mbs": STRIP_ROWS * ((key.width + 15) // 16),
            "rc-lookahead": 0,
            "sync-lookahead": 0,
        }
    ctx = open_encoder(key.codec, key.width, key.height, spec, extra_params=extra)
    scene = CameraScene(panorama, "", key.width, key.height, osd=False)
    h = key.height
    packets: list[tuple[bool, tuple[bytes, ...]]] = []
    for n in range(key.frames):
        picture = scene.render(ViewWindow(), n / key.fps).copy()
        picture[:STRIP_HEIGHT] = 0
        picture[h : h + STRIP_HEIGHT // 4] = 128  # U rows 0..STRIP_HEIGHT/2 (two chroma rows per luma row of w)
        picture[h + h // 4 : h + h // 4 + STRIP_HEIGHT // 4] = 128
        frame = av.VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = n
        packets.extend((p.is_keyframe, packet_nals(key.codec, bytes(p))) for p in ctx.encode(frame))
    packets.extend((p.is_keyframe, packet_nals(key.codec, bytes(p))) for p in ctx.encode(None))
    if len(packets) != key.frames or not packets[0][0]:
        raise RuntimeError(f"clip {key}: got {len(packets)} pictures for {key.frames} frames")
    if key.codec == "h264":
        clip = _h264_clip(key, packets, max_payload)
        return replace(clip, drift_frames=_drift_frames(clip, packets))
    return _h265_clip(key, packets, max_payload)


def _drift_frames(clip: Clip, packets: list[tuple[bool, tuple[bytes, ...]]]) -> int:
    """Decode the encoder's stream and a spliced one side by side; count pictures that differ below the strip."""
    key = clip.key
    stream = PreencodedStream(
        clip, "VERIFY 0123456789", FrameClock(key.fps, 0, 1_234_567_890_123_000_000), lambda: 0, TextMacroblocks(), 0
    )
    decoders = (av.CodecContext.create("h264", "r"), av.CodecContext.create("h264", "r"))
    drift = 0
    for n, (_, original) in enumerate(packets):
        pictures: list[npt.NDArray[np.uint8]] = []
        for decoder, nals in zip(decoders, (original, stream.make(n).nals), strict=True):
            data = b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)
            for frame in decoder.decode(av.Packet(data)):
                plane = frame.planes[0]
                luma = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
                pictures.append(luma[STRIP_HEIGHT : key.height, : key.width])
        if len(pictures) != 2:
            drift += 1
            continue
        drift += not np.array_equal(pictures[0], pictures[1])
    if drift:
        _log.warning("clip %s: %d of %d pictures differ below the timecode strip once spliced", key, drift, key.frames)
    return drift


def _h264_clip(key: ClipKey, packets: list[tuple[bool, tuple[bytes, ...]]], max_payload: int) -> Clip:
    all_nals = [n for _, nals in packets for n in nals]
    sps_nal = next(n for n in all_nals if h264.nal_type(n) == h264.NAL_SPS)
    pps_nal = next(n for n in all_nals if h264.nal_type(n) == h264.NAL_PPS)
    sps, pps = h264.parse_sps(sps_nal), h264.parse_pps(pps_nal)
    strip_mbs = STRIP_ROWS * sps.width_mbs
    frames: list[ClipFrame] = []
    for keyframe, nals in packets:
        slices = [n for n in nals if h264.nal_type(n) in (h264.NAL_SLICE, h264.NAL_IDR)]
        headers = [h264.parse_slice_header(n, sps, pps) for n in slices]
        if headers[0].first_mb != 0 or len(headers) < 2 or headers[1].first_mb != strip_mbs:
            raise RuntimeError(f"clip {key}: the encoder's first slice does not cover exactly the strip")
        if any(h.disable_deblocking_filter_idc != 1 for h in headers):
            raise RuntimeError(f"clip {key}: deblocking is on")
        strip = slices[0]
        shared = tuple(n for n in nals if n is not strip and h264.nal_type(n) not in (h264.NAL_SPS, h264.NAL_PPS))
        frames.append(ClipFrame(keyframe, headers[0], shared, tuple(payloads_for("h264", shared, max_payload))))
    return Clip(key, tuple(frames), (sps_nal, pps_nal), max_payload, sps, pps)


def _h265_clip(key: ClipKey, packets: list[tuple[bool, tuple[bytes, ...]]], max_payload: int) -> Clip:
    params = h265.parameter_sets([n for _, nals in packets for n in nals])
    frames: list[ClipFrame] = []
    for keyframe, nals in packets:
        vcl = tuple(n for n in nals if h265.is_vcl(n))
        frames.append(ClipFrame(keyframe, None, vcl, tuple(payloads_for("h265", vcl, max_payload))))
    return Clip(key, tuple(frames), params, max_payload)


class PreencodedLibrary:
    """Clips by key, each encoded once (in a worker thread) however many cameras ask for it."""

    def __init__(self, panorama: Callable[[], Panorama], max_payload: int) -> None:
        self._panorama = panorama
        self.max_payload = max_payload
        self._clips: dict[ClipKey, asyncio.Future[Clip]] = {}
        self.text = TextMacroblocks()

    async def get(self, key: ClipKey) -> Clip:
        future = self._clips.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._clips[key] = future
            try:
                panorama = await asyncio.to_thread(self._panorama)
                clip = await asyncio.to_thread(encode_clip, key, panorama, self.max_payload)
            except BaseException as exc:
                del self._clips[key]
                future.set_exception(exc)
                future.exception()  # retrieved here; waiters get it too
                raise
            _log.info(
                "pre-encoded %s %dx%d@%d %d kb/s: %d frames, %d kB",
                key.codec,
                key.width,
                key.height,
                key.fps,
                key.bitrate // 1000,
                key.frames,
                clip.size // 1000,
            )
            future.set_result(clip)
            return clip
        return await asyncio.shield(future)

    def clips(self) -> Iterator[Clip]:
        return (f.result() for f in self._clips.values() if f.done() and not f.cancelled() and not f.exception())


class TextMacroblocks:
    """The strip's text row as macroblock kinds, cached per (position in the 48-pixel pattern, characters)."""

    def __init__(self, limit: int = 20_000) -> None:
        self._cache: dict[tuple[int, str], h264.MbKind] = {}
        self._limit = limit

    def row(self, text: str, cols: int) -> list[h264.MbKind]:
        out: list[h264.MbKind] = []
        cache = self._cache
        for m in range(cols):
            x0 = BLOCK * m
            lo = max(0, (x0 - 14) // 12 + 1)
            hi = (x0 + 13) // 12 + 1
            chars = text[lo:hi]
            offset = 2 + 12 * lo - x0
            key = (offset, chars)
            kind = cache.get(key)
            if kind is None:
                kind = self._render(offset, chars)
                if len(cache) >= self._limit:
                    cache.clear()
                cache[key] = kind
            out.append(kind)
        return out

    @staticmethod
    def _render(offset: int, chars: str) -> h264.MbKind:
        if not chars.strip():
            return 0
        lit = render_text(chars)
        canvas = np.zeros((BLOCK, BLOCK), dtype=np.bool_)
        src0 = max(0, -offset)
        dst0 = max(0, offset)
        width = min(BLOCK - dst0, lit.shape[1] - src0)
        if width > 0:
            canvas[1 : 1 + lit.shape[0], dst0 : dst0 + width] = lit[:, src0 : src0 + width]
        if not canvas.any():
            return 0
        luma = np.where(canvas, np.uint8(255), np.uint8(1))
        return luma.tobytes() + _PCM_CHROMA


class PreencodedStream:
    """One camera stream playing a clip: makes its access units (with its own strip slice for H.264)."""

    def __init__(
        self,
        clip: Clip,
        name: str,
        clock: FrameClock,
        skew_ns: Callable[[], int],
        text: TextMacroblocks,
        phase: int | None = None,
    ) -> None:
        self.clip = clip
        self.name = name
        self._clock = clock
        self._skew_ns = skew_ns
        self._text = text
        frames = clip.key.frames
        self.phase = phase if phase is not None else zlib.crc32(name.encode()) % frames
        self._writer: h264.StripSliceWriter | None = None
        if clip.sps is not None and clip.pps is not None:
            self._writer = h264.StripSliceWriter(clip.sps, clip.pps, STRIP_ROWS)
        self._cols = clip.sps.width_mbs if clip.sps is not None else 0
        self._tc_cols = min(COLUMNS, self._cols) if clip.timecode else 0
        self._prev_tc: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        self._prev_text: str | None = None
        self._prev_text_kinds: list[h264.MbKind] = []
        self.next_index: int | None = None

    def position(self, n: int) -> int:
        return (n + self.phase) % self.clip.key.frames

    def keyframe_at_or_before(self, n: int) -> int:
        return n - self.position(n) % self.clip.key.gop

    def reset(self) -> None:
        self._prev_tc = None
        self._prev_text = None
        self.next_index = None

    def catch_up(self, n_now: int) -> list[AccessUnit]:
        """The units from the last keyframe up to frame `n_now` (a consumer arrived while the stream idled)."""
        self.reset()
        start = self.keyframe_at_or_before(n_now)
        return [self.make(n) for n in range(start, n_now + 1)]

    def make(self, n: int) -> AccessUnit:
        """Frame n (the caller goes in order, starting at a keyframe)."""
        clip = self.clip
        frame = clip.frames[self.position(n)]
        capture_ns = self._clock.capture_ns(n) + self._skew_ns()
        pts = self._clock.pts(n)
        self.next_index = n + 1
        head: tuple[bytes, ...]
        if self._writer is None or frame.header is None:
            head = clip.parameter_sets if frame.keyframe else ()
        else:
            strip = self._strip_slice(frame, capture_ns // 1_000_000)
            head = (*clip.parameter_sets, strip) if frame.keyframe else (strip,)
        return AccessUnit(
            (*head, *frame.nals),
            pts,
            capture_ns,
            frame.keyframe,
            RtpTail(len(head), clip.max_payload, frame.payloads),
        )

    def _strip_slice(self, frame: ClipFrame, ms: int) -> bytes:
        writer = self._writer
        if writer is None or frame.header is None:
            raise h264.H264Error("no strip slice writer for this clip")
        cols = self._cols
        tc = timecode_bits(ms) if self._tc_cols else None
        text = strip_text(self.name, ms)
        if text != self._prev_text:
            text_kinds = self._text.row(text, cols)
        else:
            text_kinds = self._prev_text_kinds
        header = writer.header_for(frame.header)
        if frame.keyframe or self._prev_text is None:
            mbs: list[h264.MbKind | None] = [0] * (STRIP_ROWS * cols)
            if tc is not None:
                for r in range(_TC_ROWS):
                    mbs[r * cols : r * cols + self._tc_cols] = tc[r][: self._tc_cols]
            mbs[_TC_ROWS * cols :] = text_kinds
            data = writer.write(header, mbs)
        else:
            changes: dict[int, h264.MbKind] = {}
            prev_tc = self._prev_tc
            if tc is not None and prev_tc is not None:
                for r in range(_TC_ROWS):
                    row, old = tc[r], prev_tc[r]
                    if row != old:
                        base = r * cols
                        for c in range(self._tc_cols):
                            if row[c] != old[c]:
                                changes[base + c] = row[c]
            if text_kinds is not self._prev_text_kinds:
                base = _TC_ROWS * cols
                for c, (new, old_kind) in enumerate(zip(text_kinds, self._prev_text_kinds, strict=True)):
                    if new != old_kind:
                        changes[base + c] = new
            data = writer.write_changes(header, changes)
        self._prev_tc = tc
        self._prev_text = text
        self._prev_text_kinds = text_kinds
        return data
