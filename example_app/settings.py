"""Where the app keeps its data, from arguments or (for uvicorn workers) the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATA_DIR_ENV = "EXAMPLE_APP_DATA_DIR"
AUDIT_STORE_ENV = "EXAMPLE_APP_AUDIT_STORE"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    audit_store: str | None = None  # a path or URL for auditmw.open_store; None: in data_dir

    @property
    def app_db(self) -> Path:
        return self.data_dir / "app.db"

    @property
    def audit_store_target(self) -> str:
        return self.audit_store or str(self.data_dir / "audit.db")

    @classmethod
    def from_env(cls) -> Settings:
        """The settings ``python -m example_app`` passes to its uvicorn workers."""
        return cls(
            data_dir=Path(os.environ.get(DATA_DIR_ENV, "data")),
            audit_store=os.environ.get(AUDIT_STORE_ENV) or None,
        )

    def to_env(self) -> dict[str, str]:
        env = {DATA_DIR_ENV: str(self.data_dir)}
        if self.audit_store:
            env[AUDIT_STORE_ENV] = self.audit_store
        return env
