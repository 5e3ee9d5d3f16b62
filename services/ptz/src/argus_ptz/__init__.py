"""Argus PTZ: ONVIF pan/tilt/zoom with arbitration."""
