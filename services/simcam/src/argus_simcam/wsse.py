"""WS-Security UsernameToken verification, the way ONVIF devices authenticate SOAP requests.

A client proves it knows the password with `Password = Base64(SHA-1(nonce + created + password))`, where `nonce`
is random bytes (sent Base64-encoded) and `created` the exact `wsu:Created` text. The device refuses a token
whose `Created` is more than `max_skew` seconds away from its own clock, and a nonce it has already accepted
(a replay), which is why clients with a skewed clock first ask GetSystemDateAndTime (unauthenticated) and sign
with the device's time.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import math
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from xml.etree.ElementTree import Element

__all__ = [
    "PASSWORD_DIGEST",
    "PASSWORD_TEXT",
    "WSSE_NS",
    "WSU_NS",
    "AuthError",
    "AuthFailure",
    "UsernameToken",
    "UsernameTokenVerifier",
    "parse_security_header",
    "password_digest",
]


WSSE_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU_NS = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
_PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
PASSWORD_DIGEST = f"{_PROFILE}#PasswordDigest"
PASSWORD_TEXT = f"{_PROFILE}#PasswordText"


class AuthFailure(StrEnum):
    MISSING = "no UsernameToken"
    MALFORMED = "malformed UsernameToken"
    BAD_CREDENTIALS = "wrong user name or password"
    STALE = "Created is too far from the device clock"
    REPLAYED = "nonce already used"


class AuthError(Exception):
    """The request is not authenticated; `failure` says why (for logs; clients only see NotAuthorized)."""

    def __init__(self, failure: AuthFailure, detail: str = "") -> None:
        super().__init__(f"{failure.value}: {detail}" if detail else failure.value)
        self.failure = failure


@dataclass(frozen=True, slots=True)
class UsernameToken:
    username: str
    password: str
    password_type: str
    nonce: bytes | None
    created: str | None


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """Base64(SHA-1(nonce + created + password)), the WS-Security PasswordDigest."""
    sha = hashlib.sha1(nonce + created.encode() + password.encode(), usedforsecurity=False)
    return base64.b64encode(sha.digest()).decode("ascii")


def _text(parent: Element, *tags: str) -> tuple[Element | None, str | None]:
    for tag in tags:
        child = parent.find(tag)
        if child is not None:
            return child, (child.text or "").strip()
    return None, None


def parse_security_header(header: Element | None) -> UsernameToken | None:
    """The UsernameToken in a SOAP `Header`, or None if there is none. Raises AuthError if it is malformed."""
    if header is None:
        return None
    security = header.find(f"{{{WSSE_NS}}}Security")
    if security is None:
        return None
    token = security.find(f"{{{WSSE_NS}}}UsernameToken")
    if token is None:
        return None
    _, username = _text(token, f"{{{WSSE_NS}}}Username")
    password_el, password = _text(token, f"{{{WSSE_NS}}}Password")
    if username is None or password_el is None or password is None:
        raise AuthError(AuthFailure.MALFORMED, "Username and Password are required")
    password_type = password_el.get("Type", PASSWORD_TEXT)
    _, nonce_text = _text(token, f"{{{WSSE_NS}}}Nonce")
    _, created = _text(token, f"{{{WSU_NS}}}Created", f"{{{WSSE_NS}}}Created")
    nonce: bytes | None = None
    if nonce_text is not None:
        try:
            nonce = base64.b64decode(nonce_text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise AuthError(AuthFailure.MALFORMED, "Nonce is not Base64") from exc
    return UsernameToken(username, password, password_type, nonce, created)


def _parse_created(created: str) -> float:
    try:
        when = dt.datetime.fromisoformat(created)
    except ValueError as exc:
        raise AuthError(AuthFailure.MALFORMED, f"Created {created!r} is not a dateTime") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class UsernameTokenVerifier:
    """Checks tokens for one device: credentials, freshness against the device clock, and nonce reuse.

    Accepted nonces are remembered for `2 * max_skew` seconds of device time (after that a replay would be
    stale anyway), at most `max_nonces` of them (the oldest are forgotten first).
    """

    def __init__(
        self,
        *,
        max_skew: float = 300.0,
        max_nonces: int = 4096,
        allow_password_text: bool = False,
    ) -> None:
        if not (math.isfinite(max_skew) and max_skew > 0) or max_nonces < 1:
            raise ValueError("max_skew and max_nonces must be positive")
        self._max_skew = max_skew
        self._max_nonces = max_nonces
        self._allow_password_text = allow_password_text
        self._nonces: OrderedDict[bytes, float] = OrderedDict()

    def verify(self, token: UsernameToken | None, *, username: str, password: str, now: float) -> None:
        """Raise AuthError unless `token` proves `username`/`password`; `now` is the device clock (epoch s)."""
        if token is None:
            raise AuthError(AuthFailure.MISSING)
        user_ok = hmac.compare_digest(token.username.encode(), username.encode())
        if token.password_type == PASSWORD_TEXT:
            if not self._allow_password_text:
                raise AuthError(AuthFailure.BAD_CREDENTIALS, "PasswordText is not accepted")
            if not (user_ok and hmac.compare_digest(token.password.encode(), password.encode())):
                raise AuthError(AuthFailure.BAD_CREDENTIALS)
            return
        if token.password_type != PASSWORD_DIGEST:
            raise AuthError(AuthFailure.MALFORMED, f"unknown password type {token.password_type!r}")
        if token.nonce is None or token.created is None:
            raise AuthError(AuthFailure.MALFORMED, "a PasswordDigest needs Nonce and Created")
        created = _parse_created(token.created)
        if abs(created - now) > self._max_skew:
            raise AuthError(AuthFailure.STALE, f"Created {token.created}, device time {_iso(now)}")
        expected = password_digest(token.nonce, token.created, password)
        if not (user_ok and hmac.compare_digest(token.password.encode(), expected.encode())):
            raise AuthError(AuthFailure.BAD_CREDENTIALS)
        self._forget_expired(now)
        if token.nonce in self._nonces:
            raise AuthError(AuthFailure.REPLAYED)
        if len(self._nonces) >= self._max_nonces:
            self._nonces.popitem(last=False)
        self._nonces[token.nonce] = now + 2 * self._max_skew

    def _forget_expired(self, now: float) -> None:
        while self._nonces:
            nonce, expiry = next(iter(self._nonces.items()))
            if expiry > now:
                break
            del self._nonces[nonce]


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
