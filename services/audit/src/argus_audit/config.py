"""Configuration of the audit service, read from ARGUS_* environment variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

from argus_core.audit import AuditReaderConfig
from argus_core.db import DatabaseConfig
from argus_core.runtime import RuntimeConfig
from argus_core.storage import S3Config


class AuditSettings(AuditReaderConfig, frozen=True, kw_only=True):
    """`ARGUS_AUDIT_*`.

    `signing_key`: PEM file of the Ed25519 key that signs checkpoints (its id is the file name without extension).
    Without it no checkpoint is written and no purge runs (a warning says so at start).
    `retention_years`: how long entries are kept; older ones are purged, behind a signed anchor, by the daily purge.
    """

    signing_key: str = ""
    retention_years: Annotated[float, msgspec.Meta(ge=1, le=100)] = 6.0
    checkpoint_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    purge_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 86400.0  # 0: only `python -m argus_audit purge`
    batch: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000
    fetch_wait_s: Annotated[float, msgspec.Meta(gt=0, le=30)] = 1.0


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    s3: S3Config
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
