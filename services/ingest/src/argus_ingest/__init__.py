"""Argus ingest: RTSP from cameras onto the bus, never transcoded."""
