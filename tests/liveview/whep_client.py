"""A WHEP viewer built on aiortc, for tests and the benchmark: offer, POST, answer, then count what arrives.

ICE stays on loopback: the viewer's own host candidates are gathered on 127.0.0.1 only (liveview's `IcePolicy`,
since aioice on its own leaves loopback out), so no check, STUN query or media ever leaves 127.0.0.0/8.

Two ways to receive:
- `decode=True`: aiortc decodes each frame (in its decoder thread); the viewer reads simcam's time code from every
  picture and records glass-to-glass latency (capture time to decoded) and time to the first picture;
- `decode=False`: a counting decoder takes aiortc's place in that viewer's process (`install_counting_decoder`):
  every complete access unit the jitter buffer assembles is checked (Annex B, NAL types) and counted, nothing is
  decoded. Used where many viewers share a small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpreceiver
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from argus_liveview.ice import IcePolicy
from argus_simcam.timecode import read_timecode

LOOPBACK = IcePolicy(hosts=("127.0.0.1",))


@dataclass
class Received:
    """What one viewer got; times are `time.time()` seconds."""

    started: float = 0.0
    answered: float = 0.0
    first_frame: float | None = None  # first picture decoded (decode) or first keyframe assembled (counting)
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    malformed: int = 0
    codes: list[int] = field(default_factory=list)  # time codes read, in order
    latencies_ms: list[float] = field(default_factory=list)
    unreadable: int = 0
    last_frame: float | None = None
    rtp_timestamps: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)

    def max_gap_ms(self, after: int = 60) -> float:
        """The longest wait between two frames after the first `after` (the catch-up from the cached GOP)."""
        later = self.arrivals[after:]
        return max((b - a for a, b in zip(later, later[1:], strict=False)), default=0.0) * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "max_gap_ms": self.max_gap_ms(),
            "ttff_ms": None if self.first_frame is None else (self.first_frame - self.started) * 1000,
            "frames": self.frames,
            "keyframes": self.keyframes,
            "bytes": self.bytes,
            "malformed": self.malformed,
            "unreadable": self.unreadable,
            "latencies_ms": self.latencies_ms,
            "codes": self.codes,
        }


# --- the counting decoder ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """What the counting decoder saw of one assembled access unit."""

    at: float
    size: int
    keyframe: bool
    malformed: bool
    timestamp: int


class CountingDecoder(Decoder):
    """Takes the place of aiortc's H.264 decoder: checks each assembled access unit (Annex B, NAL unit types) and
    hands the track a 16x16 placeholder frame that carries a `Unit` (in `opaque`) instead of a picture."""

    def decode(self, encoded_frame: JitterFrame) -> list[av.frame.Frame]:
        data = encoded_frame.data
        types = []
        pos = data.find(b"\x00\x00\x01")
        while pos >= 0:
            if pos + 3 < len(data):
                types.append(data[pos + 3] & 0x1F)
            pos = data.find(b"\x00\x00\x01", pos + 3)
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.opaque = Unit(
            at=time.time(),
            size=len(data),
            keyframe=5 in types,
            malformed=not types or any(t == 0 or t > 23 for t in types),
            timestamp=encoded_frame.timestamp,
        )
        return [frame]


def install_counting_decoder() -> None:
    """Every aiortc receiver of this process counts access units instead of decoding them (see the module doc)."""

    def factory(codec: RTCRtpCodecParameters) -> Decoder:
        return CountingDecoder()

    rtcrtpreceiver.get_decoder = factory  # type: ignore[attr-defined]


# --- the viewer --------------------------------------------------------------------------------------------------


class WhepViewer:
    """One WHEP session seen from the viewer's side (a counting viewer: `install_counting_decoder()` first)."""

    def __init__(self, base_url: str, camera: str, token: str, *, stream: str = "main") -> None:
        self.base_url = base_url.rstrip("/")
        self.camera = camera
        self.stream = stream
        self.token = token
        self.received = Received()
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.location: str | None = None
        self.served_stream: str | None = None
        self.status: int | None = None
        self.problem: dict[str, Any] | None = None
        self.ended = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None

    async def open(self, *, trickle: list[str] | None = None) -> bool:
        """Negotiate; True when the session started (201).

        With `trickle` (a list, maybe empty, of extra candidate lines), the offer goes without candidates and they
        follow in a PATCH (with the extra ones, then end-of-candidates) before the answer is applied."""
        self.received.started = time.time()
        self.pc.addTransceiver("video", direction="recvonly")
        LOOPBACK.install(self.pc)

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._task = asyncio.create_task(self._consume(track), name="whep-viewer.consume")

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.ended.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        assert self.pc.localDescription is not None
        offer = self.pc.localDescription.sdp
        candidates = [line for line in offer.splitlines() if line.startswith("a=candidate:")]
        if trickle is not None:
            offer = "\r\n".join(
                line for line in offer.splitlines() if not line.startswith(("a=candidate:", "a=end-of-candidates"))
            )
        self._http = aiohttp.ClientSession()
        async with self._http.post(
            f"{self.base_url}/whep/{self.camera}/{self.stream}",
            data=offer,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {self.token}"},
        ) as response:
            self.status = response.status
            if response.status != 201:
                self.problem = await response.json(content_type=None)
                return False
            self.location = response.headers["Location"]
            self.served_stream = response.headers.get("X-Argus-Stream")
            answer = await response.text()
        self.received.answered = time.time()
        if trickle is not None:
            mid = self.pc.getTransceivers()[0].mid
            frag = "\r\n".join([f"a=mid:{mid}", *candidates, *trickle, "a=end-of-candidates", ""])
            async with self._http.patch(
                f"{self.base_url}{self.location}",
                data=frag,
                headers={"Content-Type": "application/trickle-ice-sdpfrag", "Authorization": f"Bearer {self.token}"},
            ) as response:
                if response.status != 204:
                    self.problem = await response.json(content_type=None)
                    return False
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return True

    async def _consume(self, track: MediaStreamTrack) -> None:
        r = self.received
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.time()
                assert isinstance(frame, av.VideoFrame)
                if isinstance(frame.opaque, Unit):
                    self._count(frame.opaque)
                    continue
                code = await asyncio.to_thread(read_timecode, frame)
                if r.first_frame is None:
                    r.first_frame = now
                r.frames += 1
                r.last_frame = now
                r.arrivals.append(now)
                if code is None:
                    r.unreadable += 1
                else:
                    r.codes.append(code)
                    r.latencies_ms.append(now * 1000 - code)
        self.ended.set()

    def _count(self, unit: Unit) -> None:
        r = self.received
        if unit.malformed or (r.first_frame is None and not unit.keyframe):
            r.malformed += 1  # a viewer must start at a keyframe, and every unit must be H.264 Annex B
            return
        if r.first_frame is None:
            r.first_frame = unit.at
        r.frames += 1
        r.keyframes += int(unit.keyframe)
        r.bytes += unit.size
        r.last_frame = unit.at
        r.rtp_timestamps.append(unit.timestamp)
        r.arrivals.append(unit.at)

    async def stats(self) -> dict[str, Any]:
        """The receiver's inbound-rtp figures (packetsReceived, packetsLost, jitter)."""
        out: dict[str, Any] = {}
        for receiver in self.pc.getReceivers():
            report = await receiver.getStats()
            for s in report.values():
                if s.type == "inbound-rtp":
                    out = {"packetsReceived": s.packetsReceived, "packetsLost": s.packetsLost, "jitter": s.jitter}
        return out

    async def delete(self) -> int:
        assert self._http is not None
        assert self.location is not None
        async with self._http.delete(
            f"{self.base_url}{self.location}", headers={"Authorization": f"Bearer {self.token}"}
        ) as response:
            return response.status

    async def close(self) -> None:
        await self.pc.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._http is not None:
            await self._http.close()
