"""The recorder's Prometheus metrics, registered in the runtime's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.segments = Counter(
            "argus_recorder_segments_total",
            "Segments by where they went: indexed (S3 and Postgres), spooled, dropped (spool full), unmuxable",
            ["outcome"],
            registry=registry,
        )
        self.segment_bytes = Counter("argus_recorder_segment_bytes_total", "Bytes of media segments", registry=registry)
        self.frames = Counter("argus_recorder_frames_total", "Frames in stored segments", registry=registry)
        self.packets = Counter(
            "argus_recorder_packets_total",
            "Packets taken from the bus, by what became of them",
            ["outcome"],
            registry=registry,
        )
        self.gaps = Counter(
            "argus_recorder_gaps_total", "Recording gaps indexed, by cause", ["cause"], registry=registry
        )
        self.repaired = Counter(
            "argus_recorder_repaired_timestamps_total", "Frames whose timestamps were repaired", registry=registry
        )
        self.mux_seconds = Histogram("argus_recorder_mux_seconds", "Time to mux one segment", registry=registry)
        self.upload_seconds = Histogram(
            "argus_recorder_upload_seconds", "Time to upload one segment to S3", buckets=_LATENCY, registry=registry
        )
        self.lag_seconds = Histogram(
            "argus_recorder_capture_to_indexed_seconds",
            "From the capture of a segment's last frame to its index row",
            buckets=_LATENCY,
            registry=registry,
        )
        self.spool_bytes = Gauge("argus_recorder_spool_bytes", "Bytes held in the local spool", registry=registry)
        self.spool_capacity = Gauge(
            "argus_recorder_spool_capacity_bytes", "Size limit of the local spool", registry=registry
        )
        self.spool_items = Gauge("argus_recorder_spool_items", "Items in the local spool", ["kind"], registry=registry)
        self.spool_dropped = Counter(
            "argus_recorder_spool_dropped_segments_total",
            "Spooled segments dropped to make room for newer ones (the spool was full)",
            registry=registry,
        )
        self.cameras_held = Gauge("argus_recorder_cameras_held", "Cameras this pod records", registry=registry)
        self.dependency_up = Gauge(
            "argus_recorder_dependency_up", "1 while the recorder can reach it", ["dependency"], registry=registry
        )
