"""Media2 (ver20). onvif-zeep-async ships no Media2 WSDL, so these requests are written and signed by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from argus_simcam.onvif import make_onvif_app
from tests.simcam.onvif_support import (
    NS,
    PASSWORD,
    USER,
    envelope,
    fault_subcodes,
    make_camera,
    no_leaks,
    post_soap,
    probe_image,
    security_header,
    serve,
)


@pytest.fixture(autouse=True)
async def _no_leaks() -> AsyncIterator[None]:
    async with no_leaks():
        yield


async def test_media2_profiles_stream_and_snapshot_uris() -> None:
    async with serve(make_onvif_app(make_camera())) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/media2_service"

        status, root, content_type = await post_soap(session, url, envelope("<tr2:GetProfiles/>", security_header()))
        assert status == 200
        assert content_type.startswith("application/soap+xml")
        profiles = root.findall("env:Body/tr2:GetProfilesResponse/tr2:Profiles", NS)
        assert [(p.get("token"), p.findtext("tr2:Name", None, NS)) for p in profiles] == [
            ("main", "MainStream"),
            ("sub", "SubStream"),
        ]
        assert all(p.find("tr2:Configurations", NS) is None for p in profiles)  # no Type: no configurations

        body = "<tr2:GetProfiles><tr2:Type>All</tr2:Type></tr2:GetProfiles>"
        status, root, _ = await post_soap(session, url, envelope(body, security_header()))
        assert status == 200
        encoders = root.findall(".//tr2:Profiles/tr2:Configurations/tr2:VideoEncoder", NS)
        assert [
            (
                e.findtext("tt:Encoding", None, NS),
                e.findtext("tt:Resolution/tt:Width", None, NS),
                e.findtext("tt:Resolution/tt:Height", None, NS),
                e.findtext("tt:RateControl/tt:FrameRateLimit", None, NS),
                e.findtext("tt:RateControl/tt:BitrateLimit", None, NS),
                e.get("GovLength"),
            )
            for e in encoders
        ] == [("H264", "1920", "1080", "25", "4096", "50"), ("H265", "640", "360", "15", "512", "50")]
        assert len(root.findall(".//tr2:Configurations/tr2:PTZ", NS)) == 2

        body = "<tr2:GetProfiles><tr2:Token>sub</tr2:Token><tr2:Type>VideoEncoder</tr2:Type></tr2:GetProfiles>"
        status, root, _ = await post_soap(session, url, envelope(body, security_header()))
        assert status == 200
        (only,) = root.findall(".//tr2:Profiles", NS)
        assert only.get("token") == "sub"
        assert only.find("tr2:Configurations/tr2:VideoSource", NS) is None
        assert only.findtext("tr2:Configurations/tr2:VideoEncoder/tt:Encoding", None, NS) == "H265"

        for token in ("main", "sub"):
            body = (
                "<tr2:GetStreamUri><tr2:Protocol>RtspUnicast</tr2:Protocol>"
                f"<tr2:ProfileToken>{token}</tr2:ProfileToken></tr2:GetStreamUri>"
            )
            status, root, _ = await post_soap(session, url, envelope(body, security_header()))
            assert status == 200
            uri = root.findtext("env:Body/tr2:GetStreamUriResponse/tr2:Uri", None, NS)
            assert uri == f"rtsp://127.0.0.1:8554/Gate_1/{token}"

        body = "<tr2:GetSnapshotUri><tr2:ProfileToken>sub</tr2:ProfileToken></tr2:GetSnapshotUri>"
        status, root, _ = await post_soap(session, url, envelope(body, security_header()))
        assert status == 200
        snapshot = root.findtext("env:Body/tr2:GetSnapshotUriResponse/tr2:Uri", None, NS)
        assert snapshot == f"http://127.0.0.1:{port}/onvif/snapshot/sub"
        async with session.get(snapshot, middlewares=(aiohttp.DigestAuthMiddleware(USER, PASSWORD),)) as response:
            assert response.status == 200
            image = await probe_image(await response.read())
        assert (image["codec_name"], image["width"], image["height"]) == ("mjpeg", 160, 90)

        status, root, _ = await post_soap(session, url, envelope("<tr2:GetServiceCapabilities/>", security_header()))
        assert status == 200
        capabilities = root.find(".//tr2:GetServiceCapabilitiesResponse/tr2:Capabilities", NS)
        assert capabilities is not None
        assert capabilities.get("SnapshotUri") == "true"


async def test_media2_faults() -> None:
    async with serve(make_onvif_app(make_camera())) as port, aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{port}/onvif/media2_service"
        cases = [
            (
                "<tr2:GetStreamUri><tr2:Protocol>RtspMulticast</tr2:Protocol>"
                "<tr2:ProfileToken>main</tr2:ProfileToken></tr2:GetStreamUri>",
                ["ter:InvalidArgVal", "ter:InvalidStreamSetup"],
            ),
            (
                "<tr2:GetStreamUri><tr2:Protocol>RtspUnicast</tr2:Protocol>"
                "<tr2:ProfileToken>third</tr2:ProfileToken></tr2:GetStreamUri>",
                ["ter:InvalidArgVal", "ter:NoProfile"],
            ),
            ("<tr2:GetProfiles><tr2:Token>third</tr2:Token></tr2:GetProfiles>", ["ter:InvalidArgVal", "ter:NoProfile"]),
            ("<tr2:GetSnapshotUri/>", ["ter:InvalidArgs"]),
        ]
        for body, expected in cases:
            status, root, _ = await post_soap(session, url, envelope(body, security_header()))
            assert (status, fault_subcodes(root)) == (400, expected), body
        status, root, _ = await post_soap(session, url, envelope("<tr2:CreateProfile/>", security_header()))
        assert (status, fault_subcodes(root)) == (500, ["ter:ActionNotSupported"])
        status, root, _ = await post_soap(session, url, envelope("<tr2:GetProfiles/>", security_header("x", "y")))
        assert (status, fault_subcodes(root)) == (400, ["ter:NotAuthorized"])
