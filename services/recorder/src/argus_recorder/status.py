"""Recent camera health from ingest, to name the cause of a gap when an ingest session changes."""

from __future__ import annotations

from collections import deque

from argus_core.bus.messages import CameraStatus, GapCause

SLACK_NS = 2_000_000_000


class StatusBook:
    """The last statuses of each camera (a bounded history per camera)."""

    def __init__(self, per_camera: int = 64) -> None:
        self._per_camera = per_camera
        self._history: dict[str, deque[CameraStatus]] = {}

    def add(self, status: CameraStatus) -> None:
        history = self._history.setdefault(status.camera, deque(maxlen=self._per_camera))
        if history and history[-1] == status:
            return
        history.append(status)

    def forget(self, camera: str) -> None:
        self._history.pop(camera, None)

    def cause(self, camera: str, start_ns: int, end_ns: int) -> tuple[GapCause, str]:
        """Why an ingest session ended between `start_ns` and `end_ns`: the camera said offline, or ingest moved."""
        window = [s for s in self._history.get(camera, ()) if start_ns - SLACK_NS <= s.at_ns <= end_ns + SLACK_NS]
        offline = [s for s in window if s.state in ("offline", "disabled")]
        if offline:
            first = offline[0]
            what = "camera disabled" if first.state == "disabled" else "camera offline"
            return "camera_offline", f"{what}: {first.error}" if first.error else what
        pods = list(dict.fromkeys(s.ingest_pod for s in window if s.ingest_pod))
        if len(pods) > 1:
            return "ingest_failover", f"ingest moved from {pods[0]} to {pods[-1]}"
        return "ingest_failover", ""
