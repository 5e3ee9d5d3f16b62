"""Argus simcam: simulated ONVIF/RTSP cameras with faults on demand."""
