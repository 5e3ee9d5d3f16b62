"""Configuration of the api service, read from ARGUS_* environment variables."""

from __future__ import annotations

import msgspec

from argus_api.playback import PlaybackConfig
from argus_core.audit import AuditReaderConfig
from argus_core.db import DatabaseConfig
from argus_core.identity import TokenConfig
from argus_core.runtime import RuntimeConfig
from argus_core.storage import S3Config


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    s3: S3Config
    tokens: TokenConfig
    audit: AuditReaderConfig = msgspec.field(default_factory=AuditReaderConfig)
    playback: PlaybackConfig = msgspec.field(default_factory=PlaybackConfig)
