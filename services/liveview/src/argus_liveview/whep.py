"""The WHEP endpoints (WebRTC-HTTP Egress Protocol, the IETF WISH draft, sibling of WHIP, RFC 9725) and the page.

    POST   /whep/{camera}[/{stream}]   an SDP offer (application/sdp) -> 201, the SDP answer, Location of the session
    PATCH  /whep/sessions/{id}         trickle ICE candidates (application/trickle-ice-sdpfrag) -> 204
    DELETE /whep/sessions/{id}         end the session -> 200
    OPTIONS on both                    CORS preflight (the console is served from another origin)
    GET    /                           a minimal page that plays one camera

Every request but the page and the preflight carries `Authorization: Bearer <token>`; starting a session needs a
grant of `live` on the camera (a refusal is audited), and only the session's own subject may change or end it.
`stream` is `main` (default) or `sub`; the 201 says which stream is served in `X-Argus-Stream` (an H.265 camera's
H.264 sub stream when main was asked for). The answer is complete (every local candidate in it); the STUN/TURN
servers in use are listed in `Link: <url>; rel="ice-server"` headers, as WHEP describes.
"""

from __future__ import annotations

import typing
from importlib import resources

from aiohttp import web

from argus_core.audit import AuditEmitter, AuditUnavailable
from argus_core.bus import messages as m
from argus_core.http import Problem, identity_of, public_route
from argus_liveview.session import Session, SessionError, SessionManager

MANAGER_KEY = web.AppKey("argus.liveview.sessions", SessionManager)
AUDIT_KEY = web.AppKey("argus.liveview.audit", AuditEmitter)
LINKS_KEY = web.AppKey("argus.liveview.ice_links", tuple)

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
_STREAMS: tuple[m.StreamName, ...] = typing.get_args(m.StreamName)
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, Link, X-Argus-Stream, Accept-Patch",
}


def _client(request: web.Request) -> str:
    agent = request.headers.get("User-Agent", "")[:120]
    return f"whep {request.remote or '?'} {agent}".strip()


def _session_location(session: Session) -> str:
    return f"/whep/sessions/{session.id}"


@public_route
async def page(request: web.Request) -> web.Response:
    text = resources.files("argus_liveview").joinpath("static/index.html").read_text()
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


@public_route
async def preflight(request: web.Request) -> web.Response:
    return web.Response(
        status=204,
        headers={
            **_CORS,
            "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
            "Access-Control-Max-Age": "600",
            "Accept-Post": SDP,
            "Accept-Patch": SDPFRAG,
        },
    )


async def start(request: web.Request) -> web.Response:
    camera = request.match_info["camera"]
    name = request.match_info.get("stream", "main")
    stream = next((x for x in _STREAMS if x == name), None)
    if stream is None:
        raise Problem(404, "Not Found", f"no stream {name!r}: main or sub")
    identity = identity_of(request)
    if not identity.allows("live", camera):
        try:
            await request.app[AUDIT_KEY].emit(
                "live.view.start",
                actor=identity,
                outcome="denied",
                client=_client(request),
                camera=camera,
                details={"stream": stream},
            )
        except AuditUnavailable:
            pass  # the refusal stands; the emitter logged why it was not recorded
        raise Problem(403, "Forbidden", f"no grant for live on camera {camera}", action="live", camera=camera)
    if request.content_type != SDP:
        raise Problem(415, "Unsupported Media Type", f"the offer must be {SDP}, not {request.content_type}")
    offer = await request.text()
    if not offer.startswith("v=0"):
        raise Problem(400, "Bad Request", "the body is not an SDP offer")
    manager = request.app[MANAGER_KEY]
    try:
        session, answer = await manager.open(identity, camera, stream, offer, client=_client(request))
    except SessionError as exc:
        raise Problem(exc.status, exc.title, exc.detail, **exc.extra) from exc
    headers = {
        **_CORS,
        "Location": _session_location(session),
        "X-Argus-Stream": session.stream,
        "Accept-Patch": SDPFRAG,
    }
    links = request.app[LINKS_KEY]
    if links:
        headers["Link"] = ", ".join(links)
    return web.Response(status=201, text=answer, content_type=SDP, headers=headers)


def _own_session(request: web.Request) -> Session:
    identity = identity_of(request)
    session = request.app[MANAGER_KEY].get(request.match_info["session"])
    if session is None:
        raise Problem(404, "Not Found", "no such session (it may have ended)")
    if session.identity.subject != identity.subject:
        raise Problem(403, "Forbidden", "this session belongs to someone else")
    return session


async def patch(request: web.Request) -> web.Response:
    session = _own_session(request)
    if request.content_type != SDPFRAG:
        raise Problem(415, "Unsupported Media Type", f"trickle ICE needs {SDPFRAG}")
    try:
        await request.app[MANAGER_KEY].add_candidates(session, await request.text())
    except SessionError as exc:
        raise Problem(exc.status, exc.title, exc.detail, **exc.extra) from exc
    return web.Response(status=204, headers=_CORS)


async def delete(request: web.Request) -> web.Response:
    session = _own_session(request)
    await request.app[MANAGER_KEY].end(session, "deleted")
    return web.Response(status=200, headers=_CORS)


def routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    for path in ("/whep/{camera}", "/whep/{camera}/{stream}"):
        app.router.add_post(path, start)
        app.router.add_route("OPTIONS", path, preflight)
    app.router.add_patch("/whep/sessions/{session}", patch)
    app.router.add_delete("/whep/sessions/{session}", delete)
    app.router.add_route("OPTIONS", "/whep/sessions/{session}", preflight)


def ice_links(servers: tuple[str, ...], username: str, password: str) -> tuple[str, ...]:
    """`Link` header values for the ICE servers (WHEP section 4.4); TURN credentials as the draft spells them."""
    out = []
    for url in servers:
        link = f'<{url}>; rel="ice-server"'
        if url.startswith("turn") and username:
            link += f'; username="{username}"; credential="{password}"; credential-type="password"'
        out.append(link)
    return tuple(out)
