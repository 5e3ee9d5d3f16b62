"""PTZ service (tptz, ver20): one PTZ node and configuration shared by every profile, in the generic spaces."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager

from argus_simcam.onvif.context import Call, Service, ServiceKind
from argus_simcam.onvif.soap import (
    Node,
    SoapFault,
    child,
    child_text,
    format_duration,
    invalid_arg,
    parse_bool,
    parse_duration,
    parse_float,
    require_child,
    require_text,
)
from argus_simcam.ptz import (
    PAN_RANGE,
    SPEED_RANGE,
    TILT_RANGE,
    TRANSLATION_RANGE,
    VELOCITY_RANGE,
    ZOOM_RANGE,
    InvalidPtzArgument,
    PresetNameInUseError,
    PresetNotFoundError,
    PtzArg,
    PtzModel,
    PtzVector,
    TooManyPresetsError,
)

__all__ = ["CONFIGURATION_TOKEN", "NODE_TOKEN", "PTZ_SERVICE", "ptz_capabilities", "ptz_configuration"]

NODE_TOKEN = "PTZNode0"
CONFIGURATION_TOKEN = "PTZConfig0"
_BASE = "http://www.onvif.org/ver10/tptz"
ABS_PT = f"{_BASE}/PanTiltSpaces/PositionGenericSpace"
ABS_Z = f"{_BASE}/ZoomSpaces/PositionGenericSpace"
REL_PT = f"{_BASE}/PanTiltSpaces/TranslationGenericSpace"
REL_Z = f"{_BASE}/ZoomSpaces/TranslationGenericSpace"
CONT_PT = f"{_BASE}/PanTiltSpaces/VelocityGenericSpace"
CONT_Z = f"{_BASE}/ZoomSpaces/VelocityGenericSpace"
SPEED_PT = f"{_BASE}/PanTiltSpaces/GenericSpeedSpace"
SPEED_Z = f"{_BASE}/ZoomSpaces/ZoomGenericSpeedSpace"

_ARG_SUBCODE = {
    PtzArg.POSITION: "InvalidPosition",
    PtzArg.TRANSLATION: "InvalidTranslation",
    PtzArg.VELOCITY: "InvalidVelocity",
    PtzArg.SPEED: "InvalidSpeed",
    PtzArg.PRESET_NAME: "InvalidPresetName",
}


# -- descriptions ---------------------------------------------------------------------------------------------


def _range(parent: Node, tag: str, bounds: tuple[float, float]) -> None:
    r = parent.add(tag)
    r.add("tt:Min", bounds[0])
    r.add("tt:Max", bounds[1])


def _space(parent: Node, tag: str, uri: str, x: tuple[float, float], y: tuple[float, float] | None = None) -> Node:
    space = parent.add(tag)
    space.add("tt:URI", uri)
    _range(space, "tt:XRange", x)
    if y is not None:
        _range(space, "tt:YRange", y)
    return space


def _spaces(parent: Node, tag: str) -> None:
    spaces = parent.add(tag)
    _space(spaces, "tt:AbsolutePanTiltPositionSpace", ABS_PT, PAN_RANGE, TILT_RANGE)
    _space(spaces, "tt:AbsoluteZoomPositionSpace", ABS_Z, ZOOM_RANGE)
    _space(spaces, "tt:RelativePanTiltTranslationSpace", REL_PT, TRANSLATION_RANGE, TRANSLATION_RANGE)
    _space(spaces, "tt:RelativeZoomTranslationSpace", REL_Z, TRANSLATION_RANGE)
    _space(spaces, "tt:ContinuousPanTiltVelocitySpace", CONT_PT, VELOCITY_RANGE, VELOCITY_RANGE)
    _space(spaces, "tt:ContinuousZoomVelocitySpace", CONT_Z, VELOCITY_RANGE)
    _space(spaces, "tt:PanTiltSpeedSpace", SPEED_PT, SPEED_RANGE)
    _space(spaces, "tt:ZoomSpeedSpace", SPEED_Z, SPEED_RANGE)


def ptz_configuration(tag: str, call: Call, model: PtzModel) -> Node:
    """The (only) PTZ configuration, under element name `tag` (tt:PTZConfiguration, tr2:PTZ...)."""
    cfg = Node(tag, attrs={"token": CONFIGURATION_TOKEN})
    cfg.add("tt:Name", "PTZ")
    cfg.add("tt:UseCount", len(call.camera.profiles))
    cfg.add("tt:NodeToken", NODE_TOKEN)
    cfg.add("tt:DefaultAbsolutePantTiltPositionSpace", ABS_PT)
    cfg.add("tt:DefaultAbsoluteZoomPositionSpace", ABS_Z)
    cfg.add("tt:DefaultRelativePanTiltTranslationSpace", REL_PT)
    cfg.add("tt:DefaultRelativeZoomTranslationSpace", REL_Z)
    cfg.add("tt:DefaultContinuousPanTiltVelocitySpace", CONT_PT)
    cfg.add("tt:DefaultContinuousZoomVelocitySpace", CONT_Z)
    speed = cfg.add("tt:DefaultPTZSpeed")
    default = model.limits.default_speed
    speed.add("tt:PanTilt", attrs={"x": default, "y": default, "space": SPEED_PT})
    speed.add("tt:Zoom", attrs={"x": default, "space": SPEED_Z})
    cfg.add("tt:DefaultPTZTimeout", format_duration(model.limits.default_timeout))
    _space(cfg.add("tt:PanTiltLimits"), "tt:Range", ABS_PT, PAN_RANGE, TILT_RANGE)
    _space(cfg.add("tt:ZoomLimits"), "tt:Range", ABS_Z, ZOOM_RANGE)
    return cfg


def _node(tag: str, model: PtzModel) -> Node:
    node = Node(tag, attrs={"token": NODE_TOKEN, "FixedHomePosition": False})
    node.add("tt:Name", "PTZ")
    _spaces(node, "tt:SupportedPTZSpaces")
    node.add("tt:MaximumNumberOfPresets", model.limits.max_presets)
    node.add("tt:HomeSupported", True)
    return node


def ptz_capabilities() -> Node:
    return Node(
        "tptz:Capabilities",
        attrs={
            "EFlip": False,
            "Reverse": False,
            "GetCompatibleConfigurations": False,
            "MoveStatus": True,
            "StatusPosition": True,
        },
    )


def _vector(parent: Node, tag: str, position: PtzVector) -> None:
    vector = parent.add(tag)
    vector.add("tt:PanTilt", attrs={"x": position.pan, "y": position.tilt, "space": ABS_PT})
    vector.add("tt:Zoom", attrs={"x": position.zoom, "space": ABS_Z})


# -- request parsing ------------------------------------------------------------------------------------------


def _model(call: Call) -> PtzModel:
    if call.camera.ptz is None:
        raise SoapFault("Receiver", ("ter:ActionNotSupported", "ter:PTZNotSupported"), "the camera has no PTZ")
    return call.camera.ptz


def _ptz_profile(call: Call) -> PtzModel:
    model = _model(call)
    call.profile_arg()
    return model


def _check_space(element: ET.Element, allowed: str) -> None:
    space = element.get("space")
    if space is not None and space.strip() != allowed:
        raise invalid_arg("SpaceNotSupported", f"space {space!r} is not supported here; use {allowed}")


def _pan_tilt(vector: ET.Element | None, space: str, subcode: str) -> tuple[float, float] | None:
    element = child(vector, "PanTilt")
    if element is None:
        return None
    _check_space(element, space)
    return (
        parse_float(element.get("x"), "PanTilt x", subcode),
        parse_float(element.get("y"), "PanTilt y", subcode),
    )


def _zoom(vector: ET.Element | None, space: str, subcode: str) -> float | None:
    element = child(vector, "Zoom")
    if element is None:
        return None
    _check_space(element, space)
    return parse_float(element.get("x"), "Zoom x", subcode)


def _speeds(call: Call) -> tuple[tuple[float, float] | None, float | None]:
    speed = child(call.args, "Speed")
    return _pan_tilt(speed, SPEED_PT, "InvalidSpeed"), _zoom(speed, SPEED_Z, "InvalidSpeed")


@contextmanager
def _model_errors() -> Iterator[None]:
    """Turn the PTZ model's refusals into the faults ONVIF specifies for them."""
    try:
        yield
    except InvalidPtzArgument as exc:
        if exc.arg is PtzArg.TIMEOUT:
            raise SoapFault("Sender", ("ter:InvalidArgVal",), str(exc)) from exc
        raise invalid_arg(_ARG_SUBCODE[exc.arg], str(exc)) from exc
    except PresetNotFoundError as exc:
        raise invalid_arg("NoToken", str(exc)) from exc
    except PresetNameInUseError as exc:
        raise invalid_arg("PresetExist", str(exc)) from exc
    except TooManyPresetsError as exc:
        raise SoapFault("Receiver", ("ter:Action", "ter:TooManyPresets"), str(exc)) from exc


# -- operations -----------------------------------------------------------------------------------------------


def get_service_capabilities(call: Call) -> Node:
    response = Node("tptz:GetServiceCapabilitiesResponse")
    response.append(ptz_capabilities())
    return response


def get_nodes(call: Call) -> Node:
    response = Node("tptz:GetNodesResponse")
    response.append(_node("tptz:PTZNode", _model(call)))
    return response


def get_node(call: Call) -> Node:
    model = _model(call)
    token = require_text(call.args, "NodeToken")
    if token != NODE_TOKEN:
        raise invalid_arg("NoEntity", f"no PTZ node {token!r}")
    response = Node("tptz:GetNodeResponse")
    response.append(_node("tptz:PTZNode", model))
    return response


def get_configurations(call: Call) -> Node:
    response = Node("tptz:GetConfigurationsResponse")
    response.append(ptz_configuration("tptz:PTZConfiguration", call, _model(call)))
    return response


def _configuration_arg(call: Call, element: str) -> PtzModel:
    model = _model(call)
    token = require_text(call.args, element)
    if token != CONFIGURATION_TOKEN:
        raise invalid_arg("NoConfig", f"no PTZ configuration {token!r}")
    return model


def get_configuration(call: Call) -> Node:
    model = _configuration_arg(call, "PTZConfigurationToken")
    response = Node("tptz:GetConfigurationResponse")
    response.append(ptz_configuration("tptz:PTZConfiguration", call, model))
    return response


def get_configuration_options(call: Call) -> Node:
    model = _configuration_arg(call, "ConfigurationToken")
    response = Node("tptz:GetConfigurationOptionsResponse")
    options = response.add("tptz:PTZConfigurationOptions")
    _spaces(options, "tt:Spaces")
    timeout = options.add("tt:PTZTimeout")
    timeout.add("tt:Min", format_duration(model.limits.min_timeout))
    timeout.add("tt:Max", format_duration(model.limits.max_timeout))
    return response


def continuous_move(call: Call) -> Node:
    model = _ptz_profile(call)
    velocity = require_child(call.args, "Velocity")
    pan_tilt = _pan_tilt(velocity, CONT_PT, "InvalidVelocity")
    zoom = _zoom(velocity, CONT_Z, "InvalidVelocity")
    timeout_text = child_text(call.args, "Timeout")
    timeout = model.limits.default_timeout if timeout_text is None else parse_duration(timeout_text, "Timeout")
    with _model_errors():
        model.continuous_move(pan_tilt, zoom, timeout=timeout)
    return Node("tptz:ContinuousMoveResponse")


def absolute_move(call: Call) -> Node:
    model = _ptz_profile(call)
    position = require_child(call.args, "Position")
    pan_tilt = _pan_tilt(position, ABS_PT, "InvalidPosition")
    zoom = _zoom(position, ABS_Z, "InvalidPosition")
    pan_tilt_speed, zoom_speed = _speeds(call)
    with _model_errors():
        model.absolute_move(pan_tilt, zoom, pan_tilt_speed=pan_tilt_speed, zoom_speed=zoom_speed)
    return Node("tptz:AbsoluteMoveResponse")


def relative_move(call: Call) -> Node:
    model = _ptz_profile(call)
    translation = require_child(call.args, "Translation")
    pan_tilt = _pan_tilt(translation, REL_PT, "InvalidTranslation")
    zoom = _zoom(translation, REL_Z, "InvalidTranslation")
    pan_tilt_speed, zoom_speed = _speeds(call)
    with _model_errors():
        model.relative_move(pan_tilt, zoom, pan_tilt_speed=pan_tilt_speed, zoom_speed=zoom_speed)
    return Node("tptz:RelativeMoveResponse")


def stop(call: Call) -> Node:
    model = _ptz_profile(call)
    pan_tilt = child_text(call.args, "PanTilt")
    zoom = child_text(call.args, "Zoom")
    model.stop(
        pan_tilt=True if pan_tilt is None else parse_bool(pan_tilt, "PanTilt"),
        zoom=True if zoom is None else parse_bool(zoom, "Zoom"),
    )
    return Node("tptz:StopResponse")


def get_status(call: Call) -> Node:
    model = _ptz_profile(call)
    status = model.status()
    response = Node("tptz:GetStatusResponse")
    node = response.add("tptz:PTZStatus")
    _vector(node, "tt:Position", status.position)
    move = node.add("tt:MoveStatus")
    move.add("tt:PanTilt", "MOVING" if status.pan_tilt_moving else "IDLE")
    move.add("tt:Zoom", "MOVING" if status.zoom_moving else "IDLE")
    node.add("tt:UtcTime", call.camera_datetime().isoformat(timespec="seconds").replace("+00:00", "Z"))
    return response


def get_presets(call: Call) -> Node:
    model = _ptz_profile(call)
    response = Node("tptz:GetPresetsResponse")
    for preset in model.presets():
        node = response.add("tptz:Preset", attrs={"token": preset.token})
        node.add("tt:Name", preset.name)
        _vector(node, "tt:PTZPosition", preset.position)
    return response


def set_preset(call: Call) -> Node:
    model = _ptz_profile(call)
    name = child_text(call.args, "PresetName")
    token = child_text(call.args, "PresetToken")
    with _model_errors():
        token = model.set_preset(name=name or None, token=token or None)
    response = Node("tptz:SetPresetResponse")
    response.add("tptz:PresetToken", token)
    return response


def goto_preset(call: Call) -> Node:
    model = _ptz_profile(call)
    token = require_text(call.args, "PresetToken")
    pan_tilt_speed, zoom_speed = _speeds(call)
    with _model_errors():
        model.goto_preset(token, pan_tilt_speed=pan_tilt_speed, zoom_speed=zoom_speed)
    return Node("tptz:GotoPresetResponse")


def remove_preset(call: Call) -> Node:
    model = _ptz_profile(call)
    token = require_text(call.args, "PresetToken")
    with _model_errors():
        model.remove_preset(token)
    return Node("tptz:RemovePresetResponse")


def goto_home_position(call: Call) -> Node:
    model = _ptz_profile(call)
    pan_tilt_speed, zoom_speed = _speeds(call)
    with _model_errors():
        model.goto_home(pan_tilt_speed=pan_tilt_speed, zoom_speed=zoom_speed)
    return Node("tptz:GotoHomePositionResponse")


def set_home_position(call: Call) -> Node:
    model = _ptz_profile(call)
    model.set_home()
    return Node("tptz:SetHomePositionResponse")


PTZ_SERVICE = Service(
    ServiceKind.PTZ,
    {
        "GetServiceCapabilities": get_service_capabilities,
        "GetNodes": get_nodes,
        "GetNode": get_node,
        "GetConfigurations": get_configurations,
        "GetConfiguration": get_configuration,
        "GetConfigurationOptions": get_configuration_options,
        "ContinuousMove": continuous_move,
        "AbsoluteMove": absolute_move,
        "RelativeMove": relative_move,
        "Stop": stop,
        "GetStatus": get_status,
        "GetPresets": get_presets,
        "SetPreset": set_preset,
        "GotoPreset": goto_preset,
        "RemovePreset": remove_preset,
        "GotoHomePosition": goto_home_position,
        "SetHomePosition": set_home_position,
    },
)
