"""The ONVIF server as onvif-zeep-async (Home Assistant's ONVIF client) and raw SOAP clients see it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator

import aiohttp
import pytest
import zeep.exceptions
from aiohttp import web
from onvif.exceptions import ONVIFAuthError
from onvif.util import is_auth_error

from argus_simcam.onvif import FaultSwitches, make_onvif_app
from tests.simcam.onvif_support import (
    NS,
    PASSWORD,
    USER,
    envelope,
    fault_subcodes,
    make_camera,
    no_leaks,
    onvif_client,
    post_soap,
    probe_image,
    security_header,
    serve,
)

ERROR_NS = "http://www.onvif.org/ver10/error"


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    async with no_leaks():
        yield


def subcodes(fault: zeep.exceptions.Fault) -> list[str]:
    assert all(q.namespace == ERROR_NS for q in fault.subcodes)
    return [q.localname for q in fault.subcodes]


async def test_home_assistant_style_setup() -> None:
    """What HA's ONVIF integration reads when a camera is added, in the same order."""
    camera = make_camera()
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        base = f"http://127.0.0.1:{port}/onvif"
        assert cam.xaddrs == {
            "http://www.onvif.org/ver10/device/wsdl": f"{base}/device_service",
            "http://www.onvif.org/ver10/media/wsdl": f"{base}/media_service",
            "http://www.onvif.org/ver20/media/wsdl": f"{base}/media2_service",
            "http://www.onvif.org/ver20/ptz/wsdl": f"{base}/ptz_service",
        }
        device = await cam.create_devicemgmt_service()

        info = await device.GetDeviceInformation()
        assert (info.Manufacturer, info.Model, info.FirmwareVersion) == ("Argus", "SimCam-PTZ", "2.5.1")
        assert info.SerialNumber == camera.serial_number
        assert info.SerialNumber.startswith("SIM")

        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        clock = await device.GetSystemDateAndTime()
        after = dt.datetime.now(dt.UTC)
        utc = clock.UTCDateTime
        reported = dt.datetime(
            utc.Date.Year, utc.Date.Month, utc.Date.Day, utc.Time.Hour, utc.Time.Minute, utc.Time.Second, tzinfo=dt.UTC
        )
        assert before <= reported <= after
        assert clock.TimeZone.TZ == "UTC0"

        interfaces = await device.GetNetworkInterfaces()
        assert interfaces[0].Enabled
        assert interfaces[0].Info.HwAddress == camera.mac_address

        capabilities = await cam.get_capabilities()
        assert capabilities is not None
        assert capabilities["Media"]["XAddr"] == f"{base}/media_service"
        assert capabilities["Media"]["StreamingCapabilities"]["RTP_RTSP_TCP"] is True
        assert capabilities["PTZ"]["XAddr"] == f"{base}/ptz_service"
        assert capabilities["Events"] is None

        services = await device.GetServices({"IncludeCapability": True})
        assert [s.Namespace for s in services] == list(cam.xaddrs)
        assert all(s.Capabilities is not None for s in services)

        scopes = [s.ScopeItem for s in await device.GetScopes()]
        assert "onvif://www.onvif.org/name/Gate%201" in scopes
        assert "onvif://www.onvif.org/location/city/high_street" in scopes
        assert (await device.GetHostname()).Name == "gate-1"

        media = await cam.create_media_service()
        media_caps = await media.GetServiceCapabilities()
        assert media_caps.SnapshotUri is True
        profiles = await media.GetProfiles()
        summary = [
            (
                p.token,
                p.Name,
                p.VideoEncoderConfiguration.Encoding,
                p.VideoEncoderConfiguration.Resolution.Width,
                p.VideoEncoderConfiguration.Resolution.Height,
                p.VideoEncoderConfiguration.RateControl.FrameRateLimit,
                p.VideoEncoderConfiguration.RateControl.BitrateLimit,
            )
            for p in profiles
        ]
        assert summary == [
            ("main", "MainStream", "H264", 1920, 1080, 25, 4096),
            ("sub", "SubStream", "H265", 640, 360, 15, 512),
        ]
        main = profiles[0]
        assert main.PTZConfiguration.DefaultContinuousPanTiltVelocitySpace is not None
        assert main.VideoSourceConfiguration.SourceToken == "VideoSource0"
        assert (await media.GetProfile({"ProfileToken": "sub"})).Name == "SubStream"
        sources = await media.GetVideoSources()
        assert (sources[0].Resolution.Width, sources[0].Resolution.Height) == (1920, 1080)

        for token in ("main", "sub"):
            request = media.create_type("GetStreamUri")
            request.ProfileToken = token
            request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
            result = await media.GetStreamUri(request)
            assert result.Uri == f"rtsp://127.0.0.1:8554/Gate_1/{token}"

        snapshot_uri = await cam.get_snapshot_uri("main")
        assert snapshot_uri == f"{base}/snapshot/main"
        jpeg = await cam.get_snapshot("main")  # HTTP Digest, as the client does by default
        assert jpeg is not None
        image = await probe_image(jpeg)
        assert (image["codec_name"], image["width"], image["height"]) == ("mjpeg", 480, 270)
        # Basic works too (the client's own basic_auth path trips an aiohttp deprecation warning).
        credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Basic {credentials}"}
            async with session.get(f"{base}/snapshot/sub", headers=headers) as response:
                assert response.status == 200
                image = await probe_image(await response.read())
        assert (image["width"], image["height"]) == (160, 90)


async def test_stream_setup_that_is_not_supported_is_refused() -> None:
    async with serve(make_onvif_app(make_camera())) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        media = await cam.create_media_service()
        request = media.create_type("GetStreamUri")
        request.ProfileToken = "main"
        request.StreamSetup = {"Stream": "RTP-Multicast", "Transport": {"Protocol": "UDP"}}
        with pytest.raises(zeep.exceptions.Fault) as info:
            await media.GetStreamUri(request)
        assert subcodes(info.value) == ["InvalidArgVal", "InvalidStreamSetup"]
        request.StreamSetup = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}
        request.ProfileToken = "nope"
        with pytest.raises(zeep.exceptions.Fault) as info:
            await media.GetStreamUri(request)
        assert subcodes(info.value) == ["InvalidArgVal", "NoProfile"]
        assert info.value.code == "env:Sender"


async def test_wrong_password_is_not_authorized() -> None:
    async with (
        serve(make_onvif_app(make_camera())) as port,
        onvif_client(port, password="wrong") as cam,
    ):
        with pytest.raises(zeep.exceptions.Fault) as info:
            await cam.update_xaddrs()
        assert subcodes(info.value) == ["NotAuthorized"]
        assert info.value.code == "env:Sender"
        assert is_auth_error(info.value)  # how Home Assistant recognises it
        # The clock stays readable without credentials, as on real cameras.
        device = await cam.create_devicemgmt_service()
        assert (await device.authless_GetSystemDateAndTime()).DateTimeType == "NTP"
    async with serve(make_onvif_app(make_camera())) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/snapshot/main"
        async with session.get(url, middlewares=(aiohttp.DigestAuthMiddleware(USER, "wrong"),)) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Digest ")
        async with session.get(url) as response:
            assert response.status == 401


async def test_skewed_camera_clock_needs_the_client_to_adjust() -> None:
    camera = make_camera(clock_offset=3600.0)
    async with serve(make_onvif_app(camera)) as port:
        async with onvif_client(port) as cam:
            with pytest.raises(zeep.exceptions.Fault) as info:
                await cam.update_xaddrs()
            assert subcodes(info.value) == ["NotAuthorized"]
        async with onvif_client(port, adjust_time=True) as cam:
            await cam.update_xaddrs()
            assert cam.dt_diff is not None
            assert abs(cam.dt_diff.total_seconds() - 3600) < 3
            device = await cam.create_devicemgmt_service()
            assert (await device.GetDeviceInformation()).Model == "SimCam-PTZ"


async def test_unknown_operation_is_action_not_supported() -> None:
    async with serve(make_onvif_app(make_camera())) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        device = await cam.create_devicemgmt_service()
        with pytest.raises(zeep.exceptions.Fault) as info:
            await device.GetUsers()
        assert info.value.code == "env:Receiver"
        assert subcodes(info.value) == ["ActionNotSupported"]


async def test_camera_without_ptz_has_no_ptz_service() -> None:
    camera = make_camera()
    camera.ptz = None
    async with serve(make_onvif_app(camera)) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        assert "http://www.onvif.org/ver20/ptz/wsdl" not in cam.xaddrs
        media = await cam.create_media_service()
        assert (await media.GetProfiles())[0].PTZConfiguration is None
        capabilities = await cam.get_capabilities()
        assert capabilities is not None
        assert capabilities["PTZ"] is None


async def test_faults_rebooting_and_refusing_auth() -> None:
    faults = FaultSwitches()
    async with serve(make_onvif_app(make_camera(faults=faults))) as port, onvif_client(port) as cam:
        await cam.update_xaddrs()
        device = await cam.create_devicemgmt_service()
        assert await cam.get_snapshot_uri("main") is not None  # the client caches it

        faults.refuse_auth = True
        with pytest.raises(zeep.exceptions.Fault) as info:
            await device.GetDeviceInformation()
        assert subcodes(info.value) == ["NotAuthorized"]
        assert (await device.GetSystemDateAndTime()).DateTimeType == "NTP"
        with pytest.raises(ONVIFAuthError):
            await cam.get_snapshot("main")
        faults.refuse_auth = False
        assert (await device.GetDeviceInformation()).Manufacturer == "Argus"

        faults.rebooting = True
        with pytest.raises(zeep.exceptions.TransportError) as transport_error:
            await device.GetSystemDateAndTime()
        assert transport_error.value.status_code == 503
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/onvif/snapshot/main") as response:
                assert response.status == 503
        faults.rebooting = False
        assert (await device.GetDeviceInformation()).Manufacturer == "Argus"


async def test_malformed_and_hostile_requests() -> None:
    async with serve(make_onvif_app(make_camera())) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/device_service"

        status, root, content_type = await post_soap(session, url, b"<env:Envelope xmlns:env='x'><unclosed>")
        assert status == 400
        assert content_type.startswith("application/soap+xml")
        assert fault_subcodes(root) == ["ter:WellFormed"]

        bomb = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>' + envelope(
            "<tds:GetDeviceInformation/>"
        ).split(b"?>", 1)[1].replace(b"<env:Body>", b"<env:Body>&lol2;")
        status, root, _ = await post_soap(session, url, bomb)
        assert status == 400
        assert fault_subcodes(root) == ["ter:WellFormed"]

        utf16 = envelope("<tds:GetSystemDateAndTime/>").decode().replace("UTF-8", "UTF-16").encode("utf-16")
        status, root, _ = await post_soap(session, url, utf16)
        assert status == 400

        soap11 = (
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
            b'<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>'
        )
        status, root, _ = await post_soap(session, url, soap11)
        assert status == 500
        assert root.findtext("env:Body/env:Fault/env:Code/env:Value", None, NS) == "env:VersionMismatch"

        status, root, _ = await post_soap(session, url, envelope("<tds:GetSystemDateAndTime/><tds:GetScopes/>"))
        assert status == 400
        assert fault_subcodes(root) == ["ter:InvalidArgs"]

        # Operations of another service at this address are not dispatched.
        status, root, _ = await post_soap(session, url, envelope("<trt:GetProfiles/>", security_header()))
        assert status == 500
        assert fault_subcodes(root) == ["ter:ActionNotSupported"]

        # No credentials at all.
        status, root, _ = await post_soap(session, url, envelope("<tds:GetDeviceInformation/>"))
        assert status == 400
        assert fault_subcodes(root) == ["ter:NotAuthorized"]

        async with session.post(url, data=b"x" * (300 * 1024)) as response:
            assert response.status == 413


async def test_replayed_and_stale_tokens_are_refused() -> None:
    async with serve(make_onvif_app(make_camera())) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/device_service"
        signed = envelope("<tds:GetDeviceInformation/>", security_header())
        status, root, _ = await post_soap(session, url, signed)
        assert status == 200
        assert root.findtext("env:Body/tds:GetDeviceInformationResponse/tds:Model", None, NS) == "SimCam-PTZ"
        status, root, _ = await post_soap(session, url, signed)
        assert status == 400
        assert fault_subcodes(root) == ["ter:NotAuthorized"]

        stale = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
        status, root, _ = await post_soap(
            session, url, envelope("<tds:GetDeviceInformation/>", security_header(created=stale))
        )
        assert status == 400
        assert fault_subcodes(root) == ["ter:NotAuthorized"]

        slightly_off = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)
        status, _, _ = await post_soap(
            session, url, envelope("<tds:GetDeviceInformation/>", security_header(created=slightly_off))
        )
        assert status == 200

        status, _, _ = await post_soap(
            session, url, envelope("<tds:GetDeviceInformation/>", security_header(user="root", password=PASSWORD))
        )
        assert status == 400


async def test_mounted_under_a_prefix_hands_out_prefixed_addresses() -> None:
    root_app = web.Application()
    root_app.add_subapp("/cams/east", make_onvif_app(make_camera("East")))
    root_app.add_subapp("/cams/west", make_onvif_app(make_camera("West")))
    async with serve(root_app) as port, aiohttp.ClientSession() as session:
        for name in ("east", "west"):
            url = f"http://127.0.0.1:{port}/cams/{name}/onvif/device_service"
            body = "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>"
            status, root, _ = await post_soap(session, url, envelope(body, security_header()))
            assert status == 200
            xaddrs = [x.text for x in root.iterfind(".//tds:Service/tds:XAddr", NS)]
            base = f"http://127.0.0.1:{port}/cams/{name}/onvif"
            assert xaddrs == [f"{base}/{s}_service" for s in ("device", "media", "media2", "ptz")]

            media_url = f"{base}/media_service"
            body = "<trt:GetSnapshotUri><trt:ProfileToken>main</trt:ProfileToken></trt:GetSnapshotUri>"
            status, root, _ = await post_soap(session, media_url, envelope(body, security_header()))
            assert status == 200
            snapshot = root.findtext(".//trt:MediaUri/tt:Uri", None, NS)
            assert snapshot == f"{base}/snapshot/main"
            auth = aiohttp.DigestAuthMiddleware(USER, PASSWORD)
            async with session.get(snapshot, middlewares=(auth,)) as response:
                assert response.status == 200
                assert response.content_type == "image/jpeg"
                assert (await probe_image(await response.read()))["width"] == 480

        # The Host header the client used is what the addresses are built from.
        url = f"http://127.0.0.1:{port}/cams/east/onvif/device_service"
        body = "<tds:GetCapabilities><tds:Category>Media</tds:Category></tds:GetCapabilities>"
        headers = {"Host": "camera.example:8080", "Content-Type": "application/soap+xml"}
        async with session.post(url, data=envelope(body, security_header()), headers=headers) as response:
            text = await response.text()
        assert "http://camera.example:8080/cams/east/onvif/media_service" in text


async def test_preauth_discovery_opens_get_services_only() -> None:
    camera = make_camera(preauth_discovery=True)
    async with serve(make_onvif_app(camera)) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/device_service"
        body = "<tds:GetServices><tds:IncludeCapability>true</tds:IncludeCapability></tds:GetServices>"
        status, root, _ = await post_soap(session, url, envelope(body))
        assert status == 200
        assert root.find(".//tds:Service/tds:Capabilities/tptz:Capabilities", NS) is not None
        status, _, _ = await post_soap(session, url, envelope("<tds:GetDeviceInformation/>"))
        assert status == 400


async def test_many_clients_at_once() -> None:
    async with serve(make_onvif_app(make_camera())) as port:

        async def one() -> str:
            async with onvif_client(port) as cam:
                await cam.update_xaddrs()
                device = await cam.create_devicemgmt_service()
                return str((await device.GetDeviceInformation()).SerialNumber)

        serials = await asyncio.gather(*(one() for _ in range(8)))
        assert len(set(serials)) == 1
