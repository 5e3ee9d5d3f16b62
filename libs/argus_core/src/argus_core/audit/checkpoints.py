"""Signed checkpoints of the audit chain, kept in the object-locked audit bucket.

A checkpoint says "entry `seq` of the chain has hash `hash`", signed with the audit service's Ed25519 key. Because
every hash covers all the entries before it, one checkpoint that still matches vouches for the whole chain up to
it, and one that no longer matches proves that something up to it was rewritten, even when the rewriter recomputed
every hash. The object at `checkpoints/<seq, 20 digits>.json` is JSON:

    {"payload": "<canonical JSON of Checkpoint>", "signature": "<base64 Ed25519 signature>", "key_id": "<key>"}

The signature is over `b"argus-audit-checkpoint-v1\\n" + utf8(payload)`; the verifier checks it over the payload as
stored and only then decodes it, so nothing depends on re-encoding. A key's id is its PEM file's name without the
extension (as for token keys); old public keys stay listed in `ARGUS_AUDIT_PUBLIC_KEYS` after a rotation.

Checkpoints get an S3 legal hold where the bucket has object lock, so the store refuses to delete them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from argus_core.errors import ArgusError
from argus_core.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)

PREFIX = "checkpoints/"
SIGNATURE_DOMAIN = b"argus-audit-checkpoint-v1\n"
_KEY_RE = re.compile(r"^checkpoints/(\d{20})\.json$")
_ENCODER = msgspec.json.Encoder(order="sorted")

CheckpointKind = Literal["periodic", "anchor", "final", "manual"]


class CheckpointError(ArgusError):
    """A checkpoint object is malformed, signed with an unknown key, or its signature does not verify."""


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """What a checkpoint vouches for. `kind` "anchor" marks the new start of the chain after a purge."""

    seq: int
    hash: str  # hex of the entry's 32-byte hash
    recorded_ns: int  # the entry's recorded_ns
    created_ns: int
    kind: CheckpointKind
    key_id: str
    entries_purged: int = 0  # for an anchor: how many entries the purge removed
    version: int = 1


class SignedCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    payload: str
    signature: str
    key_id: str


def object_key(seq: int) -> str:
    return f"{PREFIX}{seq:020d}.json"


def seq_of(key: str) -> int | None:
    match = _KEY_RE.match(key)
    return int(match.group(1)) if match else None


def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PKCS8 PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


class CheckpointSigner:
    """Signs checkpoints with the audit service's private key (`ARGUS_AUDIT_SIGNING_KEY`)."""

    def __init__(self, private_pem: bytes, key_id: str) -> None:
        try:
            key = serialization.load_pem_private_key(private_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"the audit signing key {key_id!r} is not a readable PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise CheckpointError(f"the audit signing key {key_id!r} is not an Ed25519 key")
        self._key = key
        self.key_id = key_id

    @classmethod
    def from_file(cls, path: str) -> CheckpointSigner:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read the audit signing key {p}: {exc.strerror}") from exc
        return cls(data, p.stem)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, checkpoint: Checkpoint) -> bytes:
        """The object body of a signed `checkpoint` (its key_id must be this signer's)."""
        if checkpoint.key_id != self.key_id:
            raise CheckpointError(f"checkpoint names key {checkpoint.key_id!r}, signer holds {self.key_id!r}")
        payload = _ENCODER.encode(checkpoint)
        signature = self._key.sign(SIGNATURE_DOMAIN + payload)
        signed = SignedCheckpoint(
            payload=payload.decode(), signature=base64.b64encode(signature).decode(), key_id=self.key_id
        )
        return _ENCODER.encode(signed)


class CheckpointKeys:
    """The public keys checkpoints are verified with, by key id."""

    def __init__(self, keys: dict[str, Ed25519PublicKey]) -> None:
        self._keys = dict(keys)

    @classmethod
    def from_files(cls, paths: Iterable[str], signer: CheckpointSigner | None = None) -> CheckpointKeys:
        keys: dict[str, Ed25519PublicKey] = {}
        for name in paths:
            path = Path(name)
            try:
                key = serialization.load_pem_public_key(path.read_bytes())
            except OSError as exc:
                raise CheckpointError(f"cannot read audit public key {path}: {exc.strerror}") from exc
            except (ValueError, TypeError) as exc:
                raise CheckpointError(f"{path} is not a readable PEM public key") from exc
            if not isinstance(key, Ed25519PublicKey):
                raise CheckpointError(f"{path} is not an Ed25519 public key")
            keys[path.stem] = key
        if signer is not None:
            keys[signer.key_id] = signer.public_key
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def open(self, data: bytes) -> Checkpoint:
        """The checkpoint in an object body, once its signature verified; CheckpointError otherwise."""
        try:
            signed = msgspec.json.decode(data, type=SignedCheckpoint)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"not a signed checkpoint: {exc}") from exc
        key = self._keys.get(signed.key_id)
        if key is None:
            raise CheckpointError(f"signed with unknown key {signed.key_id!r}")
        payload = signed.payload.encode()
        try:
            key.verify(base64.b64decode(signed.signature, validate=True), SIGNATURE_DOMAIN + payload)
        except (InvalidSignature, binascii.Error) as exc:
            raise CheckpointError("the signature does not verify") from exc
        try:
            checkpoint = msgspec.json.decode(payload, type=Checkpoint)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise CheckpointError(f"signed payload is malformed: {exc}") from exc
        if checkpoint.key_id != signed.key_id:
            raise CheckpointError("the payload names another key than the one that signed it")
        return checkpoint


class CheckpointStore:
    """Checkpoint objects in the audit bucket."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self._hold_supported: bool | None = None

    async def write(self, checkpoint: Checkpoint, signer: CheckpointSigner) -> str:
        """Upload a signed checkpoint and put it under legal hold where the bucket has object lock."""
        key = object_key(checkpoint.seq)
        await self.store.put(
            self.bucket,
            key,
            signer.sign(checkpoint),
            content_type="application/json",
            metadata={"argus-audit-seq": str(checkpoint.seq), "argus-audit-kind": checkpoint.kind},
        )
        if self._hold_supported is not False:
            try:
                await self.store.set_legal_hold(self.bucket, key, True)
            except StorageError as exc:
                if "ObjectLock" not in str(exc) and "InvalidRequest" not in str(exc):
                    raise
                if self._hold_supported is None:
                    log.warning(
                        "audit bucket %s has no object lock: checkpoints are stored without a legal hold (%s)",
                        self.bucket,
                        exc,
                        extra={"bucket": self.bucket},
                    )
                self._hold_supported = False
            else:
                self._hold_supported = True
        return key

    async def list(self) -> list[tuple[int, str]]:
        """(seq, key) of every checkpoint object, by seq."""
        keys = await self.store.list_keys(self.bucket, PREFIX)
        found = [(seq, key) for key in keys if (seq := seq_of(key)) is not None]
        found.sort()
        return found

    async def read(self, key: str) -> bytes:
        data, _ = await self.store.get(self.bucket, key)
        return data
