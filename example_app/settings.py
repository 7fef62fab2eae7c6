"""Where the app keeps its data, from arguments or (for uvicorn workers) the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditmw import Checkpointing, DirectorySink, load_signing_key, trusted_proxies_from_env

DATA_DIR_ENV = "EXAMPLE_APP_DATA_DIR"
AUDIT_STORE_ENV = "EXAMPLE_APP_AUDIT_STORE"
CHECKPOINT_KEY_ENV = "EXAMPLE_APP_CHECKPOINT_KEY"
TRUSTED_PROXIES_ENV = "AUDITMW_TRUSTED_PROXIES"  # what auditmw.trusted_proxies_from_env reads


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    audit_store: str | None = None  # a path or URL for auditmw.open_store; None: in data_dir
    checkpoint_key: Path | None = None  # a signing key file: signed checkpoints on
    # Reverse proxies whose X-Forwarded-For auditmw reads (docs/deployment.md); none:
    # the client IP is the connecting peer.
    trusted_proxies: tuple[str, ...] = ()

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"

    @property
    def audit_store_target(self) -> str:
        return self.audit_store or str(self.data_dir / "audit.db")

    @property
    def checkpoint_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    def store_options(self) -> dict[str, Any]:
        """Options for ``open_store``: with a key, the store signs checkpoints and writes
        them to ``checkpoint_dir`` too (in production: a directory off this machine)."""
        if self.checkpoint_key is None:
            return {}
        key = load_signing_key(self.checkpoint_key)
        return {"checkpointing": Checkpointing(key, sink=DirectorySink(self.checkpoint_dir))}

    @classmethod
    def from_env(cls) -> Settings:
        """The settings ``python -m example_app`` passes to its uvicorn workers."""
        key = os.environ.get(CHECKPOINT_KEY_ENV)
        return cls(
            data_dir=Path(os.environ.get(DATA_DIR_ENV, "data")),
            audit_store=os.environ.get(AUDIT_STORE_ENV) or None,
            checkpoint_key=Path(key) if key else None,
            trusted_proxies=trusted_proxies_from_env(TRUSTED_PROXIES_ENV),
        )

    def to_env(self) -> dict[str, str]:
        env = {
            DATA_DIR_ENV: str(self.data_dir),
            TRUSTED_PROXIES_ENV: " ".join(self.trusted_proxies),
        }
        if self.audit_store:
            env[AUDIT_STORE_ENV] = self.audit_store
        if self.checkpoint_key is not None:
            env[CHECKPOINT_KEY_ENV] = str(self.checkpoint_key)
        return env
