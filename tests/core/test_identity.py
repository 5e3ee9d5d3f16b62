from __future__ import annotations

import time
from pathlib import Path

import pytest

from argus_core.identity import (
    ROLE_PRIORITY,
    Grant,
    TokenConfig,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    generate_keypair,
    load_public_keys,
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private, public = generate_keypair()
    (tmp_path / "k1.key").write_bytes(private)
    (tmp_path / "k1.pem").write_bytes(public)
    return tmp_path / "k1.key", tmp_path / "k1.pem"


def issuer_for(private: Path, **kwargs: str) -> TokenIssuer:
    return TokenIssuer.from_file(
        str(private), issuer=kwargs.get("issuer", "argus"), audience=kwargs.get("audience", "argus"), ttl_s=60
    )


def verifier_for(public: Path) -> TokenVerifier:
    return TokenVerifier.from_config(TokenConfig(public_keys=(str(public),)))


def test_round_trip_carries_roles_and_grants(keys: tuple[Path, Path]) -> None:
    private, public = keys
    grant = Grant(actions=("live", "playback"), cameras=("cam-1",), footage_from=1000, footage_until=2000)
    token = issuer_for(private).issue("pc-42", ["partner"], [grant], org="police")
    identity = verifier_for(public).verify(token)
    assert identity.subject == "pc-42"
    assert identity.roles == ("partner",)
    assert identity.org == "police"
    assert identity.allows("live", "cam-1")
    assert not identity.allows("live", "cam-2")
    assert not identity.allows("ptz", "cam-1")
    assert identity.allows("playback", "cam-1", (1100, 1900))
    assert not identity.allows("playback", "cam-1", (900, 1900))
    assert identity.priority == ROLE_PRIORITY["partner"]


def test_expired_token_is_refused_with_reason(keys: tuple[Path, Path]) -> None:
    private, public = keys
    token = issuer_for(private).issue("a", [], [], ttl_s=1, now=time.time() - 3600)
    with pytest.raises(TokenError, match="expired"):
        verifier_for(public).verify(token)


def test_token_of_another_key_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    _, public = keys
    other_private, _ = generate_keypair()
    (tmp_path / "k1-other.key").write_bytes(other_private)
    forged = TokenIssuer(other_private, "k1", issuer="argus", audience="argus", ttl_s=60).issue("a", ["admin"], [])
    with pytest.raises(TokenError, match="signature"):
        verifier_for(public).verify(forged)


def test_wrong_audience_and_unknown_key_and_garbage(keys: tuple[Path, Path]) -> None:
    private, public = keys
    verifier = verifier_for(public)
    with pytest.raises(TokenError, match="audience"):
        verifier.verify(issuer_for(private, audience="other").issue("a", [], []))
    with pytest.raises(TokenError, match="malformed"):
        verifier.verify("not-a-jwt")
    other_private, _ = generate_keypair()
    unknown_kid = TokenIssuer(other_private, "k9", issuer="argus", audience="argus", ttl_s=60).issue("a", [], [])
    with pytest.raises(TokenError, match="unknown key"):
        verifier.verify(unknown_kid)


def test_rotation_accepts_old_and_new_keys(tmp_path: Path) -> None:
    old_private, old_public = generate_keypair()
    new_private, new_public = generate_keypair()
    (tmp_path / "2026-01.pem").write_bytes(old_public)
    (tmp_path / "2026-06.pem").write_bytes(new_public)
    keys = load_public_keys([str(tmp_path / "2026-01.pem"), str(tmp_path / "2026-06.pem")])
    verifier = TokenVerifier(keys, issuer="argus", audience="argus", leeway_s=0)
    for private, kid in ((old_private, "2026-01"), (new_private, "2026-06")):
        token = TokenIssuer(private, kid, issuer="argus", audience="argus", ttl_s=60).issue("a", [], [])
        assert verifier.verify(token).subject == "a"
