"""HTTP edges shared by services: problem+json errors (RFC 9457) and bearer-token authentication."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from argus_core.identity import Action, Identity, TokenError, TokenVerifier

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
IDENTITY_KEY = web.RequestKey("argus.identity", Identity)
VERIFIER_KEY = web.AppKey("argus.token_verifier", TokenVerifier)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, title: str, detail: str = "", *, type_: str = "about:blank", **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM_JSON)


class Problem(web.HTTPException):
    """Raise from a handler to answer with a problem+json body."""

    def __init__(self, status: int, title: str, detail: str = "", **extra: Any) -> None:
        self.status_code = status
        super().__init__(text=problem(status, title, detail, **extra).text, content_type=PROBLEM_JSON)


def _unauthorized(reason: str) -> web.Response:
    response = problem(401, "Unauthorized", reason)
    quoted = reason.replace('"', "'")
    response.headers["WWW-Authenticate"] = f'Bearer realm="argus", error="invalid_token", error_description="{quoted}"'
    return response


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else ""
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the bearer token of every request to a route not marked public (`public_route`)."""
    if getattr(handler, "argus_public", False) or request.path in ("/healthz", "/readyz", "/metrics"):
        return await handler(request)
    token = bearer_token(request)
    if token is None:
        return _unauthorized("missing bearer token")
    if not token:
        return _unauthorized("malformed Authorization header: expected 'Bearer <token>'")
    try:
        identity = request.app[VERIFIER_KEY].verify(token)
    except TokenError as exc:
        return _unauthorized(exc.reason)
    request[IDENTITY_KEY] = identity
    return await handler(request)


def public_route(handler: Handler) -> Handler:
    """Mark a handler as reachable without a token (health, the console's static files)."""
    handler.argus_public = True  # type: ignore[attr-defined]
    return handler


def identity_of(request: web.Request) -> Identity:
    identity: Identity | None = request.get(IDENTITY_KEY)
    if identity is None:
        raise Problem(401, "Unauthorized", "missing bearer token")
    return identity


def require(request: web.Request, action: Action, camera: str, footage: tuple[float, float] | None = None) -> Identity:
    """The caller's identity if it may take `action` on `camera`; otherwise a 403 problem."""
    identity = identity_of(request)
    if not identity.allows(action, camera, footage):
        raise Problem(403, "Forbidden", f"no grant for {action} on camera {camera}", action=action, camera=camera)
    return identity


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's plain HTTP errors and unexpected exceptions into problem+json, never a traceback."""
    try:
        return await handler(request)
    except Problem:
        raise
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != PROBLEM_JSON:
            return problem(exc.status, exc.reason, exc.text or "")
        raise
    except Exception:
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return problem(500, "Internal Server Error", "the error was logged")
