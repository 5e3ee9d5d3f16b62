"""Identity: short-lived EdDSA (Ed25519) JWTs carrying a subject, roles and camera grants.

One issuer (the api service) signs with its private key; every service verifies with the issuer's public keys,
selected by the token's `kid`, so a signing key can be rotated by publishing the new public key first. A grant
says which action a subject may take on which cameras, optionally for footage within a time window (a partner
agency granted playback of two cameras for one night):

    {"sub": "pc-1234", "roles": ["partner"], "org": "police",
     "grants": [{"actions": ["live", "playback"], "cameras": ["cam-12", "cam-13"],
                 "footage_from": 1700000000, "footage_until": 1700040000}]}

A camera entry `*` means every camera; `site:<id>` every camera of a site (resolved by the caller).
"""

from __future__ import annotations

import time
import typing
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Literal

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from argus_core.errors import ArgusError

Action = Literal["live", "playback", "export", "ptz", "configure", "delete", "audit", "hold"]
ACTIONS: tuple[Action, ...] = typing.get_args(Action)
ALGORITHM = "EdDSA"

# Roles in PTZ priority order, highest first; also the role names the console knows.
ROLE_PRIORITY: dict[str, int] = {
    "emergency": 100,
    "supervisor": 80,
    "operator": 60,
    "partner": 40,
    "tour": 20,
    "auditor": 0,
    "admin": 0,
    "service": 0,
}


class TokenConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_TOKENS_*`: who issues tokens and the public keys to check them with."""

    issuer: str = "argus"
    audience: str = "argus"
    public_keys: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]  # PEM files; key id = file stem
    private_key: str = ""  # file of the PEM private key (the api only)
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=86400)] = 900.0
    leeway_s: Annotated[float, msgspec.Meta(ge=0, le=300)] = 30.0


class Grant(msgspec.Struct, frozen=True, kw_only=True):
    actions: tuple[Action, ...]
    cameras: tuple[str, ...]
    footage_from: int | None = None  # epoch seconds
    footage_until: int | None = None

    def covers(self, action: Action, camera: str, footage: tuple[float, float] | None) -> bool:
        if action not in self.actions:
            return False
        if "*" not in self.cameras and camera not in self.cameras:
            return False
        if footage is not None:
            start, end = footage
            if self.footage_from is not None and start < self.footage_from:
                return False
            if self.footage_until is not None and end > self.footage_until:
                return False
        return True


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """A verified caller."""

    subject: str
    roles: tuple[str, ...]
    grants: tuple[Grant, ...]
    org: str = ""
    token_id: str = ""
    expires_at: float = 0.0

    def allows(self, action: Action, camera: str, footage: tuple[float, float] | None = None) -> bool:
        return any(g.covers(action, camera, footage) for g in self.grants)

    def has_role(self, *roles: str) -> bool:
        return any(r in self.roles for r in roles)

    def cameras_for(self, action: Action) -> set[str]:
        """Cameras named by grants of `action` (`*` when every camera is granted)."""
        out: set[str] = set()
        for g in self.grants:
            if action in g.actions:
                out.update(g.cameras)
        return out

    @property
    def priority(self) -> int:
        return max((ROLE_PRIORITY.get(r, 0) for r in self.roles), default=0)


class _Claims(msgspec.Struct, kw_only=True):
    sub: Annotated[str, msgspec.Meta(min_length=1)]
    exp: float
    roles: tuple[str, ...] = ()
    grants: tuple[Grant, ...] = ()
    org: str = ""
    jti: str = ""


class TokenError(ArgusError):
    """A token is missing, malformed, badly signed, expired or not for us; `reason` says which (for the 401)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def load_public_keys(paths: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    keys: dict[str, Ed25519PublicKey] = {}
    for name in paths:
        path = Path(name)
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, Ed25519PublicKey):
            raise TokenError(f"{path} is not an Ed25519 public key")
        keys[path.stem] = key
    return keys


class TokenIssuer:
    def __init__(self, private_pem: bytes, key_id: str, *, issuer: str, audience: str, ttl_s: float) -> None:
        key = serialization.load_pem_private_key(private_pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise TokenError("the signing key is not an Ed25519 private key")
        self._key = key
        self._kid = key_id
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_s

    @classmethod
    def from_file(cls, path: str, *, issuer: str, audience: str, ttl_s: float) -> TokenIssuer:
        p = Path(path)
        return cls(p.read_bytes(), p.stem, issuer=issuer, audience=audience, ttl_s=ttl_s)

    def issue(
        self,
        subject: str,
        roles: Sequence[str],
        grants: Sequence[Grant],
        *,
        org: str = "",
        ttl_s: float | None = None,
        now: float | None = None,
    ) -> str:
        issued = time.time() if now is None else now
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "iat": int(issued),
            "nbf": int(issued),
            "exp": int(issued + (self._ttl if ttl_s is None else ttl_s)),
            "jti": uuid.uuid4().hex,
            "roles": list(roles),
            "grants": msgspec.to_builtins(list(grants)),
            "org": org,
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self._kid})


class TokenVerifier:
    def __init__(self, keys: dict[str, Ed25519PublicKey], *, issuer: str, audience: str, leeway_s: float) -> None:
        if not keys:
            raise TokenError("no public keys to verify tokens with")
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s

    @classmethod
    def from_config(cls, config: TokenConfig) -> TokenVerifier:
        return cls(
            load_public_keys(config.public_keys),
            issuer=config.issuer,
            audience=config.audience,
            leeway_s=config.leeway_s,
        )

    def verify(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise TokenError("malformed token") from exc
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm {header.get('alg')!r} is not accepted")
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise TokenError("token signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("token signature is invalid") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("token is from another issuer") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("token is not valid yet") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from exc
        try:
            parsed = msgspec.convert(claims, _Claims)
        except msgspec.ValidationError as exc:
            raise TokenError(f"token claims are malformed: {exc}") from exc
        return Identity(
            subject=parsed.sub,
            roles=parsed.roles,
            grants=parsed.grants,
            org=parsed.org,
            token_id=parsed.jti,
            expires_at=parsed.exp,
        )
