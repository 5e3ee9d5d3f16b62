"""liveview benchmark: CPU and memory of the liveview process per viewer, time to first frame, glass-to-glass.

    python -m tests.bench.liveview_bench --viewers 10 50 100 --seconds 20
    python -m tests.bench.liveview_bench --viewers 10 --seconds 20 --no-browser
    python -m tests.bench.liveview_bench --viewers 10 50 --seconds 20 --cold 20

What runs (every part a process of its own, all on loopback):

- one simcam camera (`tests.bench.simcam_bench --role=server`: pre-encoded 720p25 H.264 at 2 Mbps, GOP 2 s, the
  capture time drawn in each picture as a machine-readable time code);
- nats-server (JetStream) and Postgres (the camera register), started as the tests start them;
- ingest (`python -m argus_ingest`) pulling the camera onto the bus;
- liveview (`python -m argus_liveview`), the process measured;
- viewers: `tests.liveview.viewer_proc` processes of `--per-process` aiortc WHEP viewers each, counting every access
  unit they receive without decoding (so that a hundred fit on the machine), plus one decoding aiortc viewer that
  reads the time code of every picture, plus (unless `--no-browser`) headless Chromium playing liveview's own page,
  which reads the time code from the video through a canvas: glass-to-glass as a person sees it.

For each viewer count, the viewers connect one after the other (`--stagger` apart); after `--warmup` seconds the
CPU time of the liveview process is read from /proc over `--seconds` (user + system, all threads, percent of one
core) with its resident memory (VmRSS) then, against its memory with no viewer. Time to first frame: from the
viewer's POST to its first complete keyframe (counting viewers), its first decoded picture (the decoding viewer),
its first picture shown (Chromium). Glass-to-glass: the time code's capture time to the picture decoded (aiortc)
or shown (Chromium), after the first two seconds (the catch-up from the cached GOP's keyframe to live). Every
viewer's packets lost (its RTCP statistics) are summed.

With `--cold N`, first N viewers come one at a time, each the only viewer of the camera after live view let it go
(`--idle-grace`): each finds no GOP cached, and live view asks the ingest pod for the camera's current GOP so far.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from argus_core.bus import Bus, TopologyOptions, topology
from argus_core.db import DatabaseConfig, create_pool, migrate
from argus_core.identity import Grant, TokenIssuer, generate_keypair
from argus_devstack.backends import new_postgres_server
from argus_devstack.nats import NatsServer
from argus_devstack.ports import free_port
from tests.bench.ingest_bench import (
    child,
    cpu_seconds,
    histogram_quantile,
    machine_busy,
    out,
    scrape,
    service_env,
    simcam_server,
    status_kb,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
CATCH_UP_S = 2.0


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def steady(latencies: list[float], codes: list[int]) -> list[float]:
    """Latencies after the first CATCH_UP_S seconds of capture time."""
    if not codes:
        return []
    start = codes[0] + CATCH_UP_S * 1000
    return [lat for lat, code in zip(latencies, codes, strict=False) if code >= start]


async def viewers(url: str, token: str, count: int, args: argparse.Namespace) -> list[asyncio.subprocess.Process]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    procs = []
    remaining = count
    while remaining > 0:
        n = min(args.per_process, remaining)
        remaining -= n
        job = {
            "cameras": ["cam000"],
            "count": n,
            "token": token,
            "seconds": args.warmup + args.seconds + 5,
            "stagger_s": args.stagger,
        }
        procs.append(await spawn(url, job, env))
    return procs


async def spawn(url: str, job: dict[str, Any], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.liveview.viewer_proc",
        "--url",
        url,
        "--job",
        json.dumps(job),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def results_of(proc: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    items = []
    while line := await proc.stdout.readline():
        item = json.loads(line)
        if item.get("event") == "result":
            items.append(item)
    await proc.wait()
    return items


async def browser_viewer(url: str, token: str, seconds: float, replays: int) -> dict[str, Any]:
    """Chromium on liveview's page for `seconds`, then `replays` more plays of the camera in the same page (a tile
    switched off and on: the browser's WebRTC stack is warm), each timed to its first picture shown."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/#camera=cam000&token={token}&measure=1")
            await asyncio.sleep(seconds)
            result: dict[str, Any] = await page.evaluate(
                "async () => ({state: JSON.parse(JSON.stringify(argus.state)), stats: await argus.stats()})"
            )
            warm: list[float] = []
            for _ in range(replays):
                await page.evaluate(f"argus.stop().then(() => argus.play('cam000', 'main', '{token}', false))")
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    first = await page.evaluate("argus.state.firstFrameMs")
                    if first is not None:
                        warm.append(float(first))
                        break
                await asyncio.sleep(0.5)
            await page.evaluate("argus.stop()")
        finally:
            await browser.close()
    state = result["state"]
    inbound = result["stats"].get("inbound") or {}
    steps = {
        k: round(state[k] - state["requestedAt"]) for k in ("offeredAt", "answeredAt", "connectedAt") if state.get(k)
    }
    return {
        "steps": steps,
        "ttff_ms": state["firstFrameMs"],
        "warm_ttff_ms": warm,
        "latencies": steady(state["latencies"], state["captured"]),
        "packets_lost": inbound.get("packetsLost"),
        "frames_decoded": inbound.get("framesDecoded"),
        "frames_dropped": inbound.get("framesDropped"),
        "error": state["error"],
    }


async def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="liveview-bench-") as tmp_name:
        tmp = Path(tmp_name)
        private, public = generate_keypair()
        (tmp / "bench.pem").write_bytes(public)
        issuer = TokenIssuer(private, "bench", issuer="argus", audience="argus", ttl_s=3600)
        token = issuer.issue("bench", ["operator"], [Grant(actions=("live",), cameras=("*",))])
        postgres = new_postgres_server()
        postgres.start()
        nats_server = NatsServer(data_dir=tmp / "nats")
        nats_server.start()
        try:
            with simcam_server(1, tmp) as rtsp_port, contextlib.ExitStack() as stack:
                db_url = postgres.create_database("liveview_bench")
                pool = await create_pool(DatabaseConfig(url=db_url, pool_max=2))
                await migrate(pool)
                await pool.execute(
                    "INSERT INTO cameras (id, name, main_url) VALUES ('cam000', 'cam000', $1)",
                    f"rtsp://127.0.0.1:{rtsp_port}/cam000/main",
                )
                await pool.close()
                bus = await Bus.connect(nats_server.url, name="liveview-bench")
                await bus.ensure(topology(TopologyOptions(media_max_age_s=120.0)))
                await bus.drain()
                ingest_port = free_port()
                stack.enter_context(
                    child(
                        [sys.executable, "-m", "argus_ingest"],
                        env=service_env(nats_server.url, db_url, ingest_port, "bench-ingest"),
                        log=stack.enter_context((tmp / "ingest.log").open("wb")),
                    )
                )
                await wait_for("camera online", lambda: scrape(ingest_port).get("argus_ingest_cameras_online", 0) >= 1)
                lv_port = free_port()
                env = service_env(nats_server.url, db_url, lv_port, "bench-liveview")
                env.pop("ARGUS_DB_URL")
                env.update(
                    {
                        "ARGUS_TOKENS_PUBLIC_KEYS": str(tmp / "bench.pem"),
                        "ARGUS_LIVEVIEW_ICE_HOSTS": "127.0.0.1",
                        "ARGUS_LIVEVIEW_MAX_SESSIONS": "1000",
                        "ARGUS_LIVEVIEW_STRIP_FILLER": "true" if args.strip_filler else "false",
                        # A camera nobody watches is let go soon, so that each --cold viewer finds it unwatched.
                        "ARGUS_LIVEVIEW_IDLE_GRACE_S": str(args.idle_grace),
                    }
                )
                profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
                liveview = stack.enter_context(
                    child(
                        [sys.executable, *profile, "-m", "argus_liveview"],
                        env=env,
                        log=stack.enter_context((tmp / "liveview.log").open("wb")),
                    )
                )
                await wait_for("liveview ready", lambda: scrape(lv_port).get("argus_service_ready", 0) >= 1)
                url = f"http://127.0.0.1:{lv_port}"
                await asyncio.sleep(2.0)
                idle_rss = status_kb(liveview.pid, "VmRSS") / 1024
                out(f"liveview idle: {idle_rss:.0f} MB resident")
                if args.cold:
                    await cold_starts(url, token, lv_port, args)
                for count in args.viewers:
                    await one_count(count, url, token, liveview, idle_rss, args)
                    await asyncio.sleep(args.idle_between)
                liveview.send_signal(signal.SIGTERM)
                liveview.wait(timeout=60)
        finally:
            nats_server.close()
            postgres.close()
    return 0


async def cold_starts(url: str, token: str, port: int, args: argparse.Namespace) -> None:
    """The first viewer of a camera nobody watches, `--cold` times: live view has no GOP of it cached and asks the
    ingest pod pulling it for the current GOP so far (its catch-up), while demanding its live packets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    ttff: list[float] = []
    for _ in range(args.cold):
        await wait_for("camera let go", lambda: scrape(port).get("argus_liveview_cameras_watched", 0) == 0)
        proc = await spawn(url, {"cameras": ["cam000"], "count": 1, "token": token, "seconds": 3.0}, env)
        ttff.extend(r["ttff_ms"] for r in await results_of(proc) if r["ttff_ms"] is not None)
        # Land anywhere in the camera's 2 s GOP, not always at the same phase.
        await asyncio.sleep(args.idle_grace + 0.5 + 0.37 * len(ttff))
    out(
        f"first viewer of an unwatched camera ({len(ttff)} of {args.cold} got a keyframe): POST to first keyframe "
        f"p50 {pct(ttff, 0.5):.0f} ms, p95 {pct(ttff, 0.95):.0f} ms, max {max(ttff, default=float('nan')):.0f} ms"
    )


async def one_count(
    count: int, url: str, token: str, liveview: subprocess.Popen[bytes], idle_rss: float, args: argparse.Namespace
) -> None:
    counting = count - 1  # one viewer decodes
    procs = await viewers(url, token, counting, args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARGUS_")}
    decoder = await spawn(
        url,
        {"cameras": ["cam000"], "count": 1, "token": token, "decode": True, "seconds": args.warmup + args.seconds + 5},
        env,
    )
    readers = [asyncio.create_task(results_of(p)) for p in [*procs, decoder]]
    browser: asyncio.Task[dict[str, Any]] | None = None
    if args.browser:
        browser = asyncio.create_task(browser_viewer(url, token, args.warmup + args.seconds, args.replays))
    port = int(url.rsplit(":", 1)[1])
    start = scrape(port)
    await asyncio.sleep(args.warmup)
    before = scrape(port)
    busy0, total0 = machine_busy()
    cpu0 = cpu_seconds(liveview.pid)
    clients0 = sum(cpu_seconds(p.pid) for p in [*procs, decoder] if p.returncode is None)
    t0 = time.monotonic()
    await asyncio.sleep(args.seconds)
    elapsed = time.monotonic() - t0
    cpu = 100.0 * (cpu_seconds(liveview.pid) - cpu0) / elapsed
    clients = 100.0 * (sum(cpu_seconds(p.pid) for p in [*procs, decoder] if p.returncode is None) - clients0) / elapsed
    busy1, total1 = machine_busy()
    rss = status_kb(liveview.pid, "VmRSS") / 1024
    metrics = scrape(port)
    results = [r for task in readers for r in await task]
    web = await browser if browser is not None else None
    viewers_open = metrics.get("argus_liveview_viewers", 0)
    ttff = [r["ttff_ms"] for r in results if r["ttff_ms"] is not None]
    lost = sum(r.get("packetsLost") or 0 for r in results)
    received = sum(r.get("packetsReceived") or 0 for r in results)
    no_frames = sum(1 for r in results if not r["frames"])
    decoded = [r for r in results if r["decode"]]
    g2g = steady(decoded[0]["latencies_ms"], decoded[0]["codes"]) if decoded else []
    out(
        f"{count} viewers ({int(viewers_open)} open when measured; {len(results)} reported, {no_frames} got nothing): "
        f"liveview {cpu:.1f}% of a core = {cpu / max(1, count):.2f}% per viewer "
        f"({100 * max(1, count) / max(cpu, 0.01):.0f} viewers per core); "
        f"memory {rss:.0f} MB = {(rss - idle_rss) / max(1, count):.2f} MB per viewer; "
        f"machine {100.0 * (busy1 - busy0) / max(1, total1 - total0):.0f}% busy, load {os.getloadavg()[0]:.1f}"
    )
    mbps = sum(r["bytes"] for r in results if not r["decode"]) * 8 / max(1, len(results) - 1)
    mbps /= (args.warmup + args.seconds + 5) * 1e6
    sent = metrics.get("argus_liveview_frames_sent_total", 0) - before.get("argus_liveview_frames_sent_total", 0)
    dropped = metrics.get("argus_liveview_dropped_frames_total", 0) - start.get(
        "argus_liveview_dropped_frames_total", 0
    )
    relay = "argus_liveview_capture_to_relay_seconds"
    first = "argus_liveview_first_frame_seconds"
    out(
        f"  liveview sent {sent / elapsed / max(1, viewers_open):.1f} frames/s per viewer (the camera: 25), dropped "
        f"{dropped:.0f} frames; capture to liveview p50 <= {histogram_quantile(before, metrics, relay, 0.5) * 1000:.0f}"
        f" ms p95 <= {histogram_quantile(before, metrics, relay, 0.95) * 1000:.0f} ms; POST to first frame sent "
        f"(liveview's histogram) p50 <= {histogram_quantile(start, metrics, first, 0.5) * 1000:.0f} ms "
        f"p95 <= {histogram_quantile(start, metrics, first, 0.95) * 1000:.0f} ms; viewer processes used "
        f"{clients:.0f}% of a core"
    )
    out(
        f"  first frame (aiortc viewers, POST to first keyframe): p50 {pct(ttff, 0.5):.0f} ms, "
        f"p95 {pct(ttff, 0.95):.0f} ms, max {max(ttff, default=float('nan')):.0f} ms; "
        f"packets lost {lost} of {received}; about {mbps:.2f} Mbit/s per viewer"
    )
    if decoded:
        out(
            f"  decoding aiortc viewer: first picture {decoded[0]['ttff_ms']:.0f} ms, capture to decoded "
            f"p50 {pct(g2g, 0.5):.0f} ms p95 {pct(g2g, 0.95):.0f} ms ({len(g2g)} pictures)"
        )
    if web is not None:
        lat = web["latencies"]
        out(
            f"  Chromium: first picture shown {web['ttff_ms'] or float('nan'):.0f} ms "
            f"(offer {web['steps'].get('offeredAt')}, answer {web['steps'].get('answeredAt')}, connected "
            f"{web['steps'].get('connectedAt')} ms), glass-to-glass "
            f"p50 {pct(lat, 0.5):.0f} ms p95 {pct(lat, 0.95):.0f} ms ({len(lat)} pictures), "
            f"decoded {web['frames_decoded']}, dropped {web['frames_dropped']}, packets lost {web['packets_lost']}"
            + (f", error {web['error']}" if web["error"] else "")
        )
        warm = web["warm_ttff_ms"]
        out(
            f"  Chromium playing again in the same page ({len(warm)} times): first picture shown "
            f"p50 {pct(warm, 0.5):.0f} ms, max {max(warm, default=float('nan')):.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--per-process", type=int, default=10)
    parser.add_argument("--stagger", type=float, default=0.1)
    parser.add_argument("--idle-between", type=float, default=5.0)
    parser.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--replays", type=int, default=5, help="Chromium plays the camera again this many times")
    parser.add_argument(
        "--strip-filler",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="liveview's default; off here so that every viewer gets the camera's whole 2 Mbit/s",
    )
    parser.add_argument(
        "--cold", type=int, default=0, help="first, this many viewers each alone, of an unwatched camera"
    )
    parser.add_argument("--idle-grace", type=float, default=1.0, help="liveview's ARGUS_LIVEVIEW_IDLE_GRACE_S")
    parser.add_argument("--profile", default="", help="run liveview under cProfile, writing this file")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
