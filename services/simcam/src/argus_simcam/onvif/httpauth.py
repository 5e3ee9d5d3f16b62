"""HTTP authentication for the snapshot URL: Digest (RFC 7616, MD5, qop=auth) and Basic, as cameras do.

Server nonces are stateless: a timestamp and an HMAC of it under a per-process secret, valid for
`nonce_lifetime` seconds; an expired but genuine nonce gets a `stale=true` challenge so clients retry
without asking the user again. Nonce counts are not tracked (a replayed request within the nonce's lifetime is
accepted, as on many cameras).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from enum import Enum

__all__ = ["HttpAuthenticator", "HttpAuthResult"]

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


class HttpAuthResult(Enum):
    OK = "ok"
    MISSING = "missing"
    REJECTED = "rejected"
    STALE = "stale"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class HttpAuthenticator:
    def __init__(
        self,
        realm: str,
        *,
        nonce_lifetime: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._realm = realm.replace('"', "'")
        self._lifetime = nonce_lifetime
        self._clock = clock
        self._secret = os.urandom(32)
        self._opaque = secrets.token_hex(16)

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def _new_nonce(self) -> str:
        stamp = f"{int(self._clock() * 1000):x}"
        return f"{stamp}{self._sign(stamp)}"

    def _nonce_state(self, nonce: str) -> HttpAuthResult:
        stamp, mac = nonce[:-32], nonce[-32:]
        if not stamp or not hmac.compare_digest(mac, self._sign(stamp)):
            return HttpAuthResult.REJECTED
        try:
            issued = int(stamp, 16) / 1000
        except ValueError:
            return HttpAuthResult.REJECTED
        return HttpAuthResult.OK if self._clock() - issued <= self._lifetime else HttpAuthResult.STALE

    def challenge(self, *, stale: bool = False) -> str:
        """A `WWW-Authenticate` header value."""
        value = (
            f'Digest realm="{self._realm}", qop="auth", nonce="{self._new_nonce()}", '
            f'opaque="{self._opaque}", algorithm=MD5'
        )
        return value + (", stale=true" if stale else "")

    def check(
        self, authorization: str | None, *, method: str, target: str, username: str, password: str
    ) -> HttpAuthResult:
        """Check an `Authorization` header for a request of `method` to request-target `target`."""
        if not authorization:
            return HttpAuthResult.MISSING
        scheme, _, rest = authorization.strip().partition(" ")
        match scheme.lower():
            case "basic":
                return self._check_basic(rest.strip(), username, password)
            case "digest":
                return self._check_digest(rest, method, target, username, password)
        return HttpAuthResult.MISSING

    @staticmethod
    def _check_basic(encoded: str, username: str, password: str) -> HttpAuthResult:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return HttpAuthResult.REJECTED
        user, sep, pw = decoded.partition(":")
        user_ok = hmac.compare_digest(user.encode(), username.encode())
        password_ok = hmac.compare_digest(pw.encode(), password.encode())
        return HttpAuthResult.OK if sep and user_ok and password_ok else HttpAuthResult.REJECTED

    def _check_digest(self, params_text: str, method: str, target: str, username: str, password: str) -> HttpAuthResult:
        params = {
            m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
            for m in _PARAM.finditer(params_text)
        }
        nonce = params.get("nonce", "")
        if params.get("algorithm", "MD5").upper() != "MD5" or params.get("realm") != self._realm:
            return HttpAuthResult.REJECTED
        if params.get("uri") != target or "response" not in params:
            return HttpAuthResult.REJECTED
        if not hmac.compare_digest(params.get("username", "").encode(), username.encode()):
            return HttpAuthResult.REJECTED
        ha1 = _md5(f"{username}:{self._realm}:{password}")
        ha2 = _md5(f"{method.upper()}:{target}")
        qop = params.get("qop")
        if qop == "auth":
            expected = _md5(f"{ha1}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth:{ha2}")
        elif qop is None:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        else:
            return HttpAuthResult.REJECTED
        if not hmac.compare_digest(params["response"].lower().encode(), expected.encode()):
            return HttpAuthResult.REJECTED
        return self._nonce_state(nonce)
