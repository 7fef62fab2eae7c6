"""PostgreSQL's errors as the store's: the one mapping (``store_error``) every path of the
PostgreSQL backend goes through, and how an append tells refused data from a lost
connection."""

from __future__ import annotations

import asyncpg

from auditmw._errors import (
    EventRefusedError,
    StorageDamagedError,
    StoreError,
    StoreUnavailableError,
)

# Errors that refuse the rows themselves, not the connection or the statement: another
# batch without the offending row commits. (The driver raises DataError too, for a value
# it cannot encode, before sending anything.)
DATA_REFUSALS = (
    asyncpg.exceptions.DataError,  # 22: a value its type or the encoding does not take
    asyncpg.exceptions.IntegrityConstraintViolationError,  # 23: CHECK, NOT NULL, UNIQUE...
    asyncpg.exceptions.PLPGSQLError,  # P0: RAISE EXCEPTION in a PL/pgSQL trigger
    asyncpg.exceptions.TriggeredActionError,  # 09: a trigger's action failed
    asyncpg.exceptions.ProgramLimitExceededError,  # 54: e.g. an index row too large
)


def refused(exc: Exception) -> EventRefusedError:
    return EventRefusedError(f"PostgreSQL audit store: append refused: {exc}")


def is_data_refusal(exc: Exception) -> bool:
    """True when the server refused the batch because of a value in it (see
    DATA_REFUSALS): the batch did not commit, and smaller batches may."""
    return isinstance(exc, DATA_REFUSALS)


# What asyncpg raises: the server's errors, the client's (a closed connection...) and the
# network's (TimeoutError is an OSError).
DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says "not now": the server could not be reached or did not answer
    in time, or it is shutting down, starting up, out of connections, memory or disk, or
    cancelled a statement or gave up on a lock. The same call may succeed later."""
    return isinstance(
        exc,
        OSError
        | asyncpg.PostgresConnectionError  # class 08, and a connection closed mid-statement
        | asyncpg.exceptions.OperatorInterventionError  # class 57
        | asyncpg.exceptions.InsufficientResourcesError  # class 53
        | asyncpg.exceptions.LockNotAvailableError,
    )


def store_error(message: str, exc: BaseException) -> StoreError:
    """``message: exc`` as ``StorageDamagedError`` for damaged storage,
    ``StoreUnavailableError`` when ``exc`` says "not now", else as ``StoreError``."""
    kind = StoreUnavailableError if is_unavailable(exc) else StoreError
    if isinstance(exc, asyncpg.DataCorruptedError | asyncpg.IndexCorruptedError):
        kind = StorageDamagedError  # pages or indexes PostgreSQL finds corrupted
    return kind(f"{message}: {error_text(exc)}")


def error_text(exc: BaseException) -> str:
    return str(exc) or f"no answer in time ({type(exc).__name__})"


def is_server_refusal(exc: Exception) -> bool:
    """True when the server answered with an error (the batch did not commit); False
    when the connection broke or the client lost track, so the outcome is unknown."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError
    )
