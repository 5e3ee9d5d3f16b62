"""Prometheus metrics of the retention service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.sweeps = Counter("argus_retention_sweeps", "sweeps run, by how they ended", ["state"], registry=r)
        self.segments_deleted = Counter(
            "argus_retention_segments_deleted", "expired segments deleted (object and row)", registry=r
        )
        self.bytes_deleted = Counter("argus_retention_bytes_deleted", "bytes of expired segments deleted", registry=r)
        self.inits_deleted = Counter(
            "argus_retention_inits_deleted", "init segments deleted after their last segment", registry=r
        )
        self.partitions_dropped = Counter(
            "argus_retention_partitions_dropped", "wholly expired day partitions detached and dropped", registry=r
        )
        self.refused = Counter(
            "argus_retention_deletes_refused", "deletes the object store refused (legal hold, lock)", registry=r
        )
        self.batch_seconds = Histogram(
            "argus_retention_batch_seconds",
            "time to delete one batch (select, multi-object delete, row delete, commit)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.last_sweep = Gauge(
            "argus_retention_last_sweep_timestamp_seconds", "when the newest sweep finished", registry=r
        )
        self.last_sweep_seconds = Gauge("argus_retention_last_sweep_seconds", "how long it took", registry=r)
        self.legal_holds = Gauge(
            "argus_retention_legal_holds", "objects under an S3 legal hold set by Argus", registry=r
        )
        self.legal_hold_errors = Counter(
            "argus_retention_legal_hold_errors", "legal holds that could not be set or released", registry=r
        )
        self.held_segments = Gauge("argus_retention_held_segments", "segments under an evidence hold", registry=r)
        self.held_bytes = Gauge("argus_retention_held_bytes", "bytes under an evidence hold", registry=r)
        self.holds_active = Gauge("argus_retention_holds_active", "evidence holds not released", registry=r)
        self.holds_review_overdue = Gauge(
            "argus_retention_holds_review_overdue", "active evidence holds whose review date has passed", registry=r
        )
        self.review_notices = Counter(
            "argus_retention_review_notices", "notices raised for hold reviews falling due", registry=r
        )
        self.orphans = Gauge(
            "argus_retention_reconcile_orphans",
            "what the newest reconcile found: objects without rows, rows without objects, missing init segments",
            ["kind"],
            registry=r,
        )
        self.repaired = Counter("argus_retention_reconcile_repaired", "orphans repaired", ["kind"], registry=r)
