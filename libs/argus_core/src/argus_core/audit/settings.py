"""Settings that readers of the audit log share with the audit service."""

from __future__ import annotations

import msgspec


class AuditReaderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_AUDIT_PUBLIC_KEYS`: PEM files of the Ed25519 public keys that audit checkpoints are verified with
    (a key's id is its file name without the extension; keep old keys listed after a rotation). Empty: the log's
    chain is verified but not compared with the signed checkpoints."""

    public_keys: tuple[str, ...] = ()
