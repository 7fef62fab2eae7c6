"""The auditmw example app: users, sessions, projects and API keys, every change audited.

- ``example_app.app``: the Starlette app (``create_app``), run by ``python -m example_app``;
- ``example_app.litestar_app``: the same app in Litestar (``--framework litestar``);
- ``example_app.db``, ``example_app.auth``, ``example_app.payloads``,
  ``example_app.requests``: the parts both share (the app's own SQLite database,
  authentication, request validation, and ``in_transaction``: each change commits only
  after its audit events).
"""
