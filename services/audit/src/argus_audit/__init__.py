"""Argus audit: tamper-evident, hash-chained log."""
