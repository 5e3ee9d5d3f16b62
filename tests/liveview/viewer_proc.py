"""`python -m tests.liveview.viewer_proc --url URL --job JSON`: WHEP viewers in a process of their own.

The job (JSON) says what to watch: `{"cameras": ["cam1", ...], "count": n, "token": "...", "stream": "main",
"seconds": 10, "decode": false, "stagger_s": 0.05}`; `count` viewers are opened per camera (one after the other,
`stagger_s` apart), watch for `seconds`, and then each prints one JSON line of what it received: the time to its
first frame, frames, keyframes, bytes, packets received and lost (from its RTCP statistics), latencies (decoding
viewers), and whether the session was ended by the server. Decoding viewers (`decode`) read simcam's time code
from every picture; the others count access units without decoding (see whep_client).

Before watching, one `{"event": "ready", ...}` line per viewer tells the parent that its session started, so a test
can act (stop this process with SIGSTOP, for instance) while the viewers watch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from tests.liveview.whep_client import WhepViewer, install_counting_decoder


def emit(item: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(item) + "\n")
    sys.stdout.flush()


async def main(url: str, job: dict[str, Any]) -> int:
    cameras: list[str] = job["cameras"]
    count = int(job.get("count", 1))
    decode = bool(job.get("decode", False))
    seconds = float(job.get("seconds", 10))
    stagger = float(job.get("stagger_s", 0.05))
    if not decode:
        install_counting_decoder()
    viewers: list[WhepViewer] = []
    try:
        for _ in range(count):
            for camera in cameras:
                viewer = WhepViewer(url, camera, job["token"], stream=job.get("stream", "main"))
                viewers.append(viewer)
                ok = await viewer.open()
                emit(
                    {
                        "event": "ready",
                        "camera": camera,
                        "ok": ok,
                        "status": viewer.status,
                        "problem": viewer.problem,
                        "served": viewer.served_stream,
                    }
                )
                if stagger:
                    await asyncio.sleep(stagger)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await asyncio.gather(*(v.ended.wait() for v in viewers))
        for viewer in viewers:
            stats = await viewer.stats()
            summary = viewer.received.summary()
            if not decode:
                summary.pop("codes")
            emit(
                {
                    "event": "result",
                    "camera": viewer.camera,
                    "decode": decode,
                    "ended_by_server": viewer.ended.is_set(),
                    "connection": viewer.pc.connectionState,
                    **stats,
                    **summary,
                }
            )
    finally:
        for viewer in viewers:
            if viewer.location is not None and not viewer.ended.is_set():
                try:
                    await viewer.delete()
                except OSError:
                    pass
            await viewer.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--job", required=True)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.url, json.loads(args.job))))
