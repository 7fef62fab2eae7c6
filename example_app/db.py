"""The app's own database: users, sessions, projects and API keys, in one SQLite file.

It is deliberately plain: the stdlib ``sqlite3`` module, each call run in a worker thread
(``asyncio.to_thread``) so the event loop never blocks.

Every change happens inside ``async with db.transaction():``, and the handler records
its audit event inside the same block (``example_app.requests.in_transaction``). The
transaction commits only when the block ends normally, which is after the event is
committed: when the audit store cannot take the event, the change is rolled back, and
the 503 the client gets ("not completed") is true. A change outside a transaction is
refused (``RuntimeError``), so none can slip past its event.

- A transaction has a connection of its own: other requests read through the shared
  connection and never see it before it commits (nor join it).
- One transaction at a time per process (an ``asyncio.Lock``, waited for at most
  ``BUSY_TIMEOUT``), and ``BEGIN IMMEDIATE`` across processes (``--workers N``): SQLite
  has one writer at a time anyway, and waiting writers must not hold worker threads.
  Either wait running out raises ``DatabaseBusy``; a failed ``COMMIT`` (disk full, an
  I/O error) rolls back and raises ``CommitFailed``.

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
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ROLES = ("admin", "member")
DEMO_USERS = (("admin@example.com", "admin", "admin"), ("member@example.com", "member", "member"))
SESSION_LIFETIME = timedelta(days=7)
API_KEY_PREFIX = "amw_"
BUSY_TIMEOUT = 10.0  # seconds a change waits for the write lock before DatabaseBusy

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


class DatabaseBusy(Exception):
    """No write transaction could start within ``BUSY_TIMEOUT``: nothing was changed."""


class CommitFailed(Exception):
    """The transaction's ``COMMIT`` failed, and it was rolled back: nothing was changed
    (though the audit events recorded inside it are committed)."""


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


# The transaction in progress in this task (a request), with the database it belongs to.
_current: ContextVar[tuple[Database, sqlite3.Connection] | None] = ContextVar(
    "example_app_transaction", default=None
)


class Database:
    """``await db.open()`` / ``await db.close()``, or ``async with Database(path)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None  # reads outside transactions
        self._lock = threading.Lock()  # that connection, used by one thread at a time
        self._writer = asyncio.Lock()  # one transaction at a time in this process

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

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit BEGIN; transactions are explicit.
        # check_same_thread=False: each call may run in another worker thread.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        connection.execute("PRAGMA foreign_keys = ON")
        return connection

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._connect()
        connection.execute("PRAGMA journal_mode = WAL")
        self._connection = connection
        with self._setup() as db:
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
    def _setup(self) -> Iterator[sqlite3.Connection]:
        """The schema and demo users: a transaction with no audit event (nothing
        happened that a user did)."""
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

    # Transactions

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """A write transaction around the block: changes made in it (and reads, which
        then see them) use its connection; it commits when the block ends normally and
        rolls back when it raises. ``DatabaseBusy`` when it cannot start in time,
        ``CommitFailed`` when the commit fails (see the module docstring)."""
        if _current.get() is not None:
            raise RuntimeError("a transaction is already in progress (they do not nest)")
        self._require_open()
        try:
            async with asyncio.timeout(BUSY_TIMEOUT):
                await self._writer.acquire()
        except TimeoutError:
            raise DatabaseBusy("another change held the database too long") from None
        try:
            connection = await asyncio.to_thread(self._begin)
            token = _current.set((self, connection))
            try:
                yield
            except BaseException:
                await asyncio.to_thread(_roll_back, connection)
                raise
            finally:
                _current.reset(token)
            await asyncio.to_thread(_commit, connection)
        finally:
            self._writer.release()

    def _begin(self) -> sqlite3.Connection:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")  # waits up to busy_timeout for writers
        except sqlite3.OperationalError as exc:
            connection.close()
            if exc.sqlite_errorcode in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise DatabaseBusy("another process held the database too long") from exc
            raise
        return connection

    async def _change(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in the transaction in progress, in a worker thread."""
        current = _current.get()
        if current is None or current[0] is not self:
            raise RuntimeError(
                "change the database inside `async with db.transaction():`, with the "
                "change's audit event, so that neither is committed without the other"
            )
        return await asyncio.to_thread(fn, current[1], *args)

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` in a worker thread: in the transaction in progress,
        if any (to see its changes), else on the shared connection."""
        current = _current.get()
        if current is not None and current[0] is self:
            return await asyncio.to_thread(fn, current[1], *args)

        def locked() -> T:
            with self._lock:
                return fn(self._require_open(), *args)

        return await asyncio.to_thread(locked)

    # Users and credentials

    async def check_credentials(self, email: str, password: str) -> User | None:
        """The user with this email and password, or None (scrypt runs in a thread)."""
        row = await self._read(_user_row, email)
        stored = row["password_hash"] if row else _DUMMY_HASH
        ok = await asyncio.to_thread(check_password, password, stored)
        return _user(row) if ok and row else None

    async def user_by_email(self, email: str) -> User | None:
        row = await self._read(_user_row, email)
        return _user(row) if row else None

    async def set_role(self, email: str, role: str) -> tuple[User, str] | None:
        """Give the user a new role: ``(user after, old role)``, or None if unknown."""

        def run(db: sqlite3.Connection) -> tuple[User, str] | None:
            row = _user_row(db, email)
            if row is None:
                return None
            db.execute("UPDATE users SET role = ? WHERE id = ?", (role, row["id"]))
            return User(row["id"], row["email"], role), row["role"]

        return await self._change(run)

    # Sessions: the cookie holds a random token, the database only its digest.

    async def create_session(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        expires = (_now() + SESSION_LIFETIME).isoformat()

        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (_now().isoformat(),))
            db.execute(
                "INSERT INTO sessions (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (_digest(token), user.id, expires),
            )

        await self._change(run)
        return token

    async def user_by_session(self, token: str) -> User | None:
        row = await self._read(
            _fetch_one,
            "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id"
            " WHERE token_hash = ? AND expires_at > ?",
            _digest(token),
            _now().isoformat(),
        )
        return _user(row) if row else None

    async def delete_session(self, token: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

        await self._change(run)

    # API keys: shown once at creation, stored as a digest.

    async def create_api_key(self, user_id: str, name: str) -> tuple[ApiKey, str]:
        key_id = f"key_{secrets.token_hex(8)}"
        secret = f"{API_KEY_PREFIX}{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, _now().isoformat(timespec="seconds"))

        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO api_keys (id, user_id, name, key_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key.id, user_id, key.name, _digest(secret), key.created_at),
            )

        await self._change(run)
        return key, secret

    async def user_by_api_key(self, secret: str) -> User | None:
        row = await self._read(
            _fetch_one,
            "SELECT users.* FROM api_keys JOIN users ON users.id = api_keys.user_id"
            " WHERE key_hash = ?",
            _digest(secret),
        )
        return _user(row) if row else None

    # Projects

    async def create_project(self, owner_id: str, name: str, description: str) -> Project:
        def run(db: sqlite3.Connection) -> Project:
            cursor = db.execute(
                "INSERT INTO projects (name, description, owner_id) VALUES (?, ?, ?)",
                (name, description, owner_id),
            )
            assert cursor.lastrowid is not None
            return Project(cursor.lastrowid, name, description)

        return await self._change(run)

    async def get_project(self, project_id: int) -> Project | None:
        row = await self._read(_fetch_one, "SELECT * FROM projects WHERE id = ?", project_id)
        return Project(row["id"], row["name"], row["description"]) if row else None

    async def update_project(self, project: Project) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE projects SET name = ?, description = ? WHERE id = ?",
                (project.name, project.description, project.id),
            )

        await self._change(run)

    async def delete_project(self, project_id: int) -> bool:
        """Delete the project; False when there was none."""

        def run(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM projects WHERE id = ?", (project_id,))
            return cursor.rowcount > 0

        return await self._change(run)


def _commit(connection: sqlite3.Connection) -> None:
    try:
        connection.execute("COMMIT")
    except sqlite3.Error as exc:
        # A failed COMMIT may leave the transaction open (a deferred constraint): end it.
        _roll_back(connection)
        raise CommitFailed(f"the change was rolled back: {exc}") from exc
    connection.close()


def _roll_back(connection: sqlite3.Connection) -> None:
    try:
        if connection.in_transaction:
            with suppress(sqlite3.Error):  # closing rolls back what is left anyway
                connection.execute("ROLLBACK")
    finally:
        connection.close()


def _fetch_one(db: sqlite3.Connection, sql: str, *params: object) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(sql, params).fetchone()
    return row


def _user_row(db: sqlite3.Connection, email: str) -> sqlite3.Row | None:
    return _fetch_one(db, "SELECT * FROM users WHERE email = ?", email)


def _user(row: sqlite3.Row) -> User:
    return User(row["id"], row["email"], row["role"])
