"""Viewer sessions: one WebRTC peer connection per viewer, from the WHEP offer to the audit event that ends it.

`SessionManager.open()` checks the grant's camera stream choice (an H.265 stream is replaced by the camera's H.264
one, or refused saying so), builds the peer connection (a send-only video transceiver preferring H.264, set before
the offer is applied so VP8 is never chosen; ICE per `IcePolicy`), attaches the viewer's queue to the camera's feed,
records the start in the audit log (fail closed: no audit, no session) and returns the SDP answer.

Each session then has one supervising task that ends it, whichever comes first, when:
- its token expires (`token_expired`): a grant is valid only until the token's `exp`;
- the viewer asks (`deleted`, the WHEP DELETE), or its peer connection closes (`peer_closed`) or fails (`peer_failed`);
- the peer does not connect within `connect_timeout_s` (`connect_timeout`);
- the viewer stops reading: no RTCP receiver report for `viewer_timeout_s` while frames are being sent to it
  (`viewer_timeout`);
- the camera turns out to send H.265 on that stream (`codec`);
- the service stops (`shutdown`), or supervising the session fails unexpectedly (`error`, logged).
Ending closes the peer connection, detaches the viewer from the feed and records the end in the audit log with who,
which camera and stream, and how long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, sdp
from aiortc.exceptions import InvalidStateError, OperationError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from aiortc.sdp import candidate_from_sdp

from argus_core.audit import AuditEmitter, AuditUnavailable
from argus_core.bus import messages as m
from argus_core.errors import ArgusError
from argus_core.identity import Identity
from argus_liveview.config import LiveviewSettings
from argus_liveview.feed import CameraFeed, FeedError, FeedHub
from argus_liveview.ice import IceError, IcePolicy
from argus_liveview.metrics import Metrics
from argus_liveview.viewer import Frame, PassthroughTrack, ViewerQueue

log = logging.getLogger(__name__)

EndReason = Literal[
    "deleted",
    "token_expired",
    "viewer_timeout",
    "connect_timeout",
    "peer_closed",
    "peer_failed",
    "codec",
    "shutdown",
    "error",
]
_WATCH_S = 1.0
_QUIET_S = 2.0  # no frame sent for this long: nothing to judge the viewer's reports by


class SessionError(ArgusError):
    """A session cannot be opened; `status` is the HTTP status that says why."""

    def __init__(self, status: int, title: str, detail: str, **extra: str) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


@dataclass(eq=False)
class Session:
    id: str
    identity: Identity
    client: str
    camera: str
    stream: m.StreamName
    requested: m.StreamName
    pc: RTCPeerConnection
    transceiver: RTCRtpTransceiver
    queue: ViewerQueue
    track: PassthroughTrack
    feed: CameraFeed
    opened: float  # loop time of the POST
    opened_ns: int
    expires_at: float  # loop time the token expires
    first_frame: float | None = None
    connected: float | None = None
    end_reason: EndReason | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def end(self, reason: EndReason) -> None:
        """Ask the session to end (the first reason given is the one recorded)."""
        if self.end_reason is None:
            self.end_reason = reason
        self.stop.set()


def _other(stream: m.StreamName) -> m.StreamName:
    return "sub" if stream == "main" else "main"


def h264_preferences() -> list[RTCRtpCodecCapability]:
    """H.264 (every packetisation aiortc offers) and its RTX, in aiortc's order; never VP8."""
    return [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in ("video/H264", "video/rtx")]


class SessionManager:
    """The open sessions of this process and the tasks that supervise them."""

    def __init__(
        self,
        hub: FeedHub,
        ice: IcePolicy,
        audit: AuditEmitter,
        metrics: Metrics,
        settings: LiveviewSettings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._hub = hub
        self._ice = ice
        self._audit = audit
        self._metrics = metrics
        self._settings = settings
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._opening = 0
        self._refusing = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def closed(self) -> bool:
        return self._closed

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    # --- opening ---------------------------------------------------------------------------------------------------

    async def open(
        self, identity: Identity, camera: str, requested: m.StreamName, offer: str, *, client: str = ""
    ) -> tuple[Session, str]:
        """A new session for `identity` (already checked to hold `live` on `camera`) and its SDP answer."""
        if self._closed or self._refusing:
            raise SessionError(503, "Service Unavailable", "liveview is shutting down")
        if len(self._sessions) + self._opening >= self._settings.max_sessions:
            self._metrics.sessions.labels(outcome="refused").inc()
            raise SessionError(503, "Service Unavailable", f"this pod serves {self._settings.max_sessions} viewers")
        remaining = identity.expires_at - self._clock() if identity.expires_at else float("inf")
        if remaining <= 0:
            raise SessionError(401, "Unauthorized", "token expired")
        self._opening += 1
        try:
            session, answer = await self._open(identity, camera, requested, offer, client, remaining)
        except SessionError:
            self._metrics.sessions.labels(outcome="refused").inc()
            raise
        except BaseException:
            self._metrics.sessions.labels(outcome="failed").inc()
            raise
        finally:
            self._opening -= 1
        if self.closed:
            session.end("shutdown")  # opened while the service stopped: `close()` waits for its end
        return session, answer

    async def _open(
        self, identity: Identity, camera: str, requested: m.StreamName, offer: str, client: str, remaining: float
    ) -> tuple[Session, str]:
        loop = asyncio.get_running_loop()
        opened = loop.time()
        feed = await self._choose_feed(camera, requested)
        pc: RTCPeerConnection | None = None
        try:
            queue = ViewerQueue(self._settings.viewer_queue_frames, self._on_drop)
            session_id = uuid.uuid4().hex
            holder: list[Session] = []
            track = PassthroughTrack(
                queue,
                catchup_speed=self._settings.catchup_speed,
                catchup_after_s=self._settings.catchup_after_ms / 1000,
                on_first_frame=lambda frame: self._first_frame(holder, frame),
            )
            pc = RTCPeerConnection(self._ice.configuration())
            transceiver = pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(h264_preferences())
            answer = await self._negotiate(pc, transceiver, offer)
            session = Session(
                id=session_id,
                identity=identity,
                client=client,
                camera=camera,
                stream=feed.stream,
                requested=requested,
                pc=pc,
                transceiver=transceiver,
                queue=queue,
                track=track,
                feed=feed,
                opened=opened,
                opened_ns=time.time_ns(),
                expires_at=opened + remaining,
            )
            holder.append(session)
            try:
                await self._audit.emit(
                    "live.view.start",
                    actor=identity,
                    client=client,
                    camera=camera,
                    target=session_id,
                    details={"stream": feed.stream, "requested_stream": requested, "session": session_id},
                )
            except AuditUnavailable as exc:
                raise SessionError(
                    503, "Service Unavailable", "the audit log cannot record this view now; try again shortly"
                ) from exc
        except BaseException:
            if pc is not None:
                await pc.close()
            self._hub.release(feed)
            raise
        self._watch_state(session)
        feed.attach(queue)
        self._sessions[session.id] = session
        self._tasks[session.id] = asyncio.create_task(self._supervise(session), name=f"liveview.session.{session.id}")
        self._metrics.sessions.labels(outcome="started").inc()
        self._metrics.viewers.inc()
        log.info(
            "session %s: %s watches %s/%s",
            session.id,
            identity.subject,
            camera,
            session.stream,
            extra={"session": session.id, "camera": camera, "stream": session.stream, "subject": identity.subject},
        )
        return session, answer

    async def _choose_feed(self, camera: str, requested: m.StreamName) -> CameraFeed:
        """The feed to serve: the requested stream, or the camera's other stream when the requested one is H.265
        and the other is H.264; a `SessionError` saying so when the camera has no H.264 stream."""
        try:
            feed = await self._hub.acquire(camera, requested)
        except FeedError as exc:
            raise SessionError(503, "Service Unavailable", str(exc)) from exc
        if feed.codec != "h265":
            return feed  # H.264, or nothing on the bus yet: the viewer waits for the camera
        self._hub.release(feed)
        other = _other(requested)
        try:
            alternative = await self._hub.acquire(camera, other)
        except FeedError as exc:
            raise SessionError(503, "Service Unavailable", str(exc)) from exc
        if alternative.codec == "h264":
            log.info("%s/%s is H.265: serving its H.264 %s stream", camera, requested, other)
            return alternative
        self._hub.release(alternative)
        why = "is H.265 too" if alternative.codec == "h265" else "is not on the bus"
        raise SessionError(
            422,
            "Unsupported Codec",
            f"camera {camera} sends H.265 on its {requested} stream, which browsers cannot receive over WebRTC here, "
            f"and has no H.264 stream to serve instead (its {other} stream {why})",
            codec="h265",
            camera=camera,
        )

    async def _negotiate(self, pc: RTCPeerConnection, transceiver: RTCRtpTransceiver, offer: str) -> str:
        filtered, dropped = self._ice.filter_offer(offer)
        if dropped:
            log.debug("left out %d offered ICE candidates we cannot reach", dropped)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=filtered, type="offer"))
        except OperationError as exc:  # the only one setRemoteDescription raises: no codec in common
            raise SessionError(
                400, "Bad Request", f"the SDP offer accepts no H.264 video, the only codec liveview sends ({exc})"
            ) from exc
        except (ValueError, AssertionError, KeyError, IndexError, InvalidStateError) as exc:
            raise SessionError(400, "Bad Request", f"the SDP offer cannot be used: {exc}") from exc
        if transceiver.mid is None:
            raise SessionError(400, "Bad Request", "the SDP offer has no video section to receive the camera on")
        self._ice.install(pc)
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except IceError as exc:
            raise SessionError(503, "Service Unavailable", str(exc)) from exc
        if transceiver.currentDirection != "sendonly":
            raise SessionError(400, "Bad Request", "the SDP offer does not receive video (recvonly or sendrecv)")
        description = pc.localDescription
        assert description is not None
        media = [d for d in sdp.SessionDescription.parse(description.sdp).media if d.rtp.muxId == transceiver.mid]
        codecs = [c.mimeType for d in media for c in d.rtp.codecs if c.mimeType != "video/rtx"]
        if not codecs or codecs[0] != "video/H264":
            raise SessionError(400, "Bad Request", "the SDP offer does not accept H.264 video")
        return description.sdp

    # --- running ---------------------------------------------------------------------------------------------------

    def _first_frame(self, holder: list[Session], frame: Frame) -> None:
        if not holder:
            return
        session = holder[0]
        session.first_frame = asyncio.get_running_loop().time()
        self._metrics.first_frame.observe(session.first_frame - session.opened)

    def _on_drop(self, count: int, reason: str) -> None:
        self._metrics.dropped.labels(reason=reason).inc(count)

    def _watch_state(self, session: Session) -> None:
        loop = asyncio.get_running_loop()

        @session.pc.on("connectionstatechange")
        def on_state() -> None:
            state = session.pc.connectionState
            if state == "connected" and session.connected is None:
                session.connected = loop.time()
            elif state == "failed":
                session.end("peer_failed")
            elif state == "closed":
                session.end("peer_closed")

    async def _supervise(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        frames = bytes_ = 0
        try:
            # The viewer's RTCP receiver reports are judged only while media flows: a viewer of a camera that is
            # offline receives nothing and so reports nothing, yet is still watching.
            baseline = loop.time()
            while not session.stop.is_set():
                now = loop.time()
                if now >= session.expires_at:
                    session.end("token_expired")
                    break
                if session.connected is None and now - session.opened > self._settings.connect_timeout_s:
                    session.end("connect_timeout")
                    break
                if session.feed.codec == "h265":
                    session.end("codec")
                    break
                if session.connected is not None:
                    sent = session.track.last_sent
                    if sent is None or now - sent > _QUIET_S:
                        baseline = now
                    else:
                        report = await self._last_receiver_report(session)
                        baseline = max(baseline, report or 0.0)
                        if now - baseline > self._settings.viewer_timeout_s:
                            session.end("viewer_timeout")
                            break
                frames, bytes_ = self._count_sent(session, frames, bytes_)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(_WATCH_S, max(0.0, session.expires_at - loop.time()))):
                        await session.stop.wait()
        except Exception:
            log.exception("session %s: supervision failed; ending it", session.id)
            session.end("error")
        finally:
            if session.end_reason is None:
                session.end("shutdown")
            self._count_sent(session, frames, bytes_)
            await self._teardown(session)

    async def _last_receiver_report(self, session: Session) -> float | None:
        """Loop time of the viewer's latest RTCP receiver report about our stream, if any came."""
        stats = await session.transceiver.sender.getStats()
        wall: float | None = max(
            (float(s.timestamp.timestamp()) for s in stats.values() if s.type == "remote-inbound-rtp"),
            default=None,
        )
        if wall is None:
            return None
        return asyncio.get_running_loop().time() - max(0.0, time.time() - wall)

    def _count_sent(self, session: Session, frames: int, bytes_: int) -> tuple[int, int]:
        self._metrics.frames_sent.inc(session.track.frames_sent - frames)
        self._metrics.bytes_sent.inc(session.track.bytes_sent - bytes_)
        return session.track.frames_sent, session.track.bytes_sent

    async def _teardown(self, session: Session) -> None:
        reason = session.end_reason or "shutdown"
        loop = asyncio.get_running_loop()
        duration = loop.time() - session.opened
        session.feed.detach(session.queue)
        session.queue.close()
        try:
            await session.pc.close()
        except Exception:
            log.exception("session %s: closing its peer connection failed", session.id)
        finally:
            self._hub.release(session.feed)
            self._sessions.pop(session.id, None)
            self._tasks.pop(session.id, None)
            self._metrics.viewers.dec()
            self._metrics.ended.labels(reason=reason).inc()
            self._metrics.session_seconds.observe(duration)
            log.info(
                "session %s ended (%s) after %.1f s: %s watched %s/%s",
                session.id,
                reason,
                duration,
                session.identity.subject,
                session.camera,
                session.stream,
                extra={"session": session.id, "camera": session.camera, "reason": reason},
            )
            session.done.set()
        details = {
            "stream": session.stream,
            "requested_stream": session.requested,
            "session": session.id,
            "reason": reason,
            "duration_s": f"{duration:.3f}",
            "frames": str(session.track.frames_sent),
            "bytes": str(session.track.bytes_sent),
            "dropped_frames": str(session.queue.dropped),
        }
        if session.first_frame is not None:
            details["first_frame_s"] = f"{session.first_frame - session.opened:.3f}"
        try:
            await self._audit.emit(
                "live.view.end",
                actor=session.identity,
                client=session.client,
                camera=session.camera,
                target=session.id,
                footage=(session.opened_ns, time.time_ns()),
                details=details,
            )
        except AuditUnavailable:
            log.exception("session %s: the end of the view was not recorded in the audit log", session.id)

    # --- viewer requests -------------------------------------------------------------------------------------------

    async def end(self, session: Session, reason: EndReason) -> None:
        """End `session` and wait until it is torn down and its end recorded."""
        session.end(reason)
        task = self._tasks.get(session.id)
        if task is not None:
            await asyncio.shield(task)
        else:
            await session.done.wait()

    async def add_candidates(self, session: Session, fragment: str) -> None:
        """Trickle ICE (a WHEP PATCH): the candidates of an `application/trickle-ice-sdpfrag` body."""
        mid: str | None = None
        ufrag: str | None = None
        candidates = []
        end = False
        for raw in fragment.splitlines():
            line = raw.strip()
            if line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=ice-ufrag:"):
                ufrag = line[12:]
            elif line.startswith("a=candidate:"):
                try:
                    candidate = candidate_from_sdp(line[12:])
                except (AssertionError, ValueError, IndexError) as exc:
                    raise SessionError(400, "Bad Request", f"unreadable candidate {line!r}") from exc
                candidates.append(candidate)
            elif line == "a=end-of-candidates":
                end = True
        remote = session.pc.remoteDescription
        if ufrag is not None and remote is not None and f"a=ice-ufrag:{ufrag}" not in remote.sdp:
            raise SessionError(422, "Unprocessable Content", "ICE restarts are not supported: start a new session")
        for candidate in candidates:
            if not self._ice.accepts_remote(candidate.ip):
                continue
            candidate.sdpMid = mid if mid is not None else session.transceiver.mid
            await session.pc.addIceCandidate(candidate)
        if end:
            await session.pc.addIceCandidate(None)

    def refuse_new(self) -> None:
        """Open no more sessions (the service is stopping); those open go on until `close()`."""
        self._refusing = True

    async def close(self) -> None:
        """End every session (`shutdown`), recording each end; refuse new ones from now on. Sessions still being
        opened are waited for and ended too."""
        self._closed = True
        while True:
            for session in list(self._sessions.values()):
                session.end("shutdown")
            tasks = list(self._tasks.values())
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if not self._opening and not self._tasks:
                return
            await asyncio.sleep(0.05)
