"""HTTP Digest authentication (RFC 2617, MD5) for RTSP, server and client side.

The server's nonces are stateless: hex time stamp + HMAC of it under a per-process secret, so any nonce this
process issued verifies, and nonces do not pile up in memory. `qop=auth` responses are accepted as well as the
RFC 2069 form (no qop), which the server's challenge asks for because every RTSP client supports it.
Basic credentials are refused (answered with a Digest challenge).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from enum import Enum

__all__ = ["AuthResult", "DigestAuth", "authorization", "parse_auth_params"]

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?')


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def parse_auth_params(value: str) -> dict[str, str]:
    """The key=value parameters after the scheme of an Authorization or WWW-Authenticate header."""
    params: dict[str, str] = {}
    for match in _PARAM.finditer(value):
        key, quoted, token = match.group(1), match.group(2), match.group(3)
        params[key.lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else token
    return params


class AuthResult(Enum):
    OK = "ok"
    MISSING = "missing"
    BAD = "bad"
    BASIC = "basic"


class DigestAuth:
    """Challenges and checks Digest credentials for one realm."""

    def __init__(self, realm: str, secret: bytes | None = None) -> None:
        self.realm = realm
        self._secret = secret or secrets.token_bytes(32)

    def nonce(self) -> str:
        stamp = f"{time.time_ns() // 1000:x}"
        mac = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return stamp + mac

    def _nonce_ok(self, nonce: str) -> bool:
        if len(nonce) <= 24:
            return False
        stamp, mac = nonce[:-24], nonce[-24:]
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:24]
        return hmac.compare_digest(mac, expected)

    def challenge(self) -> str:
        """The WWW-Authenticate header value."""
        return f'Digest realm="{self.realm}", nonce="{self.nonce()}", algorithm=MD5'

    def check(self, method: str, authorization: str | None, username: str, password: str) -> AuthResult:
        if not authorization:
            return AuthResult.MISSING
        scheme, _, rest = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            return AuthResult.BASIC
        if scheme.lower() != "digest":
            return AuthResult.BAD
        p = parse_auth_params(rest)
        if p.get("username") != username or p.get("realm") != self.realm:
            return AuthResult.BAD
        nonce, uri, response = p.get("nonce", ""), p.get("uri", ""), p.get("response", "")
        if not self._nonce_ok(nonce) or p.get("algorithm", "MD5").upper() != "MD5":
            return AuthResult.BAD
        expected = _expected(p, method, username, self.realm, password, nonce, uri)
        if expected is None or not hmac.compare_digest(expected, response.lower()):
            return AuthResult.BAD
        return AuthResult.OK


def _expected(
    p: Mapping[str, str], method: str, username: str, realm: str, password: str, nonce: str, uri: str
) -> str | None:
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    qop = p.get("qop")
    if qop is None:
        return _md5(f"{ha1}:{nonce}:{ha2}")
    if qop != "auth" or "nc" not in p or "cnonce" not in p:
        return None
    return _md5(f"{ha1}:{nonce}:{p['nc']}:{p['cnonce']}:{qop}:{ha2}")


def authorization(method: str, uri: str, username: str, password: str, challenge: str) -> str:
    """Client side: the Authorization header value answering a `WWW-Authenticate: Digest ...` challenge."""
    scheme, _, rest = challenge.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {challenge!r}")
    p = parse_auth_params(rest)
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    response = _md5(f"{ha1}:{nonce}:{ha2}")
    return f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'
