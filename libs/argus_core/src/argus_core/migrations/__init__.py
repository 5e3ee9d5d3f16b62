"""Versioned SQL migrations of the Argus schema (see argus_core.db)."""
