"""Packets of one session into `MediaBatch`es for recording: fewer, larger messages on the durable bus.

Recording needs every packet stored, but not each one on its own: at 25 access units per second per camera, one
JetStream message each costs nats-server, ingest and the recorder a message's work 25 times a second per camera
(`docs/benchmarks.md`). A batch ends

- right after a keyframe, so that a recorder sees the keyframe that ends a GOP (where it cuts segments) as soon
  as ingest read it: recording latency is what it was with one message per packet;
- when its first packet is `max_s` older (capture time) than the newest, so that a batch never holds more than
  that of a camera with long GOPs: what an ingest pod that dies takes with it;
- at `max_bytes`, well under the server's message limit;
- when the session ends (`take()`).
"""

from __future__ import annotations

from argus_core.bus.messages import MediaBatch, MediaPacket, StreamName

NS = 1_000_000_000


class Batcher:
    """One session's batch being filled. `add()` returns a batch when one is complete."""

    def __init__(self, camera: str, stream: StreamName, session: str, *, max_s: float, max_bytes: int) -> None:
        self.camera = camera
        self.stream: StreamName = stream
        self.session = session
        self._max_ns = int(max_s * NS)
        self._max_bytes = max_bytes
        self._packets: list[MediaPacket] = []
        self._bytes = 0
        self._first_ns = 0

    def __len__(self) -> int:
        return len(self._packets)

    def add(self, packet: MediaPacket) -> MediaBatch | None:
        packets = self._packets
        if not packets:
            self._first_ns = packet.capture_ns
        packets.append(packet)
        self._bytes += len(packet.data)
        if packet.keyframe or self._bytes >= self._max_bytes or packet.capture_ns - self._first_ns >= self._max_ns:
            return self.take()
        return None

    def take(self) -> MediaBatch | None:
        """What is held, as a batch (None if nothing is)."""
        if not self._packets:
            return None
        packets, self._packets, self._bytes = self._packets, [], 0
        return MediaBatch(camera=self.camera, stream=self.stream, session=self.session, packets=tuple(packets))
