"""What can go wrong with a PTZ command, each with the stable code a `PtzResult.error` carries."""

from __future__ import annotations

from argus_core.errors import ArgusError


class PtzError(ArgusError):
    """A command that cannot be carried out; `code` is machine-readable, the message says why."""

    code = "failed"


class BadRequest(PtzError):
    code = "bad_request"


class UnknownCamera(PtzError):
    code = "unknown_camera"

    def __init__(self, camera: str) -> None:
        super().__init__(f"camera {camera} is not in the register")
        self.camera = camera


class NoPtz(PtzError):
    code = "no_ptz"

    def __init__(self, camera: str, why: str = "has no PTZ") -> None:
        super().__init__(f"camera {camera} {why}")
        self.camera = camera


class OutOfRange(PtzError):
    """A value outside what the camera accepts; the valid range travels with the refusal."""

    code = "out_of_range"

    def __init__(self, argument: str, value: float, low: float, high: float) -> None:
        super().__init__(f"{argument} {value:g} is outside the valid range [{low:g}, {high:g}]")
        self.argument = argument
        self.value = value
        self.low = low
        self.high = high


class NotFound(PtzError):
    """A preset or tour that does not exist."""

    code = "not_found"


class Busy(PtzError):
    """Too many commands wait for this camera, or the lease could not be settled."""

    code = "busy"


class Unavailable(PtzError):
    """The service is stopping."""

    code = "unavailable"


class OnvifError(PtzError):
    """The camera did not do what was asked; subclasses say why."""

    code = "onvif_error"


class OnvifTimeout(OnvifError):
    code = "onvif_timeout"


class OnvifUnreachable(OnvifError):
    """No connection, or an HTTP error without a SOAP answer (a rebooting camera answers 503)."""

    code = "onvif_unreachable"


class OnvifAuthError(OnvifError):
    code = "onvif_auth"


class OnvifFault(OnvifError):
    """A SOAP fault: `subcodes` (outermost first, e.g. InvalidArgVal/NoToken) and the camera's reason."""

    code = "onvif_fault"

    def __init__(self, operation: str, subcodes: tuple[str, ...], reason: str) -> None:
        codes = "/".join(subcodes) or "fault"
        super().__init__(f"{operation}: the camera answered {codes}: {reason}")
        self.operation = operation
        self.subcodes = subcodes
        self.reason = reason
