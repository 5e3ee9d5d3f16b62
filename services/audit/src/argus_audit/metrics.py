"""Prometheus metrics of the audit service."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.appended = Counter("argus_audit_appended", "entries appended to the chain", registry=r)
        self.duplicates = Counter("argus_audit_duplicates", "deliveries of events already stored", registry=r)
        self.conflicts = Counter(
            "argus_audit_conflicting_duplicates", "events whose id was stored with other content", registry=r
        )
        self.malformed = Counter("argus_audit_malformed", "messages that were not audit events", registry=r)
        self.append_errors = Counter("argus_audit_append_errors", "batches that failed to commit", registry=r)
        self.head_seq = Gauge("argus_audit_head_seq", "seq of the newest entry", registry=r)
        self.append_seconds = Histogram(
            "argus_audit_append_seconds",
            "time to append one batch (lock, de-duplicate, hash, copy, commit)",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.checkpoint_seq = Gauge("argus_audit_checkpoint_seq", "seq of the newest signed checkpoint", registry=r)
        self.checkpoint_time = Gauge(
            "argus_audit_checkpoint_timestamp_seconds", "when the newest checkpoint was written", registry=r
        )
        self.checkpoint_errors = Counter("argus_audit_checkpoint_errors", "checkpoints that failed", registry=r)
        self.purged = Counter("argus_audit_purged", "entries removed by the retention purge", registry=r)
