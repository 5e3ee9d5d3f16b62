"""Argus live view: WebRTC (WHEP) to browsers."""
