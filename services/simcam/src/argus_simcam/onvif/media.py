"""Media services: Media (trt, ver10) and Media2 (tr2, ver20). Profiles, stream URIs and snapshot URIs.

Media ver10 only knows JPEG, MPEG4 and H264; an H.265 profile is listed with Encoding `H265` and no H264
block, as many cameras do, so a Media1 client can tell it is not H.264. Media2 describes H.265 properly.
"""

from __future__ import annotations

from argus_simcam.onvif.camera import VideoCodec, VideoProfile
from argus_simcam.onvif.context import Call, Service, ServiceKind
from argus_simcam.onvif.ptz_service import ptz_configuration
from argus_simcam.onvif.soap import Node, child, child_text, children, invalid_arg, require_child, require_text

__all__ = ["MEDIA2_SERVICE", "MEDIA_SERVICE", "media1_capabilities", "media2_capabilities"]

VIDEO_SOURCE_TOKEN = "VideoSource0"
VIDEO_SOURCE_CONFIGURATION_TOKEN = "VideoSourceConfig0"
_STREAM_URI_TIMEOUT = "PT60S"


def _encoder_token(profile: VideoProfile) -> str:
    return f"VideoEncoder_{profile.token}"


def _sensor(call: Call) -> tuple[int, int]:
    return max((p.width, p.height) for p in call.camera.profiles)


def _video_source_configuration(tag: str, call: Call) -> Node:
    width, height = _sensor(call)
    vsc = Node(tag, attrs={"token": VIDEO_SOURCE_CONFIGURATION_TOKEN})
    vsc.add("tt:Name", "VideoSourceConfig")
    vsc.add("tt:UseCount", len(call.camera.profiles))
    vsc.add("tt:SourceToken", VIDEO_SOURCE_TOKEN)
    vsc.add("tt:Bounds", attrs={"x": 0, "y": 0, "width": width, "height": height})
    return vsc


def _resolution(parent: Node, profile: VideoProfile) -> None:
    resolution = parent.add("tt:Resolution")
    resolution.add("tt:Width", profile.width)
    resolution.add("tt:Height", profile.height)


def _video_encoder1(profile: VideoProfile) -> Node:
    enc = Node("tt:VideoEncoderConfiguration", attrs={"token": _encoder_token(profile)})
    enc.add("tt:Name", f"VideoEncoder {profile.name}")
    enc.add("tt:UseCount", 1)
    enc.add("tt:Encoding", profile.codec.value)
    _resolution(enc, profile)
    enc.add("tt:Quality", 5)
    rate = enc.add("tt:RateControl")
    rate.add("tt:FrameRateLimit", profile.fps)
    rate.add("tt:EncodingInterval", 1)
    rate.add("tt:BitrateLimit", profile.bitrate_kbps)
    if profile.codec is VideoCodec.H264:
        h264 = enc.add("tt:H264")
        h264.add("tt:GovLength", profile.gov_length)
        h264.add("tt:H264Profile", profile.codec_profile)
    multicast = enc.add("tt:Multicast")
    address = multicast.add("tt:Address")
    address.add("tt:Type", "IPv4")
    address.add("tt:IPv4Address", "0.0.0.0")
    multicast.add("tt:Port", 0)
    multicast.add("tt:TTL", 1)
    multicast.add("tt:AutoStart", False)
    enc.add("tt:SessionTimeout", _STREAM_URI_TIMEOUT)
    return enc


def _profile1(tag: str, call: Call, profile: VideoProfile) -> Node:
    node = Node(tag, attrs={"token": profile.token, "fixed": True})
    node.add("tt:Name", profile.name)
    node.append(_video_source_configuration("tt:VideoSourceConfiguration", call))
    node.append(_video_encoder1(profile))
    if call.camera.ptz is not None:
        node.append(ptz_configuration("tt:PTZConfiguration", call, call.camera.ptz))
    return node


def _media_uri(parent: Node, uri: str) -> None:
    media_uri = parent.add("trt:MediaUri")
    media_uri.add("tt:Uri", uri)
    media_uri.add("tt:InvalidAfterConnect", False)
    media_uri.add("tt:InvalidAfterReboot", False)
    media_uri.add("tt:Timeout", _STREAM_URI_TIMEOUT)


# -- Media (ver10) --------------------------------------------------------------------------------------------


def media1_capabilities(call: Call) -> Node:
    caps = Node("trt:Capabilities", attrs={"SnapshotUri": True, "Rotation": False, "VideoSourceMode": False})
    caps.add("trt:ProfileCapabilities", attrs={"MaximumNumberOfProfiles": len(call.camera.profiles)})
    caps.add(
        "trt:StreamingCapabilities",
        attrs={"RTPMulticast": False, "RTP_TCP": True, "RTP_RTSP_TCP": True, "NonAggregateControl": False},
    )
    return caps


def get_service_capabilities(call: Call) -> Node:
    response = Node("trt:GetServiceCapabilitiesResponse")
    response.append(media1_capabilities(call))
    return response


def get_profiles(call: Call) -> Node:
    response = Node("trt:GetProfilesResponse")
    for profile in call.camera.profiles:
        response.append(_profile1("trt:Profiles", call, profile))
    return response


def get_profile(call: Call) -> Node:
    profile = call.profile_arg()
    response = Node("trt:GetProfileResponse")
    response.append(_profile1("trt:Profile", call, profile))
    return response


def get_video_sources(call: Call) -> Node:
    width, height = _sensor(call)
    response = Node("trt:GetVideoSourcesResponse")
    source = response.add("trt:VideoSources", attrs={"token": VIDEO_SOURCE_TOKEN})
    source.add("tt:Framerate", max(p.fps for p in call.camera.profiles))
    resolution = source.add("tt:Resolution")
    resolution.add("tt:Width", width)
    resolution.add("tt:Height", height)
    return response


def get_stream_uri(call: Call) -> Node:
    setup = require_child(call.args, "StreamSetup")
    stream = require_text(setup, "Stream")
    protocol = child_text(require_child(setup, "Transport"), "Protocol")
    profile = call.profile_arg()
    if stream != "RTP-Unicast" or protocol not in {"UDP", "TCP", "RTSP"}:
        raise invalid_arg(
            "InvalidStreamSetup",
            f"only RTP-Unicast over UDP, TCP or RTSP is supported, not {stream} over {protocol}",
        )
    response = Node("trt:GetStreamUriResponse")
    _media_uri(response, call.camera.rtsp_url(profile, call.urls.host))
    return response


def get_snapshot_uri(call: Call) -> Node:
    profile = call.profile_arg()
    response = Node("trt:GetSnapshotUriResponse")
    _media_uri(response, call.snapshot_url(profile))
    return response


MEDIA_SERVICE = Service(
    ServiceKind.MEDIA,
    {
        "GetServiceCapabilities": get_service_capabilities,
        "GetProfiles": get_profiles,
        "GetProfile": get_profile,
        "GetVideoSources": get_video_sources,
        "GetStreamUri": get_stream_uri,
        "GetSnapshotUri": get_snapshot_uri,
    },
)


# -- Media2 (ver20) -------------------------------------------------------------------------------------------

_MEDIA2_TYPES = frozenset(
    {
        "All",
        "VideoSource",
        "VideoEncoder",
        "AudioSource",
        "AudioEncoder",
        "AudioOutput",
        "AudioDecoder",
        "Metadata",
        "Analytics",
        "PTZ",
        "Receiver",
    }
)


def media2_capabilities(call: Call) -> Node:
    caps = Node(
        "tr2:Capabilities",
        attrs={"SnapshotUri": True, "Rotation": False, "VideoSourceMode": False, "OSD": False, "Mask": False},
    )
    supported = "VideoSource VideoEncoder" + (" PTZ" if call.camera.ptz is not None else "")
    caps.add(
        "tr2:ProfileCapabilities",
        attrs={"MaximumNumberOfProfiles": len(call.camera.profiles), "ConfigurationsSupported": supported},
    )
    caps.add(
        "tr2:StreamingCapabilities",
        attrs={"RTSPStreaming": True, "RTPMulticast": False, "RTP_RTSP_TCP": True, "NonAggregateControl": False},
    )
    return caps


def _video_encoder2(profile: VideoProfile) -> Node:
    enc = Node(
        "tr2:VideoEncoder",
        attrs={"token": _encoder_token(profile), "GovLength": profile.gov_length, "Profile": profile.codec_profile},
    )
    enc.add("tt:Name", f"VideoEncoder {profile.name}")
    enc.add("tt:UseCount", 1)
    enc.add("tt:Encoding", profile.codec.value)
    _resolution(enc, profile)
    rate = enc.add("tt:RateControl", attrs={"ConstantBitRate": profile.constant_bitrate})
    rate.add("tt:FrameRateLimit", float(profile.fps))
    rate.add("tt:BitrateLimit", profile.bitrate_kbps)
    enc.add("tt:Quality", 5.0)
    return enc


def media2_get_service_capabilities(call: Call) -> Node:
    response = Node("tr2:GetServiceCapabilitiesResponse")
    response.append(media2_capabilities(call))
    return response


def media2_get_profiles(call: Call) -> Node:
    token = child_text(call.args, "Token")
    types = {(t.text or "").strip() for t in children(call.args, "Type")}
    unknown = types - _MEDIA2_TYPES
    if unknown:
        raise invalid_arg("InvalidArgVal", f"unknown configuration type {sorted(unknown)}")
    everything = "All" in types
    if token is not None:
        chosen = call.camera.profile(token)
        if chosen is None:
            raise invalid_arg("NoProfile", f"no profile with token {token!r}")
        profiles = [chosen]
    else:
        profiles = list(call.camera.profiles)
    response = Node("tr2:GetProfilesResponse")
    for profile in profiles:
        node = response.add("tr2:Profiles", attrs={"token": profile.token, "fixed": True})
        node.add("tr2:Name", profile.name)
        if not types:
            continue
        configurations = node.add("tr2:Configurations")
        if everything or "VideoSource" in types:
            configurations.append(_video_source_configuration("tr2:VideoSource", call))
        if everything or "VideoEncoder" in types:
            configurations.append(_video_encoder2(profile))
        if call.camera.ptz is not None and (everything or "PTZ" in types):
            configurations.append(ptz_configuration("tr2:PTZ", call, call.camera.ptz))
    return response


def media2_get_stream_uri(call: Call) -> Node:
    protocol = require_text(call.args, "Protocol")
    profile = call.profile_arg()
    if protocol not in {"RtspUnicast", "RTSP"}:
        raise invalid_arg("InvalidStreamSetup", f"stream protocol {protocol!r} is not supported; use RtspUnicast")
    response = Node("tr2:GetStreamUriResponse")
    response.add("tr2:Uri", call.camera.rtsp_url(profile, call.urls.host))
    return response


def media2_get_snapshot_uri(call: Call) -> Node:
    profile = call.profile_arg()
    response = Node("tr2:GetSnapshotUriResponse")
    response.add("tr2:Uri", call.snapshot_url(profile))
    return response


def media2_get_video_source_configurations(call: Call) -> Node:
    if child(call.args, "ConfigurationToken") is not None:
        token = require_text(call.args, "ConfigurationToken")
        if token != VIDEO_SOURCE_CONFIGURATION_TOKEN:
            raise invalid_arg("NoConfig", f"no video source configuration {token!r}")
    response = Node("tr2:GetVideoSourceConfigurationsResponse")
    response.append(_video_source_configuration("tr2:Configurations", call))
    return response


MEDIA2_SERVICE = Service(
    ServiceKind.MEDIA2,
    {
        "GetServiceCapabilities": media2_get_service_capabilities,
        "GetProfiles": media2_get_profiles,
        "GetStreamUri": media2_get_stream_uri,
        "GetSnapshotUri": media2_get_snapshot_uri,
        "GetVideoSourceConfigurations": media2_get_video_source_configurations,
    },
)
