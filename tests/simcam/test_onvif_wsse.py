"""WS-UsernameToken verification, checked against zeep's own token builder (what ONVIF clients send)."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from typing import Any, cast

import pytest
from zeep.wsse.username import UsernameToken as ZeepToken

from argus_simcam.wsse import (
    PASSWORD_TEXT,
    WSSE_NS,
    WSU_NS,
    AuthError,
    AuthFailure,
    UsernameToken,
    UsernameTokenVerifier,
    parse_security_header,
    password_digest,
)

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def zeep_header(user: str, password: str, *, created: dt.datetime, nonce: str, digest: bool = True) -> ET.Element:
    """A SOAP Header holding the UsernameToken zeep builds (as onvif-zeep-async does, Zulu timestamps)."""
    token: Any = cast(Any, ZeepToken)(
        user, password, use_digest=digest, nonce=nonce, created=created, zulu_timestamp=True
    )
    elements = token._create_password_digest() if digest else token._create_password_text()
    parts = [f"<wsse:Username>{user}</wsse:Username>"]
    for element in elements:
        name = str(element.tag)
        local = name.rpartition("}")[2]
        prefix = "wsu" if name.startswith(f"{{{WSU_NS}}}") else "wsse"
        attributes = "".join(f' {k}="{v}"' for k, v in element.attrib.items())
        parts.append(f"<{prefix}:{local}{attributes}>{element.text}</{prefix}:{local}>")
    xml = (
        f'<Header xmlns:wsse="{WSSE_NS}" xmlns:wsu="{WSU_NS}"><wsse:Security><wsse:UsernameToken>'
        + "".join(parts)
        + "</wsse:UsernameToken></wsse:Security></Header>"
    )
    return ET.fromstring(xml)


def token(
    created: dt.datetime = T0, nonce: str = "nonce-1", user: str = "admin", password: str = "pw"
) -> UsernameToken:
    parsed = parse_security_header(zeep_header(user, password, created=created, nonce=nonce))
    assert parsed is not None
    return parsed


def verify(verifier: UsernameTokenVerifier, tok: UsernameToken | None, now: dt.datetime = T0) -> None:
    verifier.verify(tok, username="admin", password="pw", now=now.timestamp())


def failure(verifier: UsernameTokenVerifier, tok: UsernameToken | None, now: dt.datetime = T0) -> AuthFailure:
    with pytest.raises(AuthError) as info:
        verify(verifier, tok, now)
    return info.value.failure


def test_digest_matches_zeep() -> None:
    tok = token()
    assert tok.nonce == b"nonce-1"
    assert tok.created == "2024-05-01T12:00:00Z"
    assert tok.password == password_digest(b"nonce-1", "2024-05-01T12:00:00Z", "pw")
    verify(UsernameTokenVerifier(), tok)


def test_replayed_nonce_is_refused() -> None:
    verifier = UsernameTokenVerifier()
    verify(verifier, token(nonce="a"))
    assert failure(verifier, token(nonce="a"), T0 + dt.timedelta(seconds=1)) is AuthFailure.REPLAYED
    verify(verifier, token(nonce="b"), T0 + dt.timedelta(seconds=1))


def test_created_must_be_near_the_device_clock() -> None:
    verifier = UsernameTokenVerifier(max_skew=60)
    assert failure(verifier, token(created=T0 - dt.timedelta(seconds=61))) is AuthFailure.STALE
    assert failure(verifier, token(created=T0 + dt.timedelta(seconds=61), nonce="f")) is AuthFailure.STALE
    verify(verifier, token(created=T0 - dt.timedelta(seconds=59), nonce="g"))
    verify(verifier, token(created=T0 + dt.timedelta(seconds=59), nonce="h"))


def test_wrong_credentials_and_missing_tokens() -> None:
    verifier = UsernameTokenVerifier()
    assert failure(verifier, token(password="nope")) is AuthFailure.BAD_CREDENTIALS
    assert failure(verifier, token(user="root", nonce="x")) is AuthFailure.BAD_CREDENTIALS
    assert failure(verifier, None) is AuthFailure.MISSING
    assert parse_security_header(None) is None
    assert parse_security_header(ET.fromstring("<Header/>")) is None
    # A refused attempt does not burn the nonce for the genuine client.
    verify(verifier, token())


def test_password_text_only_when_allowed() -> None:
    header = zeep_header("admin", "pw", created=T0, nonce="n", digest=False)
    tok = parse_security_header(header)
    assert tok is not None
    assert tok.password_type == PASSWORD_TEXT
    assert failure(UsernameTokenVerifier(), tok) is AuthFailure.BAD_CREDENTIALS
    verify(UsernameTokenVerifier(allow_password_text=True), tok)


def test_malformed_tokens() -> None:
    verifier = UsernameTokenVerifier()
    good = token()
    with pytest.raises(AuthError) as info:
        parse_security_header(
            ET.fromstring(
                f'<H xmlns:wsse="{WSSE_NS}"><wsse:Security><wsse:UsernameToken><wsse:Username>a</wsse:Username>'
                f"<wsse:Password>p</wsse:Password><wsse:Nonce>!!not base64!!</wsse:Nonce>"
                "</wsse:UsernameToken></wsse:Security></H>"
            )
        )
    assert info.value.failure is AuthFailure.MALFORMED
    no_created = UsernameToken(good.username, good.password, good.password_type, good.nonce, None)
    assert failure(verifier, no_created) is AuthFailure.MALFORMED
    bad_created = UsernameToken(good.username, good.password, good.password_type, good.nonce, "yesterday")
    assert failure(verifier, bad_created) is AuthFailure.MALFORMED


def test_nonce_memory_is_bounded_and_expires() -> None:
    verifier = UsernameTokenVerifier(max_skew=10, max_nonces=3)
    for n in range(10):
        verify(verifier, token(nonce=f"n{n}"))
    assert len(verifier._nonces) == 3
    later = T0 + dt.timedelta(seconds=25)
    verify(verifier, token(created=later, nonce="late"), later)
    assert list(verifier._nonces) == [b"late"]
