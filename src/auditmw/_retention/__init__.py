"""Retention: verifiable archives of the entries older than a date (docs/retention.md)."""
