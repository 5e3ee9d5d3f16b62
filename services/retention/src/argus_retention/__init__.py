"""Argus retention: policy deletion with evidence holds."""
