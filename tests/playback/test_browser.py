"""Headless Chromium plays the api's HLS with hls.js: the video advances, and a seek shows the instant's frame."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from argus_api.playback import PLAYBACK_KEY, PlaybackConfig
from argus_api.playback.config import Delivery
from argus_core.storage import ObjectStore
from argus_recorder.index import Index
from tests.playback.conftest import ServerFactory
from tests.playback.media import Recording, luma_timecode, simcam_segments, store_recording
from tests.playback.support import T0_MS, Api, iso

CAM = "cam-web"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]

pytestmark = pytest.mark.slow


@pytest.fixture
async def footage(index: Index, store: ObjectStore) -> Recording:
    """Simcam footage: a minute, 30 s of nothing, a minute (10 fps, a keyframe a second, 6 s segments)."""
    first = await asyncio.to_thread(simcam_segments, CAM, T0_MS, 60, fps=10, gop_s=1)
    second = await asyncio.to_thread(simcam_segments, CAM, T0_MS + 90_000, 60, fps=10, gop_s=1)
    rec = Recording(CAM, [*first, *second])
    await store_recording(index, store, rec)
    return rec


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield b
        finally:
            await b.close()


async def open_player(browser: Browser, api: Api, **params: str) -> Page:
    assert api.app[PLAYBACK_KEY].hls_js is not None, "hls.js is missing: run services/api/web/vendor-hlsjs.sh"
    fragment = "&".join(f"{k}={v}" for k, v in {"token": api.token((CAM,)), "camera": CAM, **params}.items())
    page = await browser.new_page()
    await page.goto(f"{api.url}/playback/#{fragment}")
    return page


async def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(
        "() => ({fatal: argus.state.fatal, errors: argus.state.errors, frames: argus.state.frames,"
        " t: document.getElementById('video').currentTime, ready: document.getElementById('video').readyState,"
        " wall: argus.state.hls && argus.state.hls.playingDate ? argus.state.hls.playingDate.getTime() : null})"
    )
    return result


async def wait_until(page: Page, check: str, *, within_s: float) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        now = await state(page)
        assert now["fatal"] is None, now
        if eval(check, {}, {"s": now}):  # noqa: S307 - a test's own expression
            return now
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{check} not reached in {within_s} s: {now}")
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("delivery", ["proxy", "presigned"])
async def test_chromium_plays_the_stream_across_a_gap(
    make_server: ServerFactory, footage: Recording, browser: Browser, delivery: Delivery
) -> None:
    api = await make_server(PlaybackConfig(delivery=delivery))
    page = await open_player(browser, api, **{"from": iso(T0_MS + 54_000), "until": iso(T0_MS + 100_000), "rate": "2"})
    start = await wait_until(page, "s['t'] > 0.5", within_s=30)
    # The video advances, through the discontinuity at the end of the first minute into the second.
    after = await wait_until(page, f"s['wall'] is not None and s['wall'] > {T0_MS + 93_000}", within_s=40)
    assert after["t"] > start["t"] + 6
    assert after["frames"] > 50
    assert not [e for e in after["errors"] if e.get("fatal")]


async def test_seeking_shows_the_frame_captured_at_the_instant(api: Api, footage: Recording, browser: Browser) -> None:
    for at in (T0_MS + 23_456, T0_MS + 101_230):
        page = await open_player(browser, api, at=iso(at), paused="1")
        await wait_until(page, "s['ready'] >= 2 and s['t'] > 0", within_s=30)
        await asyncio.sleep(0.3)
        picture = await page.evaluate("argus.luma(48)")
        assert picture is not None
        code = luma_timecode(picture["width"], picture["height"], base64.b64decode(picture["data"]))
        assert code is not None, "no time code on screen"
        assert 0 <= at - code < 1000, (iso(at), iso(code))  # within one GOP before it
        assert at - code < 100  # in fact the very frame (10 fps)
        await page.close()
