"""The admin app: HTTP API, exports and the dashboard."""
