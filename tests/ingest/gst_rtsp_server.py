"""A GStreamer RTSP camera for ingest tests: run with Debian's /usr/bin/python3 (python3-gi), not the venv's.

    /usr/bin/python3 tests/ingest/gst_rtsp_server.py --codec h264 --width 640 --height 360 --fps 25

Serves `videotestsrc ! x264enc tune=zerolatency ! rtph264pay` (or x265enc/rtph265pay) as one shared media at
`rtsp://127.0.0.1:<port>/cam` on a random loopback port, and prints one JSON line `{"port": ..., "url": ...}` on
stdout once it answers. GStreamer's RTSP server can crash when clients connect while a shared media starts or
stops, so the script keeps a client of its own attached (an `rtspsrc` pipeline) for as long as it runs. It stops
on SIGTERM, SIGINT or when its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from typing import Any

import gi  # type: ignore[import-not-found]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]  # noqa: E402


def _launch_line(args: argparse.Namespace) -> str:
    source = (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={args.width},height={args.height},"
        f"framerate={args.fps}/1 ! timeoverlay"
    )
    gop = args.fps * 2
    if args.codec == "h265":
        encode = (
            f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={args.bitrate} key-int-max={gop} "
            "! video/x-h265,profile=main ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        encode = (
            f"x264enc tune=zerolatency sliced-threads=false speed-preset=ultrafast bitrate={args.bitrate} "
            f"key-int-max={gop} "
            "! video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    return f"( {source} ! {encode} )"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--codec", choices=("h264", "h265"), default="h264")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--bitrate", type=int, default=800, help="kbit/s")
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--no-keeper", action="store_true", help="do not keep a client of our own attached")
    args = parser.parse_args()

    Gst.init(None)
    loop: Any = GLib.MainLoop()
    server: Any = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    port = _free_port()
    server.set_service(str(port))
    factory: Any = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(_launch_line(args))
    factory.set_shared(True)
    factory.set_eos_shutdown(False)
    factory.set_suspend_mode(GstRtspServer.RTSPSuspendMode.NONE)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(json.dumps({"error": "could not attach the RTSP server"}), flush=True)  # noqa: T201
        return 1
    url = f"rtsp://127.0.0.1:{port}{args.path}"

    keeper: Any = None
    announced = False

    def announce() -> None:
        nonlocal announced
        if not announced:
            announced = True
            print(json.dumps({"port": port, "url": url}), flush=True)  # noqa: T201

    def on_keeper_message(_bus: Any, message: Any) -> None:
        if message.type == Gst.MessageType.ERROR:
            err, _ = message.parse_error()
            print(json.dumps({"keeper_error": str(err)}), file=sys.stderr, flush=True)  # noqa: T201
            loop.quit()

    def announce_once() -> bool:
        announce()
        return False  # an idle callback that runs once

    def keeper_probe(_pad: Any, _info: Any) -> Any:
        GLib.idle_add(announce_once)
        return Gst.PadProbeReturn.REMOVE

    if args.no_keeper:
        announce()
    else:
        depay = "rtph265depay" if args.codec == "h265" else "rtph264depay"
        keeper = Gst.parse_launch(
            f"rtspsrc location={url} protocols=tcp latency=0 ! {depay} name=depay ! fakesink sync=false"
        )
        keeper.get_by_name("depay").get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, keeper_probe)
        bus: Any = keeper.get_bus()
        bus.add_signal_watch()
        bus.connect("message", on_keeper_message)
        keeper.set_state(Gst.State.PLAYING)

    def stop(*_: object) -> bool:
        loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, stop)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, stop)
    GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_HUP | GLib.IO_ERR | GLib.IO_IN, lambda *_: stop())
    try:
        loop.run()
    finally:
        if keeper is not None:
            keeper.set_state(Gst.State.NULL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
