"""The audit store: one front (AuditStore) over a backend per database."""
