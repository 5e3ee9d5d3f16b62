"""A synthetic town panorama and the window of it that one camera sees.

`Panorama` is a wide procedural picture (sky gradient and clouds, a skyline of buildings with lit windows, numbered
billboards, a road with lane marks and posts) held as YUV 4:2:0 planes; it is built once (a fraction of a second)
and shared by every camera of the process. Moving objects are drawn over it at render time, on periodic paths
whose period divides `MOTION_PERIOD_S`, so a clip of that length loops without a jump.

`CameraScene.render(view, t, faults, capture_ms=...)` samples the window for a `ViewWindow` (ONVIF normalised
pan/tilt in [-1, 1], zoom in [0, 1], 0 the widest) with nearest-neighbour indexing, draws the movers, applies the
picture faults (freeze, cover, defocus, shift) and burns in the OSD strip of `timecode` (which a covered or blurred
lens does not hide: the camera draws it after the optics). It returns one contiguous I420 array of shape
(height * 3 // 2, width), the layout `av.VideoFrame.from_ndarray(..., format="yuv420p")` takes.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from argus_simcam.faults import FaultState
from argus_simcam.timecode import STRIP_HEIGHT, render_strip, render_text

__all__ = ["MOTION_PERIOD_S", "CameraScene", "Panorama", "ViewWindow"]

MOTION_PERIOD_S: Final = 8.0
_PANO_W: Final = 4096
_PANO_H: Final = 1536
_HORIZON: Final = 900
_WIDEST: Final = 0.40  # share of the panorama width seen at zoom 0
_MAX_ZOOM: Final = 8.0

Plane = npt.NDArray[np.uint8]
Rgb = tuple[int, int, int]


class ViewWindow(NamedTuple):
    """Where the camera looks: pan and tilt in [-1, 1] (tilt +1 is up), zoom in [0, 1] (1 is the narrowest)."""

    pan: float = 0.0
    tilt: float = 0.0
    zoom: float = 0.0


def _yuv(rgb: Rgb) -> tuple[int, int, int]:
    r, g, b = rgb
    y = 16 + (65.738 * r + 129.057 * g + 25.064 * b) / 256
    u = 128 + (-37.945 * r - 74.494 * g + 112.439 * b) / 256
    v = 128 + (112.439 * r - 94.154 * g - 18.285 * b) / 256
    return (round(y), round(u), round(v))


class Panorama:
    """The town, as Y (H x W) and U, V (H/2 x W/2) uint8 planes. Build with `Panorama.build(seed)`."""

    def __init__(self, y: Plane, u: Plane, v: Plane) -> None:
        self.y, self.u, self.v = y, u, v
        self.height, self.width = y.shape

    @classmethod
    def build(cls, seed: int = 7) -> Panorama:
        rng = np.random.default_rng(seed)
        y = np.empty((_PANO_H, _PANO_W), dtype=np.uint8)
        u = np.empty((_PANO_H // 2, _PANO_W // 2), dtype=np.uint8)
        v = np.empty_like(u)
        pano = cls(y, u, v)
        pano._sky(rng)
        pano._ground()
        pano._buildings(rng)
        pano._billboards()
        return pano

    # -- drawing helpers (panorama luma coordinates, even-aligned for chroma) -------------------------------------
    def fill(self, x0: int, y0: int, x1: int, y1: int, rgb: Rgb) -> None:
        x0, y0 = max(0, x0 & ~1), max(0, y0 & ~1)
        x1, y1 = min(self.width, (x1 + 1) & ~1), min(self.height, (y1 + 1) & ~1)
        if x1 <= x0 or y1 <= y0:
            return
        cy, cu, cv = _yuv(rgb)
        self.y[y0:y1, x0:x1] = cy
        self.u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = cu
        self.v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = cv

    def _sky(self, rng: np.random.Generator) -> None:
        top, bottom = np.array((40, 80, 160), np.float64), np.array((175, 205, 235), np.float64)
        for row in range(0, _HORIZON, 2):
            f = row / _HORIZON
            self.fill(0, row, _PANO_W, row + 2, tuple(int(c) for c in top * (1 - f) + bottom * f))  # type: ignore[arg-type]
        for _ in range(14):
            cx, cy = int(rng.integers(0, _PANO_W)), int(rng.integers(60, _HORIZON - 400))
            for k in range(5):
                w, h = int(rng.integers(80, 220)), int(rng.integers(30, 70))
                ox, oy = int(rng.integers(-120, 120)), int(rng.integers(-25, 25))
                grey = int(rng.integers(215, 250))
                self._ellipse(cx + ox, cy + oy, w, h, (grey, grey, grey + (255 - grey) // 2 if k else grey))

    def _ellipse(self, cx: int, cy: int, rx: int, ry: int, rgb: Rgb) -> None:
        cy_, cu, cv = _yuv(rgb)
        yy, xx = np.ogrid[-ry:ry, -rx:rx]
        mask = (xx / rx) ** 2 + (yy / ry) ** 2 <= 1.0
        xs = (np.arange(cx - rx, cx + rx) % _PANO_W)[None, :]
        ys = np.clip(np.arange(cy - ry, cy + ry), 0, _PANO_H - 1)[:, None]
        region = self.y[ys, xs]
        region[mask] = cy_
        self.y[ys, xs] = region
        cmask = mask[::2, ::2]
        cxs, cys = xs[:, ::2] // 2, ys[::2] // 2
        for plane, value in ((self.u, cu), (self.v, cv)):
            sub = plane[cys, cxs]
            sub[cmask] = value
            plane[cys, cxs] = sub

    def _ground(self) -> None:
        self.fill(0, _HORIZON, _PANO_W, _PANO_H, (92, 110, 78))
        road0, road1 = _HORIZON + 230, _HORIZON + 430
        self.fill(0, _HORIZON + 200, _PANO_W, road0, (150, 150, 140))
        self.fill(0, road0, _PANO_W, road1, (60, 62, 66))
        for x in range(0, _PANO_W, 160):
            self.fill(x, (road0 + road1) // 2 - 6, x + 90, (road0 + road1) // 2 + 6, (235, 235, 225))
        for x in range(24, _PANO_W, 96):
            self.fill(x, _HORIZON + 120, x + 10, _HORIZON + 200, (120, 84, 50))
        self.fill(0, _HORIZON + 150, _PANO_W, _HORIZON + 158, (120, 84, 50))
        for x in range(0, _PANO_W, 64):
            self.fill(x, road1 + 40, x + 32, road1 + 72, (200, 196, 180) if (x // 64) % 2 else (140, 136, 120))

    def _buildings(self, rng: np.random.Generator) -> None:
        x = 0
        while x < _PANO_W:
            w = int(rng.integers(90, 280))
            h = int(rng.integers(160, 640))
            base = tuple(int(c) for c in rng.integers(60, 190, 3))
            top = _HORIZON - h
            self.fill(x, top, x + w - 6, _HORIZON + 40, base)  # type: ignore[arg-type]
            lit = np.array(base) // 3 + np.array((170, 160, 90))
            dark = np.array(base) // 2
            for wy in range(top + 20, _HORIZON - 10, 34):
                for wx in range(x + 12, x + w - 24, 26):
                    colour = lit if rng.random() < 0.45 else dark
                    self.fill(wx, wy, wx + 14, wy + 20, tuple(int(c) for c in colour))  # type: ignore[arg-type]
            x += w

    def _billboards(self) -> None:
        colours = ((220, 40, 40), (40, 170, 60), (240, 200, 30), (200, 60, 200), (30, 150, 220), (250, 130, 20))
        for i in range(8):
            cx = 256 + i * 512
            x0, y0 = cx - 150, 120 + (i % 3) * 70
            self.fill(x0 - 8, y0 - 8, x0 + 308, y0 + 228, (30, 30, 30))
            self.fill(x0, y0, x0 + 300, y0 + 220, colours[i % len(colours)])
            glyph = render_text(str(i + 1), scale=26)[:, : 5 * 26]
            gy, gx = np.nonzero(glyph)
            gx = gx + cx - glyph.shape[1] // 2
            gy = gy + y0 + 110 - glyph.shape[0] // 2
            self.y[gy, gx] = 235
            self.u[gy // 2, gx // 2] = 128
            self.v[gy // 2, gx // 2] = 128
            self.fill(cx - 6, y0 + 228, cx + 6, _HORIZON, (70, 70, 70))


@dataclass(frozen=True)
class _Mover:
    x: float
    y: float
    ax: float
    ay: float
    cycles_x: int
    cycles_y: int
    phase: float
    w: int
    h: int
    rgb: Rgb
    round: bool

    def at(self, t: float) -> tuple[float, float]:
        a = 2 * math.pi * t / MOTION_PERIOD_S
        return (
            self.x + self.ax * math.sin(a * self.cycles_x + self.phase),
            self.y + self.ay * math.sin(a * self.cycles_y + self.phase * 1.7),
        )


_MOVERS: Final = (
    _Mover(600, _HORIZON + 330, 420, 0, 1, 0, 0.0, 150, 70, (200, 30, 30), False),
    _Mover(1500, _HORIZON + 280, 500, 20, 1, 2, 1.3, 120, 60, (30, 60, 200), False),
    _Mover(2500, _HORIZON + 380, 600, 0, 2, 0, 2.1, 170, 80, (240, 240, 240), False),
    _Mover(3400, _HORIZON + 300, 380, 30, 1, 1, 0.7, 110, 55, (250, 200, 0), False),
    _Mover(1000, _HORIZON - 300, 700, 100, 1, 2, 0.4, 60, 60, (20, 20, 20), True),
    _Mover(3000, _HORIZON + 140, 250, 0, 3, 0, 2.9, 40, 90, (150, 40, 170), True),
)


def _blur_plane(plane: Plane, factor: int) -> Plane:
    """A strong blur: area-downscale by `factor`, 3x3 box at low resolution, bilinear upscale."""
    h, w = plane.shape
    hh, ww = h // factor, w // factor
    if hh < 2 or ww < 2:
        return plane
    small = plane[: hh * factor, : ww * factor].reshape(hh, factor, ww, factor).mean(axis=(1, 3), dtype=np.float32)
    padded = np.pad(small, 1, mode="edge")
    box = np.zeros((hh, ww), dtype=np.float32)
    for dy in range(3):
        for dx in range(3):
            box += padded[dy : dy + hh, dx : dx + ww]
    box /= np.float32(9)
    xs = np.clip((np.arange(w, dtype=np.float32) + 0.5) / factor - 0.5, 0, ww - 1)
    ys = np.clip((np.arange(h, dtype=np.float32) + 0.5) / factor - 0.5, 0, hh - 1)
    x0 = xs.astype(np.int64)
    y0 = ys.astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, ww - 1), np.minimum(y0 + 1, hh - 1)
    wx, wy = xs - x0, (ys - y0)[:, None]
    rows = box[:, x0] * (1 - wx) + box[:, x1] * wx
    out = rows[y0] * (1 - wy) + rows[y1] * wy
    result: Plane = (out + 0.5).astype(np.uint8)
    return result


class CameraScene:
    """What one camera's stream shows: `render()` one I420 frame of `width` x `height` (both even)."""

    def __init__(self, panorama: Panorama, name: str, width: int, height: int, *, osd: bool = True) -> None:
        if width % 2 or height % 2 or width < 16 or height <= STRIP_HEIGHT:
            raise ValueError(f"unsupported picture size {width}x{height}")
        self.panorama = panorama
        self.name = name
        self.width, self.height = width, height
        self.osd = osd
        self._last: npt.NDArray[np.uint8] | None = None
        self._strip_key: tuple[int, int] | None = None
        self._strip: Plane | None = None
        self._background_key: tuple[float, float, float, float] | None = None
        self._background: npt.NDArray[np.uint8] | None = None
        self._lock = threading.Lock()

    def window(self, view: ViewWindow, shift: tuple[float, float] | None = None) -> tuple[float, float, float, float]:
        """The panorama rectangle (x0, y0, width, height) seen for `view`; x may run past the edges (it wraps)."""
        pano = self.panorama
        pan = min(1.0, max(-1.0, view.pan))
        tilt = min(1.0, max(-1.0, view.tilt))
        zoom = min(1.0, max(0.0, view.zoom))
        win_w = pano.width * _WIDEST / (_MAX_ZOOM**zoom)
        win_h = min(win_w * self.height / self.width, float(pano.height))
        x0 = (pan + 1) / 2 * (pano.width - win_w)
        y0 = (1 - tilt) / 2 * (pano.height - win_h)
        if shift is not None:
            x0 += shift[0] * win_w
            y0 = min(max(0.0, y0 + shift[1] * win_h), pano.height - win_h)
        return x0, y0, win_w, win_h

    def render(
        self,
        view: ViewWindow,
        t: float,
        faults: FaultState | None = None,
        *,
        capture_ms: int | None = None,
    ) -> npt.NDArray[np.uint8]:
        """One frame at scene time `t` (seconds), as I420 `(height * 3 // 2, width)` uint8.

        `capture_ms` (epoch ms) is drawn in the OSD strip; None leaves the strip without time.
        Thread-safe (a camera renders from its encoder thread).
        """
        with self._lock:
            if faults is not None and faults.freeze and self._last is not None:
                return self._last
            frame = self._render(view, t, faults, capture_ms)
            self._last = frame
            return frame

    def _render(
        self, view: ViewWindow, t: float, faults: FaultState | None, capture_ms: int | None
    ) -> npt.NDArray[np.uint8]:
        w, h = self.width, self.height
        frame = np.empty((h * 3 // 2, w), dtype=np.uint8)
        y = frame[:h]
        u = frame[h : h + h // 4].reshape(h // 2, w // 2)
        v = frame[h + h // 4 :].reshape(h // 2, w // 2)
        cover = faults.cover if faults is not None else None
        if cover is not None:
            cy, cu, cv = (16, 128, 128) if cover == "black" else cover
            y[:], u[:], v[:] = cy, cu, cv
        else:
            shift = faults.shift if faults is not None else None
            window = self.window(view, shift)
            if self._background is None or self._background_key != window:
                # The panorama seen through a window changes only when the camera moves: sample it once.
                background = np.empty_like(frame)
                self._sample(
                    background[:h],
                    background[h : h + h // 4].reshape(h // 2, w // 2),
                    background[h + h // 4 :].reshape(h // 2, w // 2),
                    *window,
                )
                self._background, self._background_key = background, window
            frame[:] = self._background
            self._draw_movers(y, u, v, t, *window)
            if faults is not None and faults.defocus:
                factor = max(4, w // 160)
                y[:] = _blur_plane(y, factor)
                u[:] = _blur_plane(u, max(2, factor // 2))
                v[:] = _blur_plane(v, max(2, factor // 2))
        if self.osd:
            y[:STRIP_HEIGHT] = self._osd(capture_ms)
            u[: STRIP_HEIGHT // 2] = 128
            v[: STRIP_HEIGHT // 2] = 128
        return frame

    def _osd(self, capture_ms: int | None) -> Plane:
        key = (-1 if capture_ms is None else capture_ms, self.width)
        if self._strip is None or self._strip_key != key:
            self._strip = render_strip(self.width, self.name, capture_ms)
            self._strip_key = key
        return self._strip

    def _sample(self, y: Plane, u: Plane, v: Plane, x0: float, y0: float, win_w: float, win_h: float) -> None:
        pano = self.panorama
        h, w = y.shape
        xs = (x0 + (np.arange(w) + 0.5) * (win_w / w)).astype(np.int64) % pano.width
        ys = np.clip((y0 + (np.arange(h) + 0.5) * (win_h / h)).astype(np.int64), 0, pano.height - 1)
        y[:] = pano.y[ys][:, xs]
        xc = (x0 / 2 + (np.arange(w // 2) + 0.5) * (win_w / w)).astype(np.int64) % (pano.width // 2)
        yc = np.clip((y0 / 2 + (np.arange(h // 2) + 0.5) * (win_h / h)).astype(np.int64), 0, pano.height // 2 - 1)
        u[:] = pano.u[yc][:, xc]
        v[:] = pano.v[yc][:, xc]

    def _draw_movers(
        self, y: Plane, u: Plane, v: Plane, t: float, x0: float, y0: float, win_w: float, win_h: float
    ) -> None:
        h, w = y.shape
        sx, sy = w / win_w, h / win_h
        pano_w = self.panorama.width
        for mover in _MOVERS:
            mx, my = mover.at(t)
            # The nearest copy of the mover on the wrapping panorama.
            dx = (mx - x0 + pano_w / 2) % pano_w - pano_w / 2
            left, top = dx * sx, (my - y0) * sy
            right, bottom = left + mover.w * sx, top + mover.h * sy
            lx, ty = max(0, int(left) & ~1), max(0, int(top) & ~1)
            rx, by = min(w, (int(right) + 1) & ~1), min(h, (int(bottom) + 1) & ~1)
            if rx <= lx or by <= ty:
                continue
            cy, cu, cv = _yuv(mover.rgb)
            if mover.round:
                yy, xx = np.ogrid[ty:by, lx:rx]
                rxr, ryr = (right - left) / 2, (bottom - top) / 2
                mask = ((xx + 0.5 - left - rxr) / rxr) ** 2 + ((yy + 0.5 - top - ryr) / ryr) ** 2 <= 1.0
                y[ty:by, lx:rx][mask] = cy
                cmask = mask[::2, ::2]
                u[ty // 2 : by // 2, lx // 2 : rx // 2][cmask] = cu
                v[ty // 2 : by // 2, lx // 2 : rx // 2][cmask] = cv
            else:
                y[ty:by, lx:rx] = cy
                u[ty // 2 : by // 2, lx // 2 : rx // 2] = cu
                v[ty // 2 : by // 2, lx // 2 : rx // 2] = cv
