"""Audit: what every service uses to record who did or saw what, and what reads and checks the log.

- `AuditEmitter` (every service): build an `AuditEvent` (UUID id, UTC time, actor from an `Identity`) and persist
  it on the AUDIT stream, riding out a short NATS outage.
- `chain`: the canonical form and hash of a log entry, and the walk that names the first entry changed, removed or
  inserted.
- `checkpoints`: Ed25519-signed checkpoints of the chain head in the object-locked audit bucket.
- `verify_log`: the chain walk plus the comparison with the checkpoints (the API and `python -m argus_audit verify`).
- `entries`: search and the CSV / JSON-lines exports.

The audit service (`argus_audit`) is the only writer of the log.
"""

from argus_core.audit.chain import GENESIS, ChainWalker, Finding, canonical_body, entry_hash
from argus_core.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    CheckpointKeys,
    CheckpointSigner,
    CheckpointStore,
    generate_signing_key,
)
from argus_core.audit.emitter import AuditEmitter, AuditUnavailable, actor_of, new_event
from argus_core.audit.entries import AuditEntry, AuditQuery, csv_text, fetch_entries, iter_entries, jsonl
from argus_core.audit.settings import AuditReaderConfig
from argus_core.audit.verify import CheckpointSource, VerifyReport, verify_log

__all__ = [
    "GENESIS",
    "AuditEmitter",
    "AuditEntry",
    "AuditQuery",
    "AuditReaderConfig",
    "AuditUnavailable",
    "ChainWalker",
    "Checkpoint",
    "CheckpointError",
    "CheckpointKeys",
    "CheckpointSigner",
    "CheckpointSource",
    "CheckpointStore",
    "Finding",
    "VerifyReport",
    "actor_of",
    "canonical_body",
    "csv_text",
    "entry_hash",
    "fetch_entries",
    "generate_signing_key",
    "iter_entries",
    "jsonl",
    "new_event",
    "verify_log",
]
