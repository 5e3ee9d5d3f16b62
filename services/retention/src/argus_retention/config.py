"""Configuration of the retention service, read from ARGUS_* environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from argus_core.db import DatabaseConfig
from argus_core.runtime import RuntimeConfig
from argus_core.storage import S3Config

LegalHoldMode = Literal["auto", "on", "off"]


class RetentionSettings(msgspec.Struct, frozen=True, kw_only=True):
    """`ARGUS_RETENTION_*`.

    Policies themselves (default 31 days, per camera, group and site, and their bounds) live in Postgres and are
    changed through the api; these settings say how the service works.

    `sweep_interval_s`: how often expired footage is deleted (the first sweep runs `first_sweep_after_s` after
    start). `batch`: segments per multi-object delete (S3 takes up to 1,000). `parallel`: batches of a detached day
    deleted at once. `drop_days`: detach and drop a day's partition when every segment in it is expired and none is
    held (instead of deleting its rows one batch at a time).
    `legal_holds`: put S3 legal holds on held segments: `auto` when the recordings bucket has object lock, `on`
    (refuse to start without it), `off`. `legal_hold_interval_s`: how often holds are brought in line with the
    evidence holds (new holds, releases, footage recorded into a hold's range since).
    `notice_interval_s`: how often overdue hold reviews are looked for.
    `reconcile_interval_s` (0: only `python -m argus_retention reconcile`): how often objects and rows are compared;
    `reconcile_repair` deletes objects without rows and rows without objects (otherwise they are only reported);
    `reconcile_grace_s`: objects younger than this are left alone (a recorder may still be indexing them).
    """

    sweep_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 3600.0
    first_sweep_after_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1000
    parallel: Annotated[int, msgspec.Meta(ge=1, le=16)] = 4
    drop_days: bool = True
    legal_holds: LegalHoldMode = "auto"
    legal_hold_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    notice_interval_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    reconcile_interval_s: Annotated[float, msgspec.Meta(ge=0)] = 86400.0
    reconcile_repair: bool = True
    reconcile_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 86400.0


class Config(RuntimeConfig, frozen=True, kw_only=True):
    db: DatabaseConfig
    s3: S3Config
    retention: RetentionSettings = msgspec.field(default_factory=RetentionSettings)
