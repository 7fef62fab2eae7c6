"""A minimal app on an embedded auditmw SQLite store (the full example comes later)."""
