"""RTSP 1.0 server (RFC 2326) for many simulated cameras on one listener.

URLs: `rtsp://HOST:PORT/<camera_id>/<stream>` with stream `main` or `sub`; the track is `<that>/trackID=0`.
Methods: OPTIONS, DESCRIBE, SETUP (RTP over the RTSP connection, interleaved; or RTP/RTCP over UDP unicast from a
port pair the server opens per session), PLAY (with RTP-Info), PAUSE, TEARDOWN, GET_PARAMETER (keep-alive) and
SET_PARAMETER (200 when empty, 451 otherwise). Sessions expire after `session_timeout` seconds without a request
or an RTCP packet from the client. Cameras with credentials require Digest authentication (RFC 2617, MD5) on every
method but OPTIONS; Basic is refused.

A playing session reads its stream through a bounded `Subscription` in its own sender task (a slow client drops
to the next keyframe, it never holds up another) and sends an RTCP sender report before its first packet and then
about every second, mapping the RTP timestamp of the frame being sent to its capture time by the camera's clock.

Faults: `stall` pauses the camera's senders (the connections stay up; sending resumes at a keyframe),
`drop_connections()` and `reboot()` close every connection and UDP session of the camera, and while rebooting
every request for the camera is answered 503 and its connection closed; `refuse_auth` answers 401 to everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import secrets
import socket
import struct
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from argus_simcam import rtcp
from argus_simcam.camera import SimCamera
from argus_simcam.digest import AuthResult, DigestAuth
from argus_simcam.faults import FaultEvent
from argus_simcam.rtp import RtpPacketizer
from argus_simcam.sdp import TRACK_CONTROL, build_sdp
from argus_simcam.stream import AccessUnit, StreamClosed, StreamSource, Subscription

__all__ = ["RtspServer"]

_log = logging.getLogger(__name__)

SERVER_NAME: Final = "argus-simcam/1.0"
PUBLIC: Final = "OPTIONS, DESCRIBE, SETUP, TEARDOWN, PLAY, PAUSE, GET_PARAMETER, SET_PARAMETER"
_KNOWN: Final = frozenset(PUBLIC.replace(" ", "").split(","))
_NOT_ALLOWED: Final = frozenset(("ANNOUNCE", "RECORD", "REDIRECT"))
_SR_INTERVAL: Final = 1.0
_PLAY_WAIT: Final = 8.0
_READY_WAIT: Final = 8.0
_HIGH_WATER: Final = 4 * 1024 * 1024
_MAX_BODY: Final = 64 * 1024
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    451: "Parameter Not Understood",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    459: "Aggregate Operation Not Allowed",
    461: "Unsupported Transport",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "RTSP Version Not Supported",
    551: "Option not supported",
}


_METHOD: Final = re.compile(r"[A-Za-z_-]{1,32}")


class _BadRequest(Exception):
    pass


@dataclass
class _Request:
    method: str
    url: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def cseq(self) -> str | None:
        return self.headers.get("cseq")

    @property
    def session_id(self) -> str | None:
        value = self.headers.get("session")
        return value.split(";", 1)[0].strip() if value else None


@dataclass
class _Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    close: bool = False

    def encode(self, cseq: str | None) -> bytes:
        lines = [f"RTSP/1.0 {self.status} {_REASONS.get(self.status, 'Error')}"]
        if cseq is not None:
            lines.append(f"CSeq: {cseq}")
        lines.append(f"Server: {SERVER_NAME}")
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        if self.body or self.status == 200:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def _parse_request(head: bytes) -> _Request:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _BadRequest("request is not UTF-8") from exc
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not _METHOD.fullmatch(parts[0]):
        raise _BadRequest(f"bad request line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(f"bad header line {line!r}")
        headers[name.strip().lower()] = value.strip()
    return _Request(parts[0].upper(), parts[1], parts[2], headers)


# -- transports ---------------------------------------------------------------------------------------------------


class _TcpTransport:
    kind: Final = "tcp"

    def __init__(self, writer: asyncio.StreamWriter, rtp_channel: int, rtcp_channel: int) -> None:
        self.writer = writer
        self.rtp_channel = rtp_channel
        self.rtcp_channel = rtcp_channel

    def header(self, ssrc: int) -> str:
        return f"RTP/AVP/TCP;unicast;interleaved={self.rtp_channel}-{self.rtcp_channel};ssrc={ssrc:08X}"

    @property
    def closing(self) -> bool:
        return self.writer.is_closing()

    def send_au(self, packetizer: RtpPacketizer, au: AccessUnit) -> None:
        self.writer.write(packetizer.interleaved(au, self.rtp_channel))

    def send_rtcp(self, data: bytes) -> None:
        self.writer.write(struct.pack("!BBH", 0x24, self.rtcp_channel, len(data)) + data)

    def buffered(self) -> int:
        return self.writer.transport.get_write_buffer_size()

    async def drain(self) -> None:
        await self.writer.drain()

    def close(self) -> None:
        pass  # the connection owns the socket


class _RtcpReceiver(asyncio.DatagramProtocol):
    def __init__(self, on_packet: Callable[[], None]) -> None:
        self._on_packet = on_packet

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self._on_packet()

    def error_received(self, exc: Exception) -> None:
        _log.debug("RTCP socket error: %s", exc)


class _Discard(asyncio.DatagramProtocol):
    def error_received(self, exc: Exception) -> None:
        _log.debug("RTP socket error: %s", exc)


class _UdpTransport:
    kind: Final = "udp"

    def __init__(
        self,
        rtp: asyncio.DatagramTransport,
        rtcp_transport: asyncio.DatagramTransport,
        client_host: str,
        client_ports: tuple[int, int],
        server_ports: tuple[int, int],
    ) -> None:
        self.rtp = rtp
        self.rtcp = rtcp_transport
        self.client = client_host
        self.client_ports = client_ports
        self.server_ports = server_ports

    def header(self, ssrc: int) -> str:
        c0, c1 = self.client_ports
        s0, s1 = self.server_ports
        return f"RTP/AVP;unicast;client_port={c0}-{c1};server_port={s0}-{s1};ssrc={ssrc:08X}"

    @property
    def closing(self) -> bool:
        return self.rtp.is_closing()

    def send_au(self, packetizer: RtpPacketizer, au: AccessUnit) -> None:
        address = (self.client, self.client_ports[0])
        sendto = self.rtp.sendto
        for packet in packetizer.packets(au):
            sendto(packet, address)

    def send_rtcp(self, data: bytes) -> None:
        self.rtcp.sendto(data, (self.client, self.client_ports[1]))

    def buffered(self) -> int:
        size = getattr(self.rtp, "get_write_buffer_size", None)
        return int(size()) if size is not None else 0

    async def drain(self) -> None:
        await asyncio.sleep(0.01)  # datagrams: the kernel drops what it cannot take; just let the buffer empty

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


_Transport = _TcpTransport | _UdpTransport


async def _open_udp_pair(host: str, on_rtcp: Callable[[], None]) -> tuple[asyncio.DatagramTransport, ...]:
    """RTP and RTCP sockets on an even/odd port pair of `host`."""
    loop = asyncio.get_running_loop()
    for _ in range(64):
        base = random.randrange(20000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for port in (base, base + 1):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.setblocking(False)
                sock.bind((host, port))
        except OSError:
            for sock in socks:
                sock.close()
            continue
        rtp_transport, _ = await loop.create_datagram_endpoint(_Discard, sock=socks[0])
        rtcp_transport, _ = await loop.create_datagram_endpoint(lambda: _RtcpReceiver(on_rtcp), sock=socks[1])
        return rtp_transport, rtcp_transport
    raise OSError("no free UDP port pair")


# -- sessions -----------------------------------------------------------------------------------------------------


class _Session:
    def __init__(
        self, server: RtspServer, camera_id: str, camera: SimCamera, stream: str, base_url: str, conn: _Connection
    ) -> None:
        self.id = secrets.token_hex(8).upper()
        self.server = server
        self.camera_id = camera_id
        self.camera = camera
        self.stream = stream
        self.source: StreamSource = camera.streams[stream]
        self.base_url = base_url
        self.conn = conn
        self.transport: _Transport | None = None
        self.packetizer = RtpPacketizer(
            camera.codec,
            ssrc=random.getrandbits(32),
            seq=random.getrandbits(16),
            timestamp_offset=random.getrandbits(32),
            mtu=server.mtu,
        )
        self.cname = f"{camera_id}-{stream}@simcam"
        self.state: Literal["ready", "playing"] = "ready"
        self.last_seen = time.monotonic()
        self.sub: Subscription | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_pts: int | None = None
        self.closed = False

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    @property
    def track_url(self) -> str:
        return self.base_url + TRACK_CONTROL

    def start(self, sub: Subscription) -> None:
        self.sub = sub
        self.state = "playing"
        self.task = asyncio.get_running_loop().create_task(self._send(sub), name=f"simcam-rtp-{self.cname}")
        self.server._track(self.task)

    def pause(self) -> None:
        if self.task is not None:
            if self.task is not asyncio.current_task():  # the sender may be ending its own session
                self.task.cancel()
            self.task = None
        if self.sub is not None:
            self.sub.close()
            self.sub = None
        self.state = "ready"

    def close(self, *, bye: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        was_playing = self.state == "playing"
        self.pause()
        transport = self.transport
        if transport is not None:
            if bye and was_playing and not transport.closing:
                with contextlib.suppress(Exception):
                    transport.send_rtcp(rtcp.bye(self.packetizer.ssrc, self.cname))
            transport.close()

    async def _send(self, sub: Subscription) -> None:
        transport = self.transport
        assert transport is not None
        packetizer = self.packetizer
        faults = self.camera.faults
        last_sr = -1e9
        stalled = False
        # Over UDP the backlog a session starts with (the current GOP) goes out at three times real time, not at
        # once, so that a receiver's socket buffer does not overflow.
        backlog_gap = 1 / (3 * self.source.spec.fps) if transport.kind == "udp" else 0.0
        try:
            while True:
                au = await sub.next()
                if faults.stalled:
                    stalled = True
                    continue
                if stalled:
                    stalled = False
                    if not au.keyframe:
                        sub.resync()
                        continue
                if self.last_pts is not None and au.pts <= self.last_pts:
                    continue
                if transport.closing:
                    break
                now = time.monotonic()
                if now - last_sr >= _SR_INTERVAL:
                    last_sr = now
                    transport.send_rtcp(
                        rtcp.sender_report(
                            packetizer.ssrc,
                            au.capture_ns,
                            packetizer.rtp_timestamp(au.pts),
                            packetizer.packet_count,
                            packetizer.octet_count,
                            self.cname,
                        )
                    )
                transport.send_au(packetizer, au)
                self.last_pts = au.pts
                if transport.buffered() > _HIGH_WATER:
                    await transport.drain()
                elif backlog_gap and sub.pending():
                    await asyncio.sleep(backlog_gap)
        except StreamClosed:
            _log.info("session %s: stream %s/%s closed", self.id, self.camera_id, self.stream)
        except (ConnectionError, OSError) as exc:
            _log.info("session %s: connection lost while sending: %s", self.id, exc)
        self.server._end_session(self, close_connection=transport.kind == "tcp")


# -- connections --------------------------------------------------------------------------------------------------


class _Connection:
    def __init__(self, server: RtspServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.peer_host: str = peer[0] if peer else "127.0.0.1"
        self.local_host: str = local[0] if local else "127.0.0.1"
        self.local_port: int = local[1] if local else 0
        self.sessions: dict[str, _Session] = {}
        self.cameras: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    def channels_in_use(self) -> set[int]:
        used: set[int] = set()
        for s in self.sessions.values():
            if isinstance(s.transport, _TcpTransport):
                used |= {s.transport.rtp_channel, s.transport.rtcp_channel}
        return used

    async def run(self) -> None:
        reader, writer = self.reader, self.writer
        try:
            while True:
                first = await reader.readexactly(1)
                if first == b"$":
                    channel, size = struct.unpack("!BH", await reader.readexactly(3))
                    await reader.readexactly(size)
                    self._interleaved(channel)
                    continue
                if first in (b"\r", b"\n"):
                    continue
                head = first + await reader.readuntil(b"\r\n\r\n")
                try:
                    request = _parse_request(head[:-4])
                except _BadRequest as exc:
                    _log.info("bad request from %s: %s", self.peer_host, exc)
                    writer.write(_Response(400, close=True).encode(None))
                    break
                length = int(request.headers.get("content-length", "0") or 0)
                if not 0 <= length <= _MAX_BODY:
                    writer.write(_Response(400, close=True).encode(request.cseq))
                    break
                if length:
                    request.body = await reader.readexactly(length)
                response, after = await self.server._handle(self, request)
                if writer.is_closing():
                    break
                writer.write(response.encode(request.cseq))
                if after is not None:
                    after()
                if response.close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except (asyncio.LimitOverrunError, ValueError) as exc:
            _log.info("bad input from %s: %s", self.peer_host, exc)
            with contextlib.suppress(Exception):
                writer.write(_Response(400).encode(None))
        finally:
            for session in tuple(self.sessions.values()):
                if isinstance(session.transport, _TcpTransport) or session.transport is None:
                    self.server._end_session(session, close_connection=False)
            self.close()

    def _interleaved(self, channel: int) -> None:
        for session in self.sessions.values():
            if isinstance(session.transport, _TcpTransport) and channel in (
                session.transport.rtcp_channel,
                session.transport.rtp_channel,
            ):
                session.touch()


@dataclass
class _Target:
    camera_id: str
    camera: SimCamera
    stream: str
    base_url: str
    track: bool


class RtspServer:
    """One RTSP listener for many cameras (`cameras`: camera id -> camera; the id is the first path segment)."""

    def __init__(
        self,
        host: str,
        port: int,
        cameras: Mapping[str, SimCamera],
        *,
        session_timeout: float = 60.0,
        mtu: int = 1400,
    ) -> None:
        self.host = host
        self._port = port
        self.cameras: dict[str, SimCamera] = dict(cameras)
        self.session_timeout = session_timeout
        self.mtu = mtu
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._sessions: dict[str, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._auth: dict[str, DigestAuth] = {}
        self._secret = secrets.token_bytes(32)
        self._unlisten: dict[str, Callable[[], None]] = {}
        self._closed = False

    @property
    def port(self) -> int:
        return self._port

    def url(self, camera_id: str, stream: str = "main") -> str:
        return f"rtsp://{self.host}:{self._port}/{camera_id}/{stream}"

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._on_client, self.host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        for camera_id, camera in self.cameras.items():
            self._listen(camera_id, camera)
        self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="simcam-rtsp-reaper")
        _log.info("RTSP server on %s:%d for %d cameras", self.host, self._port, len(self.cameras))

    def add_camera(self, camera_id: str, camera: SimCamera) -> None:
        self.cameras[camera_id] = camera
        if self._server is not None:
            self._listen(camera_id, camera)

    def remove_camera(self, camera_id: str) -> None:
        self._drop_camera(camera_id)
        self.cameras.pop(camera_id, None)
        unlisten = self._unlisten.pop(camera_id, None)
        if unlisten is not None:
            unlisten()

    def _listen(self, camera_id: str, camera: SimCamera) -> None:
        def on_fault(event: FaultEvent) -> None:
            if event in (FaultEvent.DROP_CONNECTIONS, FaultEvent.REBOOT):
                self._drop_camera(camera_id)

        old = self._unlisten.pop(camera_id, None)
        if old is not None:
            old()
        self._unlisten[camera_id] = camera.faults.add_listener(on_fault)

    async def close(self) -> None:
        """Stop listening, end every session and connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for unlisten in self._unlisten.values():
            unlisten()
        self._unlisten.clear()
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for session in tuple(self._sessions.values()):
            session.close(bye=True)
        self._sessions.clear()
        connections = tuple(self._connections)
        for conn in connections:
            conn.close()
        tasks = [t for t in (self._reaper, *self._tasks, *(c.task for c in connections)) if t is not None]
        for task in tasks:
            if task is not asyncio.current_task():
                task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                _log.error("RTSP task ended with %r", result)
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)  # let the listener's own per-connection tasks see their connection end

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed:
            writer.close()
            return
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        # The connection runs in a task of ours: cancelling the task asyncio.start_server made trips a 3.11 bug.
        task = asyncio.get_running_loop().create_task(conn.run(), name=f"simcam-rtsp-{conn.peer_host}")
        conn.task = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        finally:
            self._connections.discard(conn)

    async def _reap(self) -> None:
        period = max(0.05, min(1.0, self.session_timeout / 4))
        while True:
            await asyncio.sleep(period)
            deadline = time.monotonic() - self.session_timeout
            for session in tuple(self._sessions.values()):
                if session.last_seen < deadline:
                    _log.info("session %s of %s/%s timed out", session.id, session.camera_id, session.stream)
                    self._end_session(session, close_connection=isinstance(session.transport, _TcpTransport))

    def _end_session(self, session: _Session, *, close_connection: bool) -> None:
        session.close(bye=not close_connection)
        self._sessions.pop(session.id, None)
        session.conn.sessions.pop(session.id, None)
        if close_connection and not session.conn.sessions:
            session.conn.close()

    def _drop_camera(self, camera_id: str) -> None:
        """Close every session and every connection that touched `camera_id`."""
        for session in tuple(self._sessions.values()):
            if session.camera_id == camera_id:
                self._end_session(session, close_connection=False)
        for conn in tuple(self._connections):
            if camera_id in conn.cameras:
                conn.close()

    # -- request handling ------------------------------------------------------------------------------------------
    def _target(self, conn: _Connection, url: str) -> _Target | _Response:
        if url.startswith(("rtsp://", "rtspu://", "rtsps://")):
            parts = urlsplit(url)
            netloc, path = parts.netloc, parts.path
        elif url.startswith("/"):
            netloc, path = f"{conn.local_host}:{conn.local_port}", url.split("?", 1)[0]
        else:
            return _Response(400)
        netloc = netloc.rpartition("@")[2]
        segments = [unquote(s) for s in path.split("/") if s]
        if len(segments) < 2 or len(segments) > 3 or (len(segments) == 3 and segments[2] != TRACK_CONTROL):
            return _Response(404)
        camera_id, stream = segments[0], segments[1]
        camera = self.cameras.get(camera_id)
        if camera is None or stream not in camera.streams:
            return _Response(404)
        base = f"rtsp://{netloc}/{path.strip('/').split('/')[0]}/{path.strip('/').split('/')[1]}/"
        return _Target(camera_id, camera, stream, base, len(segments) == 3)

    def _authorize(self, camera_id: str, camera: SimCamera, request: _Request) -> _Response | None:
        refuse = camera.faults.refuse_auth
        if camera.credentials is None and not refuse:
            return None
        auth = self._auth.get(camera_id)
        if auth is None:
            auth = self._auth[camera_id] = DigestAuth(f"simcam {camera_id}", self._secret)
        if not refuse and camera.credentials is not None:
            user, password = camera.credentials
            result = auth.check(request.method, request.headers.get("authorization"), user, password)
            if result is AuthResult.OK:
                return None
            if result is not AuthResult.MISSING:
                _log.info("camera %s: %s refused (%s)", camera_id, request.method, result.value)
        return _Response(401, [("WWW-Authenticate", auth.challenge())])

    def _session_header(self, session: _Session) -> tuple[str, str]:
        return ("Session", f"{session.id};timeout={round(self.session_timeout)}")

    async def _handle(self, conn: _Connection, req: _Request) -> tuple[_Response, Callable[[], None] | None]:
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("%s %s %s from %s", req.method, req.url, req.cseq, conn.peer_host)
        if req.cseq is None:
            return _Response(400, close=True), None
        if req.version != "RTSP/1.0":
            return _Response(505), None
        if "require" in req.headers:
            return _Response(551, [("Unsupported", req.headers["require"])]), None
        method = req.method
        if method in _NOT_ALLOWED:
            return _Response(405, [("Allow", PUBLIC)]), None
        if method not in _KNOWN:
            return _Response(501), None
        session: _Session | None = None
        if req.session_id is not None:
            session = self._sessions.get(req.session_id)
            if session is None:
                return _Response(454), None
        if method == "OPTIONS":
            if session is not None:
                session.touch()
            return _Response(200, [("Public", PUBLIC)]), None
        if req.url == "*" and session is not None:
            target: _Target | _Response = _Target(
                session.camera_id, session.camera, session.stream, session.base_url, False
            )
        else:
            target = self._target(conn, req.url)
        if isinstance(target, _Response):
            return target, None
        conn.cameras.add(target.camera_id)
        camera = target.camera
        if camera.faults.rebooting:
            retry = max(1, round(camera.faults.reboot_remaining))
            return _Response(503, [("Retry-After", str(retry))], close=True), None
        denied = self._authorize(target.camera_id, camera, req)
        if denied is not None:
            return denied, None
        if session is not None and (session.camera_id != target.camera_id or session.stream != target.stream):
            return _Response(459), None
        match method:
            case "DESCRIBE":
                return await self._describe(target, req), None
            case "SETUP":
                return await self._setup(conn, target, req, session), None
            case "PLAY":
                return await self._play(session)
            case "PAUSE":
                if session is None:
                    return _Response(454), None
                session.touch()
                session.pause()
                return _Response(200, [self._session_header(session)]), None
            case "TEARDOWN":
                if session is None:
                    return _Response(454), None
                self._end_session(session, close_connection=False)
                return _Response(200), None
            case "GET_PARAMETER":
                if session is not None:
                    session.touch()
                    return _Response(200, [self._session_header(session)]), None
                return _Response(200), None
            case "SET_PARAMETER":
                if session is not None:
                    session.touch()
                headers = [self._session_header(session)] if session is not None else []
                return _Response(451 if req.body.strip() else 200, headers), None
        return _Response(501), None

    async def _describe(self, target: _Target, req: _Request) -> _Response:
        accept = req.headers.get("accept", "application/sdp")
        if "application/sdp" not in accept and "*/*" not in accept:
            return _Response(551)
        source = target.camera.streams[target.stream]
        try:
            async with asyncio.timeout(_READY_WAIT):
                await source.wait_ready()
        except TimeoutError:
            return _Response(503)
        host = urlsplit(target.base_url).hostname or "127.0.0.1"
        sdp = build_sdp(
            codec=target.camera.codec,
            parameter_sets=source.parameter_sets,
            session_id=zlib.crc32(f"{target.camera_id}/{target.stream}".encode()),
            session_version=zlib.crc32(b"".join(source.parameter_sets)),
            host=host,
            title=f"{target.camera.name} {target.stream}",
            fps=source.spec.fps,
        )
        headers = [("Content-Base", target.base_url), ("Content-Type", "application/sdp")]
        return _Response(200, headers, sdp.encode())

    async def _setup(self, conn: _Connection, target: _Target, req: _Request, session: _Session | None) -> _Response:
        if session is not None and session.state == "playing":
            return _Response(455)
        spec = req.headers.get("transport")
        if not spec:
            return _Response(461)
        created = session is None
        if session is None:
            session = _Session(self, target.camera_id, target.camera, target.stream, target.base_url, conn)
        transport = await self._make_transport(conn, session, spec)
        if transport is None:
            if created:
                session.close()
            return _Response(461)
        if session.transport is not None:
            session.transport.close()
        session.transport = transport
        session.touch()
        if created:
            self._sessions[session.id] = session
            conn.sessions[session.id] = session
            _log.info(
                "session %s: %s/%s over %s for %s",
                session.id,
                target.camera_id,
                target.stream,
                transport.kind,
                conn.peer_host,
            )
        return _Response(200, [("Transport", transport.header(session.packetizer.ssrc)), self._session_header(session)])

    async def _make_transport(self, conn: _Connection, session: _Session, spec: str) -> _Transport | None:
        for option in spec.split(","):
            parts = [p.strip() for p in option.split(";") if p.strip()]
            if not parts:
                continue
            protocol = parts[0].upper()
            params: dict[str, str] = {}
            for p in parts[1:]:
                key, _, value = p.partition("=")
                params[key.lower()] = value
            if "multicast" in params or params.get("mode", "play").strip('"').lower() not in ("play",):
                continue
            if protocol == "RTP/AVP/TCP":
                used = conn.channels_in_use()
                if "interleaved" in params:
                    try:
                        channels = [int(c) for c in params["interleaved"].split("-")]
                    except ValueError:
                        continue
                    rtp_ch = channels[0]
                    rtcp_ch = channels[1] if len(channels) > 1 else rtp_ch + 1
                else:
                    rtp_ch = 0
                    while {rtp_ch, rtp_ch + 1} & used:
                        rtp_ch += 2
                    rtcp_ch = rtp_ch + 1
                if not (0 <= rtp_ch <= 255 and 0 <= rtcp_ch <= 255) or {rtp_ch, rtcp_ch} & used:
                    continue
                return _TcpTransport(conn.writer, rtp_ch, rtcp_ch)
            if protocol in ("RTP/AVP", "RTP/AVP/UDP"):
                ports = params.get("client_port")
                if not ports:
                    continue
                try:
                    numbers = [int(p) for p in ports.split("-")]
                except ValueError:
                    continue
                client = (numbers[0], numbers[1] if len(numbers) > 1 else numbers[0] + 1)
                if not all(0 < p < 65536 for p in client):
                    continue
                try:
                    rtp_t, rtcp_t = await _open_udp_pair(conn.local_host, session.touch)
                except OSError as exc:
                    _log.warning("cannot open UDP ports: %s", exc)
                    return None
                server_ports = (rtp_t.get_extra_info("sockname")[1], rtcp_t.get_extra_info("sockname")[1])
                return _UdpTransport(rtp_t, rtcp_t, conn.peer_host, client, server_ports)
        return None

    async def _play(self, session: _Session | None) -> tuple[_Response, Callable[[], None] | None]:
        if session is None:
            return _Response(454), None
        session.touch()
        if session.transport is None:
            return _Response(455), None
        headers = [self._session_header(session), ("Range", "npt=now-")]
        if session.state == "playing":
            return _Response(200, headers), None
        try:
            sub = session.source.subscribe()
        except StreamClosed:
            return _Response(503), None
        if session.last_pts is not None:
            sub.resync()  # resuming after PAUSE: start at the next keyframe, after what was sent
        try:
            async with asyncio.timeout(_PLAY_WAIT):
                first = await sub.first()
        except (TimeoutError, StreamClosed):
            sub.close()
            return _Response(503), None
        if session.closed:
            sub.close()
            return _Response(454), None
        packetizer = session.packetizer
        headers.append(
            (
                "RTP-Info",
                f"url={session.track_url};seq={packetizer.seq};rtptime={packetizer.rtp_timestamp(first.pts)}",
            )
        )
        return _Response(200, headers), lambda: session.start(sub)
