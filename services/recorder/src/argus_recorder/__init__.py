"""Argus recorder: GOP-aligned segments in S3, indexed in Postgres."""
