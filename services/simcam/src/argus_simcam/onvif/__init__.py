"""ONVIF Device, Media, Media2 and PTZ services of a simulated camera (SOAP 1.2 over HTTP)."""

from argus_simcam.onvif.app import MAX_REQUEST_BYTES, make_onvif_app
from argus_simcam.onvif.camera import FaultFlags, FaultSwitches, OnvifCamera, VideoCodec, VideoProfile

__all__ = [
    "MAX_REQUEST_BYTES",
    "FaultFlags",
    "FaultSwitches",
    "OnvifCamera",
    "VideoCodec",
    "VideoProfile",
    "make_onvif_app",
]
