"""Prometheus metrics of an ingest pod (served on /metrics by the runtime)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.cameras_held = Gauge("argus_ingest_cameras_held", "cameras whose lease this pod holds", registry=r)
        self.cameras_online = Gauge(
            "argus_ingest_cameras_online", "held cameras whose main stream is online", registry=r
        )
        self.cameras_unserved = Gauge(
            "argus_ingest_cameras_unserved",
            "enabled cameras of the register that no live ingest pod serves (their site is in no pod's "
            "ARGUS_INGEST_SITES), as this pod sees the lease bucket",
            registry=r,
        )
        self.packets = Counter(
            "argus_ingest_packets_published", "access units stored in JetStream", ["camera", "stream"], registry=r
        )
        self.bytes = Counter(
            "argus_ingest_bytes_published", "payload bytes of the access units stored", ["camera", "stream"], registry=r
        )
        self.publish_latency = Histogram(
            "argus_ingest_publish_latency_seconds",
            "time from handing a batch of packets to NATS until JetStream acknowledged it",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.publish_failures = Counter(
            "argus_ingest_publish_failures", "publishes that failed or were not acknowledged in time", registry=r
        )
        self.reconnects = Counter(
            "argus_ingest_reconnects", "connections to a camera that ended and were retried", ["camera"], registry=r
        )
        self.skipped = Counter(
            "argus_ingest_packets_skipped",
            "access units not published: no_pts, before_keyframe (session start or after a loss), "
            "lost (the bus fell behind)",
            ["camera", "reason"],
            registry=r,
        )
        self.repaired = Counter(
            "argus_ingest_timestamps_repaired",
            "leading access units whose missing timestamps were inferred",
            ["camera"],
            registry=r,
        )
        self.lease_changes = Counter(
            "argus_ingest_lease_changes", "leases taken, released or lost by this pod", ["change"], registry=r
        )
