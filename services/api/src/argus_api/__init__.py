"""Argus API: REST API and control-room console."""
