"""The app's own database: users, sessions, projects and API keys, in one SQLite file.

It is deliberately plain: the stdlib ``sqlite3`` module, one connection per process, each
call run in a worker thread (``asyncio.to_thread``) under a lock so the event loop never
blocks. Writes use ``BEGIN IMMEDIATE`` so that several processes (``--workers N``) wait
for each other instead of failing with "database is locked".

Secrets are never stored: passwords as salted scrypt hashes, session tokens and API keys
as SHA-256 digests (they are long random strings, so a fast hash is enough).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROLES = ("admin", "member")
DEMO_USERS = (("admin@example.com", "admin", "admin"), ("member@example.com", "member", "member"))
SESSION_LIFETIME = timedelta(days=7)
API_KEY_PREFIX = "amw_"

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users(id)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    role: str


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "description": self.description}


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    name: str
    created_at: str


# Passwords: scrypt with a random salt (stdlib; parameters as recommended by its docs).
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt, expected = stored.split("$")
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), expected)


# Checked when the email is unknown, so that both cases take the same time.
_DUMMY_HASH = hash_password(secrets.token_urlsafe())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Database:
    """``await db.open()`` / ``await db.close()``, or ``async with Database(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await asyncio.to_thread(connection.close)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit BEGIN; transactions are explicit below.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA busy_timeout = 10000")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA foreign_keys = ON")
        self._connection = connection
        with self._write() as db:
            for statement in SCHEMA.split(";"):
                db.execute(statement)
            for email, password, role in DEMO_USERS:  # the demo users, on first start
                if db.execute("SELECT 1 FROM users WHERE email = ?", (email,)).fetchone():
                    continue
                db.execute(
                    "INSERT INTO users (id, email, password_hash, role) VALUES (?, ?, ?, ?)",
                    (f"usr_{secrets.token_hex(6)}", email, hash_password(password), role),
                )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE waits (busy_timeout) for other writers."""
        db = self._require_open()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _require_open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise RuntimeError("the database is not open")
        return self._connection

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:  # one connection, used by one thread at a time
                return fn(*args)

        return await asyncio.to_thread(locked)

    # Users and credentials

    async def check_credentials(self, email: str, password: str) -> User | None:
        """The user with this email and password, or None (scrypt runs in a thread)."""
        row = await self._run(self._user_row, email)
        stored = row["password_hash"] if row else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, password, stored)
        return _user(row) if ok and row else None

    def _user_row(self, email: str) -> sqlite3.Row | None:
        return _fetch_one(self._require_open(), "SELECT * FROM users WHERE email = ?", email)

    async def user_by_email(self, email: str) -> User | None:
        row = await self._run(self._user_row, email)
        return _user(row) if row else None

    async def set_role(self, email: str, role: str) -> tuple[User, str] | None:
        """Give the user a new role: ``(user after, old role)``, or None if unknown."""

        def run() -> tuple[User, str] | None:
            with self._write() as db:
                row = db.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
                if row is None:
                    return None
                db.execute("UPDATE users SET role = ? WHERE id = ?", (role, row["id"]))
                return User(row["id"], row["email"], role), row["role"]

        return await self._run(run)

    # Sessions: the cookie holds a random token, the database only its digest.

    async def create_session(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        expires = (_now() + SESSION_LIFETIME).isoformat()

        def run() -> None:
            with self._write() as db:
                db.execute("DELETE FROM sessions WHERE expires_at < ?", (_now().isoformat(),))
                db.execute(
                    "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                    (_digest(token), user.id, expires),
                )

        await self._run(run)
        return token

    async def user_by_session(self, token: str) -> User | None:
        def run() -> sqlite3.Row | None:
            return _fetch_one(
                self._require_open(),
                "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id"
                " WHERE token_hash = ? AND expires_at > ?",
                _digest(token),
                _now().isoformat(),
            )

        row = await self._run(run)
        return _user(row) if row else None

    async def delete_session(self, token: str) -> None:
        def run() -> None:
            with self._write() as db:
                db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

        await self._run(run)

    # API keys: shown once at creation, stored as a digest.

    async def create_api_key(self, user_id: str, name: str) -> tuple[ApiKey, str]:
        key_id = f"key_{secrets.token_hex(8)}"
        secret = f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, _now().isoformat(timespec="seconds"))

        def run() -> None:
            with self._write() as db:
                db.execute(
                    "INSERT INTO api_keys (id, user_id, name, key_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (key.id, user_id, key.name, _digest(secret), key.created_at),
                )

        await self._run(run)
        return key, secret

    async def user_by_api_key(self, secret: str) -> User | None:
        def run() -> sqlite3.Row | None:
            return _fetch_one(
                self._require_open(),
                "SELECT users.* FROM api_keys JOIN users ON users.id = api_keys.user_id"
                " WHERE key_hash = ?",
                _digest(secret),
            )

        row = await self._run(run)
        return _user(row) if row else None

    # Projects

    async def create_project(self, owner_id: str, name: str, description: str) -> Project:
        def run() -> Project:
            with self._write() as db:
                cursor = db.execute(
                    "INSERT INTO projects (name, description, owner_id) VALUES (?, ?, ?)",
                    (name, description, owner_id),
                )
                assert cursor.lastrowid is not None
                return Project(cursor.lastrowid, name, description)

        return await self._run(run)

    async def get_project(self, project_id: int) -> Project | None:
        def run() -> sqlite3.Row | None:
            return _fetch_one(
                self._require_open(), "SELECT * FROM projects WHERE id = ?", project_id
            )

        row = await self._run(run)
        return Project(row["id"], row["name"], row["description"]) if row else None

    async def update_project(self, project: Project) -> None:
        def run() -> None:
            with self._write() as db:
                db.execute(
                    "UPDATE projects SET name = ?, description = ? WHERE id = ?",
                    (project.name, project.description, project.id),
                )

        await self._run(run)

    async def delete_project(self, project_id: int) -> bool:
        """Delete the project; False when there was none."""

        def run() -> bool:
            with self._write() as db:
                cursor = db.execute("DELETE FROM projects WHERE id = ?", (project_id,))
                return cursor.rowcount > 0

        return await self._run(run)


def _fetch_one(db: sqlite3.Connection, sql: str, *params: object) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(sql, params).fetchone()
    return row


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["email"], row["role"])
