"""JPEG snapshots of what a camera sees now (ONVIF GetSnapshotUri), rendered and encoded off the event loop."""

from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np
import numpy.typing as npt

from argus_simcam.camera import MediaHub
from argus_simcam.encoder import ViewProvider
from argus_simcam.faults import FaultState
from argus_simcam.scene import CameraScene, ViewWindow


def encode_jpeg(i420: npt.NDArray[np.uint8], width: int, height: int) -> bytes:
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width = width
    codec.height = height
    codec.pix_fmt = "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p").reformat(format="yuvj420p")
    packets = [*codec.encode(frame), *codec.encode(None)]
    return b"".join(bytes(p) for p in packets)


class Snapshotter:
    """One camera's snapshot source: the scene at the camera's current view, faults and time."""

    def __init__(self, hub: MediaHub, name: str, view: ViewProvider, faults: FaultState) -> None:
        self._hub = hub
        self._name = name
        self._view = view
        self._faults = faults
        self._scenes: dict[tuple[int, int], CameraScene] = {}

    def _render(self, width: int, height: int) -> bytes:
        scene = self._scenes.get((width, height))
        if scene is None:
            scene = self._scenes[(width, height)] = CameraScene(self._hub.panorama(), self._name, width, height)
        now_ms = time.time_ns() // 1_000_000 + int(self._faults.clock_skew_s * 1000)
        frame = scene.render(ViewWindow(*self._view()), time.monotonic(), self._faults, capture_ms=now_ms)
        return encode_jpeg(frame, width, height)

    async def jpeg(self, width: int, height: int) -> bytes:
        return await asyncio.to_thread(self._render, width, height)
