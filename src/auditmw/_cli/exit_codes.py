"""The exit codes of the ``auditmw`` command line: one table, documented in docs/cli.md."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What an ``auditmw`` run ended with. Every failure also prints one line on standard
    error, never a traceback."""

    OK = 0
    """Done: the log is intact (``verify``), or the command did what it was asked."""

    DAMAGED = 1
    """``verify`` found damage: a finding in the log, its store, its checkpoints or an
    ``--archive``, or (with ``--complete``) an export that is not the whole log;
    ``prune`` was given a damaged archive."""

    USAGE = 2
    """The command cannot run as given: bad arguments, or a file or store that cannot be
    read (missing, not a store, not a key); a prune refused (an archive of other entries,
    a legal hold, a date in the future)."""

    UNAVAILABLE = 3
    """The store is unavailable (its database down, frozen or locked past the store's
    time limits): try again later."""

    MISSING_EXTRA = 4
    """The command needs an optional extra that is not installed, e.g. ``cryptography``
    (``pip install 'auditmw[checkpoints]'``) to make keys or check signatures."""

    REFUSED = 5
    """A stream's destination refused events for good (``auditmw stream``): the stream
    stopped at the refused batch, and its state records why (``auditmw streams``)."""

    INTERRUPTED = 130
    """Stopped with Ctrl-C (128 + SIGINT, as shells report it)."""

    BROKEN_PIPE = 141
    """The reader of standard output went away (e.g. ``| head -1``): stopped quietly,
    nothing is wrong with the log (128 + SIGPIPE, as shells report it)."""
