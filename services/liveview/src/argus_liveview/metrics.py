"""Prometheus metrics of a liveview pod (served on /metrics by the runtime)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.viewers = Gauge("argus_liveview_viewers", "viewer sessions (WebRTC peers) open in this pod", registry=r)
        self.feeds = Gauge(
            "argus_liveview_cameras_watched", "camera streams subscribed on the bus (one subscription each)", registry=r
        )
        self.sessions = Counter(
            "argus_liveview_sessions",
            "WHEP session requests by outcome: started, denied (no grant), refused (bad offer, codec, limits, "
            "audit unavailable), failed",
            ["outcome"],
            registry=r,
        )
        self.ended = Counter(
            "argus_liveview_sessions_ended",
            "sessions ended, by reason: deleted, token_expired, viewer_timeout, connect_timeout, peer_closed, "
            "peer_failed, codec, shutdown, error",
            ["reason"],
            registry=r,
        )
        self.first_frame = Histogram(
            "argus_liveview_first_frame_seconds",
            "time from the WHEP POST to the first frame handed to the viewer's RTP sender (ICE and DTLS included)",
            registry=r,
            buckets=(0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
        )
        self.session_seconds = Histogram(
            "argus_liveview_session_seconds",
            "how long sessions lasted",
            registry=r,
            buckets=(1, 10, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600),
        )
        self.dropped = Counter(
            "argus_liveview_dropped_frames",
            "frames not sent to a viewer: slow_viewer (its queue overflowed and it skipped to the next keyframe), "
            "waiting_keyframe (after a skip or a hole)",
            ["reason"],
            registry=r,
        )
        self.feed_lost = Counter(
            "argus_liveview_feed_lost_packets",
            "packets missing from the bus feed (seq holes: ingest or NATS dropped them); viewers wait for a keyframe",
            ["stream"],
            registry=r,
        )
        self.relay_delay = Histogram(
            "argus_liveview_capture_to_relay_seconds",
            "time from a frame's capture (the camera's clock, as ingest stamped it) to its arrival in liveview",
            registry=r,
            buckets=(0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5),
        )
        self.frames_sent = Counter(
            "argus_liveview_frames_sent", "access units handed to viewers' RTP senders", registry=r
        )
        self.bytes_sent = Counter(
            "argus_liveview_bytes_sent", "bytes of access units handed to viewers' RTP senders", registry=r
        )
