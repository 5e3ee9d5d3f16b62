"""Every fault, produced through FaultState and observed from the client side."""

from __future__ import annotations

import asyncio
import time

import av
import numpy as np
import numpy.typing as npt
import pytest

from argus_simcam.faults import FaultError, FaultEvent, FaultState
from argus_simcam.timecode import STRIP_HEIGHT, read_timecode
from tests.simcam.media_env import SMALL, CameraDef, Env, ffmpeg_decode, ffprobe, simcam
from tests.simcam.rtsp_client import ReceivedUnit, RtpPacket, RtspTestClient, Viewer, decode_units

MODES = ["preencoded", "live"]


def _cam(mode: str = "preencoded", **kwargs: object) -> dict[str, CameraDef]:
    return {"cam": CameraDef(mode=mode, main=SMALL, sub=None, **kwargs)}  # type: ignore[arg-type]


def _below_strip(picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return picture[STRIP_HEIGHT:]


def _high_frequency(picture: npt.NDArray[np.uint8]) -> float:
    body = _below_strip(picture).astype(np.int16)
    return float(np.abs(np.diff(body, axis=1)).mean() + np.abs(np.diff(body, axis=0)).mean())


def test_fault_state_dict_round_trip_and_validation() -> None:
    faults = FaultState()
    events: list[FaultEvent] = []
    remove = faults.add_listener(events.append)
    faults.update({"freeze": True, "cover": [10, 20, 30], "shift": [0.1, -0.2], "corrupt_nal_rate": 0.5})
    state = faults.to_dict()
    assert state["freeze"] is True
    assert state["cover"] == [10, 20, 30]
    assert state["shift"] == [0.1, -0.2]
    assert faults.alters_picture
    again = FaultState()
    again.update(state)  # read-modify-write works
    assert again.to_dict() == state
    for bad in ({"freeze": 1}, {"cover": "pink"}, {"drop_nal_rate": 2}, {"resolution": [641, 360]}, {"nope": 1}):
        with pytest.raises(FaultError):
            faults.update(bad)
    assert faults.freeze  # a failed update changed nothing
    faults.update({"reboot": 0.2, "drop_connections": True})
    assert faults.rebooting
    assert FaultEvent.REBOOT in events
    assert FaultEvent.DROP_CONNECTIONS in events
    faults.update({"clear": True})
    assert faults.to_dict()["rebooting"] is False
    assert faults.to_dict()["freeze"] is False
    remove()
    faults.stall_for(0.05)
    assert faults.stalled
    assert events[-1] == FaultEvent.CHANGED
    time.sleep(0.06)
    assert not faults.stalled


async def test_drop_connections() -> None:
    async with simcam(_cam()) as env:
        async with RtspTestClient(env.url("cam")) as tcp, RtspTestClient(env.url("cam")) as udp:
            await tcp.start("tcp")
            await udp.start("udp")
            assert len(await tcp.units(5)) == 5
            assert len(await udp.units(5)) == 5
            env.faults("cam").drop_connections()
            await tcp.units(10_000, timeout=2.0)
            assert tcp.eof
            with pytest.raises(ConnectionError):
                await udp.request("GET_PARAMETER")
        async with RtspTestClient(env.url("cam")) as again:  # the camera itself is fine
            await again.start("tcp")
            assert len(await again.units(5)) == 5


async def test_stall_stops_packets_but_keeps_the_connection() -> None:
    async with simcam(_cam()) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        await client.units(30)
        env.faults("cam").stall_for(1.5)
        packets: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            got = await client.packet(0.5)
            if got is not None and got[0] == 0:
                packets.append((got[2], got[1]))
        assert not client.eof
        gaps = np.diff([arrival for arrival, _ in packets])
        assert gaps.max() >= 1.4  # silence for the stall
        assert packets[-1][0] > deadline - 1.0  # and packets again after it
        resumed = RtpPacket.parse(packets[int(np.argmax(gaps)) + 1][1], 0.0).payload
        first_nal = resumed[3] if resumed[0] & 0x1F == 24 else resumed[0]  # STAP-A or single NAL unit
        assert first_nal & 0x1F == 7  # it resumed at a keyframe (SPS first)
        assert (await client.request("GET_PARAMETER")).status == 200


@pytest.mark.parametrize("mode", MODES)
async def test_freeze(mode: str) -> None:
    async with simcam(_cam(mode)) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        view = Viewer(client)
        moving = await view.pictures(30)
        assert len({read_timecode(p) for _, p in moving}) == 30
        env.faults("cam").freeze = True
        await view.settle(0.6)
        frozen = await view.pictures(40)
        codes = {read_timecode(p) for _, p in frozen}
        assert len(codes) == 1  # the timecode does not move
        assert None not in codes
        first = frozen[0][1].astype(np.int16)
        for _, picture in frozen[1:]:
            assert np.abs(picture.astype(np.int16) - first).mean() < 1.0
        captures = [u.capture_ns or 0 for u, _ in frozen]
        assert captures == sorted(captures)  # but frames keep coming with new capture times
        assert len(set(captures)) == 40
        env.faults("cam").freeze = False
        await view.settle(2.5)
        thawed = await view.pictures(10)
        assert len({read_timecode(p) for _, p in thawed}) == 10


@pytest.mark.parametrize("mode", MODES)
async def test_cover(mode: str) -> None:
    async with simcam(_cam(mode)) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        view = Viewer(client)
        normal = await view.pictures(5)
        assert _below_strip(normal[-1][1]).std() > 20
        env.faults("cam").cover = "black"
        await view.settle(0.8)
        black = await view.pictures(5)
        for _, picture in black:
            body = _below_strip(picture)
            assert body.std() < 2.0
            assert abs(float(body.mean()) - 16) < 3
            assert read_timecode(picture) is not None  # the OSD is still drawn
        env.faults("cam").cover = (200, 90, 160)
        await view.settle(0.8)
        for _, picture in await view.pictures(5):
            body = _below_strip(picture)
            assert body.std() < 2.0
            assert abs(float(body.mean()) - 200) < 3


@pytest.mark.parametrize("mode", MODES)
async def test_defocus(mode: str) -> None:
    async with simcam(_cam(mode)) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        view = Viewer(client)
        sharp = np.mean([_high_frequency(p) for _, p in await view.pictures(5)])
        env.faults("cam").defocus = True
        await view.settle(0.8)
        blurred = np.mean([_high_frequency(p) for _, p in await view.pictures(5)])
        assert blurred < 0.3 * sharp


def _estimate_dx(before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8], limit: int) -> int:
    a = _below_strip(before)[40:200].astype(np.int16)  # buildings and billboards: static
    b = _below_strip(after)[40:200].astype(np.int16)
    costs = [np.abs(a[:, dx:] - b[:, : b.shape[1] - dx]).mean() for dx in range(limit)]
    return int(np.argmin(costs))


@pytest.mark.parametrize("mode", MODES)
async def test_shift(mode: str) -> None:
    async with simcam(_cam(mode)) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        view = Viewer(client)
        before = (await view.pictures(3))[-1][1]
        env.faults("cam").shift = (0.1, 0.0)  # a tenth of the view to the right: content moves left by 64 px
        await view.settle(0.8)
        after = (await view.pictures(3))[-1][1]
        assert abs(_estimate_dx(before, after, 120) - 64) <= 2


async def test_corrupt_nals_give_decoder_errors() -> None:
    async with simcam(_cam()) as env:
        env.faults("cam").corrupt_nal_rate = 0.5
        code, _, err = await ffmpeg_decode(env.url("cam"), "tcp", 2.0)
        assert err.strip() != ""  # ffmpeg reports decoding errors


async def test_dropped_nals_mean_missing_frames() -> None:
    async with simcam(_cam()) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        view = Viewer(client)
        assert len(await view.pictures(10)) == 10
        env.faults("cam").drop_nal_rate = 1.0
        await client.units(1000, timeout=0.3)
        units = await client.units(100, timeout=1.5)
        assert all(not any((n[0] & 0x1F) in (1, 5) for n in u.nals) for u in units)  # no picture data at all
        env.faults("cam").drop_nal_rate = 0.4
        await client.units(100, timeout=0.5)
        units = await client.units(50)
        ctx = av.CodecContext.create("h264", "r")
        codes, errors = [], 0
        for unit in units:
            try:
                codes += [read_timecode(f) for f in ctx.decode(av.Packet(unit.annexb()))]
            except av.error.InvalidDataError:
                errors += 1
        # a picture whose strip slice was dropped shows a stale time; some pictures are lost entirely
        assert errors or len(set(codes)) < 50


@pytest.mark.parametrize("mode", MODES)
async def test_clock_skew_shows_in_rtcp_and_timecode(mode: str) -> None:
    async with simcam(_cam(mode)) as env:
        env.faults("cam").clock_skew_s = 3600.5
        async with RtspTestClient(env.url("cam")) as client:
            await client.start("udp")
            view = Viewer(client)
            pictures = await view.pictures(60)
            # A report describes a frame captured at most a GOP (2 s) and a little before it arrived.
            report = client.reports[-1]
            offset = report.unix_ns / 1e9 - time.time()
            assert 3600.5 - 5.0 < offset < 3600.5 + 0.1
            unit, picture = pictures[-1]
            assert unit.capture_ns is not None
            assert read_timecode(picture) == unit.capture_ns // 1_000_000
            assert 3600.5 - 5.0 < unit.capture_ns / 1e9 - time.time() < 3600.5 + 0.1


async def _describe_status(env: Env) -> int | None:
    async with RtspTestClient(env.url("cam")) as client:
        try:
            return (await client.request("DESCRIBE")).status
        except ConnectionError:
            return None


async def test_reboot_refuses_then_comes_back() -> None:
    async with simcam(_cam()) as env:
        async with RtspTestClient(env.url("cam")) as client:
            await client.start("tcp")
            await client.units(5)
            env.faults("cam").reboot(2.0)
            await client.units(10_000, timeout=1.0)
            assert client.eof
        assert await _describe_status(env) == 503
        code, _, err = await ffprobe(env.url("cam"), "tcp")
        assert code != 0
        await asyncio.sleep(env.faults("cam").reboot_remaining + 0.1)
        assert await _describe_status(env) == 200
        code, out, err = await ffprobe(env.url("cam"), "tcp")
        assert code == 0, err


async def test_refuse_auth() -> None:
    async with simcam(_cam(credentials=("u", "p"))) as env:
        env.faults("cam").refuse_auth = True
        async with RtspTestClient(env.url("cam"), credentials=("u", "p")) as client:
            assert (await client.request("DESCRIBE")).status == 401
        code, _, err = await ffprobe(env.url("cam", credentials=("u", "p")), "tcp")
        assert "401" in err
        env.faults("cam").refuse_auth = False
        code, _, err = await ffprobe(env.url("cam", credentials=("u", "p")), "tcp")
        assert code == 0, err


async def _wait_for_width(client: RtspTestClient, units: list[ReceivedUnit], width: int, seconds: float) -> list[int]:
    """Receive more units (after `units`) until the last decoded picture is `width` wide or time is up."""
    deadline = time.monotonic() + seconds
    widths: list[int] = []
    while time.monotonic() < deadline:
        units += await client.units(10)
        widths = [f.width for _, f in decode_units(client.codec, units)]
        if widths[-1] == width:
            break
    return widths


@pytest.mark.parametrize("mode", MODES)
async def test_resolution_change_mid_stream(mode: str) -> None:
    async with simcam(_cam(mode)) as env, RtspTestClient(env.url("cam")) as client:
        await client.start("tcp")
        units = await client.units(50)  # one whole decodable run from the first keyframe on
        env.faults("cam").resolution = (480, 272)
        units += await client.units(50)
        widths = [f.width for _, f in decode_units(client.codec, units)]
        assert widths[0] == 640
        assert 480 in widths
        assert widths[-1] == 480
        env.faults("cam").resolution = None
        widths = await _wait_for_width(client, units, 640, 6.0)
        assert widths[-1] == 640
        assert len(widths) == len(units)  # every unit decoded across both switches
        code, out, _ = await ffprobe(env.url("cam"), "tcp")
        assert out.strip() == "h264,640,360"
