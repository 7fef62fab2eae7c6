"""Node for the tests that run docs/verify_jsonl.mjs: node 18 or newer on PATH and the
``canonicalize`` package (the RFC 8785 reference implementation) installed in tests/node,
which ``scripts/test`` does with ``npm ci`` when it is missing. Without them those tests
are skipped, unless ``AUDITMW_REQUIRE_NODE`` is set (``scripts/test`` sets it in CI)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ._paths import DOCS, ROOT

NODE_PROJECT = ROOT / "tests" / "node"
VERIFY_MJS = DOCS / "verify_jsonl.mjs"
MIN_NODE_MAJOR = 18


@functools.cache
def _node() -> tuple[str | None, str]:
    """(the node executable, or None and why not)."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not on PATH"
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        return None, f"node {version} is older than {MIN_NODE_MAJOR}"
    if not (NODE_PROJECT / "node_modules" / "canonicalize" / "package.json").is_file():
        return None, "the canonicalize package is not installed (cd tests/node && npm ci)"
    return node, ""


def require_node() -> str:
    """The node executable; skips the test (fails it under AUDITMW_REQUIRE_NODE) without it."""
    node, problem = _node()
    if node is None:
        if os.environ.get("AUDITMW_REQUIRE_NODE"):
            pytest.fail(f"{problem}; AUDITMW_REQUIRE_NODE is set")
        pytest.skip(f"{problem} (scripts/test installs it; AUDITMW_REQUIRE_NODE=1 fails instead)")
    return node


def install_verify_mjs(directory: Path) -> Path:
    """docs/verify_jsonl.mjs copied into ``directory`` next to a ``node_modules`` that holds
    canonicalize, as an auditor sets it up; returns the copy's path."""
    require_node()
    copy = directory / VERIFY_MJS.name
    shutil.copyfile(VERIFY_MJS, copy)
    (directory / "node_modules").symlink_to(NODE_PROJECT / "node_modules", target_is_directory=True)
    return copy
