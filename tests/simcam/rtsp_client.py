"""A small RTSP/RTP client for the simcam tests: requests with Digest auth, TCP-interleaved or UDP transport,
RTP depacketisation (H.264 and H.265), RTCP sender reports, and decoding with PyAV.

It is written from the RFCs independently of the server code (only the timecode reader and the RTCP parser are
shared), so a server bug is not mirrored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import av
import numpy as np
import numpy.typing as npt

from argus_simcam.rtcp import SenderReport, parse_rtcp
from argus_simcam.timecode import read_timecode

_STATUS = re.compile(r"RTSP/1\.0 (\d{3}) ?(.*)")


class RtspStatusError(Exception):
    def __init__(self, status: int, method: str) -> None:
        super().__init__(f"{method}: RTSP {status}")
        self.status = status


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass
class RtpPacket:
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes
    arrival: float

    @classmethod
    def parse(cls, data: bytes, arrival: float) -> RtpPacket:
        first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", data)
        if first >> 6 != 2:
            raise ValueError("not RTP v2")
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            ext_len = struct.unpack_from("!H", data, offset + 2)[0]
            offset += 4 + 4 * ext_len
        end = len(data) - (data[-1] if first & 0x20 else 0)
        return cls(bool(second & 0x80), seq, ts, ssrc, data[offset:end], arrival)


@dataclass
class ReceivedUnit:
    """One access unit as received: NAL units, RTP timestamp, and the capture time the last SR implies."""

    nals: list[bytes]
    timestamp: int
    first_seq: int
    arrival: float
    capture_ns: int | None

    def annexb(self) -> bytes:
        return b"".join(b"\x00\x00\x00\x01" + n for n in self.nals)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _auth_params(value: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) or m.group(3) for m in re.finditer(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', value)}


class Depacketizer:
    """Reassembles NAL units from RTP payloads (RFC 6184 / RFC 7798) into access units on the marker bit."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._nals: list[bytes] = []
        self._fu: bytearray | None = None
        self._first_seq: int | None = None
        self._timestamp: int | None = None
        self._expected_seq: int | None = None
        self.lost = 0

    def push(self, pkt: RtpPacket) -> list[bytes] | None:
        if self._expected_seq is not None and pkt.seq != self._expected_seq:
            self.lost += (pkt.seq - self._expected_seq) & 0xFFFF
            self._fu = None
        self._expected_seq = (pkt.seq + 1) & 0xFFFF
        if self._timestamp is not None and pkt.timestamp != self._timestamp and self._nals:
            self._nals = []  # a unit without its marker: drop it
        if not self._nals and self._fu is None:
            self._first_seq = pkt.seq
        self._timestamp = pkt.timestamp
        if self.codec == "h264":
            self._h264(pkt.payload)
        else:
            self._h265(pkt.payload)
        if pkt.marker:
            nals, self._nals, self._fu = self._nals, [], None
            return nals
        return None

    @property
    def first_seq(self) -> int:
        return self._first_seq or 0

    def _h264(self, p: bytes) -> None:
        kind = p[0] & 0x1F
        if kind == 24:
            pos = 1
            while pos + 2 <= len(p):
                size = struct.unpack_from("!H", p, pos)[0]
                self._nals.append(p[pos + 2 : pos + 2 + size])
                pos += 2 + size
        elif kind == 28:
            start, end = p[1] & 0x80, p[1] & 0x40
            if start:
                self._fu = bytearray(((p[0] & 0xE0) | (p[1] & 0x1F),))
            if self._fu is not None:
                self._fu += p[2:]
                if end:
                    self._nals.append(bytes(self._fu))
                    self._fu = None
        else:
            self._nals.append(p)

    def _h265(self, p: bytes) -> None:
        kind = (p[0] >> 1) & 0x3F
        if kind == 48:
            pos = 2
            while pos + 2 <= len(p):
                size = struct.unpack_from("!H", p, pos)[0]
                self._nals.append(p[pos + 2 : pos + 2 + size])
                pos += 2 + size
        elif kind == 49:
            start, end, nal_type = p[2] & 0x80, p[2] & 0x40, p[2] & 0x3F
            if start:
                self._fu = bytearray(((p[0] & 0x81) | (nal_type << 1), p[1]))
            if self._fu is not None:
                self._fu += p[3:]
                if end:
                    self._nals.append(bytes(self._fu))
                    self._fu = None
        else:
            self._nals.append(p)


@dataclass
class _UdpSink(asyncio.DatagramProtocol):
    queue: asyncio.Queue[tuple[int, bytes, float]]
    channel: int
    dropped: int = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            self.queue.put_nowait((self.channel, data, time.monotonic()))
        except asyncio.QueueFull:
            self.dropped += 1


@dataclass
class RtspTestClient:
    """One RTSP session to one stream URL. Use as an async context manager."""

    url: str
    credentials: tuple[str, str] | None = None
    timeout: float = 15.0
    codec: str = "h264"
    cseq: int = 0
    session: str | None = None
    content_base: str = ""
    sdp: str = ""
    transport: str = "tcp"
    reports: list[SenderReport] = field(default_factory=list)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _auth: dict[str, str] | None = None
    _replies: asyncio.Queue[Reply | None] = field(default_factory=lambda: asyncio.Queue(16))
    _data: asyncio.Queue[tuple[int, bytes, float]] = field(default_factory=lambda: asyncio.Queue(200_000))
    _pump: asyncio.Task[None] | None = None
    _udp: list[asyncio.DatagramTransport] = field(default_factory=list)
    eof: bool = False

    async def __aenter__(self) -> RtspTestClient:
        parts = urlsplit(self.url)
        self._reader, self._writer = await asyncio.open_connection(parts.hostname, parts.port or 554)
        self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for t in self._udp:
            t.close()
        self._udp.clear()
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()
        await self.stop_reading()

    async def stop_reading(self) -> None:
        """Stop reading the connection (a client that hangs)."""
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None

    async def _run_pump(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":
                    channel, size = struct.unpack("!BH", await reader.readexactly(3))
                    payload = await reader.readexactly(size)
                    with contextlib.suppress(asyncio.QueueFull):
                        self._data.put_nowait((channel, payload, time.monotonic()))
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                match = _STATUS.match(lines[0])
                if match is None:
                    raise ValueError(f"bad status line {lines[0]!r}")
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                await self._replies.put(Reply(int(match.group(1)), match.group(2), headers, body))
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof = True
            with contextlib.suppress(asyncio.QueueFull):
                self._replies.put_nowait(None)

    async def request(self, method: str, url: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        """Send a request (answering a Digest challenge once if there are credentials)."""
        target = url or self.url
        for attempt in range(2):
            self.cseq += 1
            lines = [f"{method} {target} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: simcam-tests"]
            if self.session:
                lines.append(f"Session: {self.session}")
            if self._auth is not None and self.credentials is not None:
                lines.append(f"Authorization: {self._authorization(method, target)}")
            lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
            assert self._writer is not None
            self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            async with asyncio.timeout(self.timeout):
                reply = await self._replies.get()
            if reply is None:
                raise ConnectionError(f"{method}: connection closed")
            if reply.status == 401 and attempt == 0 and self.credentials is not None:
                self._auth = _auth_params(reply.header("www-authenticate"))
                continue
            return reply
        raise AssertionError("unreachable")

    async def send_raw(self, data: bytes) -> Reply | None:
        """Send bytes as they are and wait for one reply (None if the server closed the connection)."""
        assert self._writer is not None
        self._writer.write(data)
        async with asyncio.timeout(self.timeout):
            return await self._replies.get()

    def _authorization(self, method: str, uri: str) -> str:
        assert self._auth is not None
        assert self.credentials is not None
        user, password = self.credentials
        realm, nonce = self._auth["realm"], self._auth["nonce"]
        ha1 = _md5(f"{user}:{realm}:{password}")
        response = _md5(f"{ha1}:{nonce}:{_md5(f'{method}:{uri}')}")
        return f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'

    async def checked(self, method: str, url: str | None = None, headers: dict[str, str] | None = None) -> Reply:
        reply = await self.request(method, url, headers)
        if reply.status != 200:
            raise RtspStatusError(reply.status, method)
        return reply

    async def start(self, transport: str = "tcp") -> Reply:
        """DESCRIBE, SETUP and PLAY; returns the PLAY reply."""
        reply = await self.checked("DESCRIBE", headers={"Accept": "application/sdp"})
        self.sdp = reply.body.decode()
        self.codec = "h265" if "H265/90000" in self.sdp else "h264"
        self.content_base = reply.header("content-base") or self.url + "/"
        control = re.search(r"m=video.*?a=control:(\S+)", self.sdp, re.S)
        track = control.group(1) if control else ""
        track_url = track if track.startswith("rtsp://") else self.content_base + track
        self.transport = transport
        if transport == "tcp":
            spec = "RTP/AVP/TCP;unicast;interleaved=0-1"
        else:
            spec = f"RTP/AVP;unicast;client_port={await self._open_udp()}"
        reply = await self.checked("SETUP", track_url, {"Transport": spec})
        self.session = reply.header("session").split(";")[0]
        return await self.checked("PLAY", self.content_base, {"Range": "npt=0.000-"})

    async def _open_udp(self) -> str:
        loop = asyncio.get_running_loop()
        for base in range(40000 + (id(self) % 5000) * 2, 65000, 2):
            try:
                t0, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpSink(self._data, 0), local_addr=("127.0.0.1", base)
                )
            except OSError:
                continue
            try:
                t1, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpSink(self._data, 1), local_addr=("127.0.0.1", base + 1)
                )
            except OSError:
                t0.close()
                continue
            self._udp = [t0, t1]
            return f"{base}-{base + 1}"
        raise OSError("no UDP ports")

    async def packet(self, timeout: float | None = None) -> tuple[int, bytes, float] | None:  # noqa: ASYNC109
        """The next RTP (channel 0) or RTCP (channel 1) packet; None at end of stream or after `timeout`."""
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                while True:
                    if self.eof and self._data.empty():
                        return None
                    try:
                        return await asyncio.wait_for(self._data.get(), 0.2)
                    except TimeoutError:
                        continue
        except TimeoutError:
            return None

    async def units(self, count: int, *, timeout: float | None = None) -> list[ReceivedUnit]:  # noqa: ASYNC109
        """Receive `count` access units (or fewer at end of stream / timeout), with capture times from RTCP."""
        depack = Depacketizer(self.codec)
        out: list[ReceivedUnit] = []
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while len(out) < count:
            got = await self.packet(max(0.0, deadline - time.monotonic()))
            if got is None:
                break
            channel, data, arrival = got
            if channel == 1:
                self.reports.extend(p for p in parse_rtcp(data) if isinstance(p, SenderReport))
                continue
            pkt = RtpPacket.parse(data, arrival)
            nals = depack.push(pkt)
            if nals is not None:
                out.append(ReceivedUnit(nals, pkt.timestamp, depack.first_seq, arrival, self.capture_ns(pkt.timestamp)))
        return out

    def capture_ns(self, timestamp: int) -> int | None:
        """Capture time of the frame with RTP timestamp `timestamp` by the last sender report (ns)."""
        if not self.reports:
            return None
        sr = self.reports[-1]
        delta = (timestamp - sr.rtp_timestamp) & 0xFFFFFFFF
        if delta >= 1 << 31:
            delta -= 1 << 32
        return sr.unix_ns + delta * 1_000_000_000 // 90_000


def decode_units(codec: str, units: list[ReceivedUnit]) -> Iterator[tuple[ReceivedUnit, av.VideoFrame]]:
    """Decode units in order with PyAV; yields (unit, frame) for each picture (decoding errors raise)."""
    ctx = av.CodecContext.create("hevc" if codec == "h265" else "h264", "r")
    assert isinstance(ctx, av.VideoCodecContext)
    for i, unit in enumerate(units):
        packet = av.Packet(unit.annexb())
        packet.pts = i
        for frame in ctx.decode(packet):
            assert frame.pts is not None
            yield units[frame.pts], frame
    for frame in ctx.decode(None):
        assert frame.pts is not None
        yield units[frame.pts], frame


class Viewer:
    """Decodes everything a client receives with one decoder (so references carry across calls)."""

    def __init__(self, client: RtspTestClient) -> None:
        self.client = client
        self._ctx: av.VideoCodecContext | None = None
        self.decoded = 0

    def _decode(self, units: list[ReceivedUnit]) -> list[tuple[ReceivedUnit, av.VideoFrame]]:
        if self._ctx is None:
            ctx = av.CodecContext.create("hevc" if self.client.codec == "h265" else "h264", "r")
            assert isinstance(ctx, av.VideoCodecContext)
            self._ctx = ctx
        out: list[tuple[ReceivedUnit, av.VideoFrame]] = []
        for unit in units:
            frames = self._ctx.decode(av.Packet(unit.annexb()))
            out.extend((unit, f) for f in frames)
        self.decoded += len(out)
        return out

    async def frames(self, count: int) -> list[tuple[ReceivedUnit, av.VideoFrame]]:
        return self._decode(await self.client.units(count))

    async def pictures(self, count: int) -> list[tuple[ReceivedUnit, npt.NDArray[np.uint8]]]:
        """Receive and decode `count` units; (unit, luma) per picture."""
        return [(u, luma(f)) for u, f in await self.frames(count)]

    async def settle(self, seconds: float) -> None:
        """Receive and decode (and drop) whatever comes in `seconds`."""
        self._decode(await self.client.units(1_000_000, timeout=seconds))


def luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    array = frame.to_ndarray(format="yuv420p")
    return np.ascontiguousarray(array[: frame.height])


def frame_timecode(frame: av.VideoFrame) -> int | None:
    return read_timecode(frame)
