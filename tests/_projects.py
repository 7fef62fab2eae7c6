"""The request body the framework integration tests send to change a project."""

from __future__ import annotations

from pydantic import BaseModel


class ProjectPatch(BaseModel):
    name: str | None = None
    description: str | None = None
