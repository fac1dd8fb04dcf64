"""What every database offers (``Database``), what its owners hand it (``Statement``,
``Read``, ``Schema``), and how it fails (``StorageError``, ``StorageFull``, ``Conflict``)."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

T = TypeVar("T")

#: A statement and its parameters, with ``?`` placeholders (PostgreSQL's backend renumbers
#: them): the SQL every owner speaks to either database.
Statement = tuple[str, tuple[Any, ...]]
#: What a write tells the other nodes sharing the database: an event and the keys it is about
#: (the gallery's: ``("deleted", [hash])``).
Change = tuple[str, Sequence[str]]

#: The table where each owner's schema version is recorded (and PostgreSQL's secret check).
META: Final = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


class Failure(Exception):
    """What facestream reports in one line and goes no further with: to an API client (4xx,
    or 503 / 507 for the database's own below) or on the command line (``error: ...``).

    The gallery's failures derive from it under the name the rest of the program has always
    caught it by (``gallery_types.GalleryError`` is this class), so ``except GalleryError``
    still catches a failing disk, as the server's start-up and the commands rely on."""


class StorageError(Failure):
    """The database file or the disk under it failed (read-only, damaged, I/O errors), or a
    shared database cannot be reached: start-up stops with this line, the API answers 503. A
    failed write changed nothing."""


class StorageFull(StorageError):
    """The disk holding the database is full: the API answers 507; nothing was written."""

    def __init__(self, path: Path, detail: str = "") -> None:
        super().__init__(f"the disk holding {path} is full{detail}: free space and retry")
        self.path = path


class Conflict(Failure):
    """A write broke a uniqueness or reference rule: another writer (a node sharing the
    database, or the ``faces`` command) changed the same rows a moment ago."""


@dataclass(frozen=True)
class Schema:
    """One owner's tables. Opening a database creates those missing (``statements``), first
    bringing an older layout up to date (``upgrade``, when the version recorded under
    ``version_key`` in ``meta`` is older than ``version``), then records ``version``.

    Statements are SQLite's ``CREATE ... IF NOT EXISTS``; PostgreSQL's backend gives them its
    own types. A table whose key is ``INTEGER PRIMARY KEY AUTOINCREMENT`` is numbered by the
    database: an INSERT into it returns the number (``Database.write``)."""

    owner: str
    version: int
    statements: tuple[str, ...]
    #: Rebuilds an older SQLite layout, on the writer's connection, before ``statements``
    #: run (SQLite files are older than PostgreSQL support, and may be of any version).
    upgrade: Callable[[sqlite3.Connection], None] | None = None
    #: The ``meta`` key of the version (by default ``schema_version:OWNER``).
    version_key: str = ""
    #: For a PostgreSQL database: version -> the statements that bring the version before it
    #: up to it, run in the transaction that creates the tables. PostgresDb refuses a
    #: database older than the first step.
    postgres_steps: Mapping[int, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.version_key or f"schema_version:{self.owner}"

    def newer(self, recorded: int, describe: str) -> StorageError | None:
        """The error for a database this version of facestream is too old to open."""
        if recorded <= self.version:
            return None
        return StorageError(
            f"{describe} holds {self.owner} tables of version {recorded}, made by a newer "
            f"facestream than this one (which knows version {self.version}): upgrade "
            "facestream, or restore a backup made before")


@dataclass(frozen=True)
class Read:
    """A query of a ``Database.snapshot``. ``take`` turns its rows into the result off the
    event loop, before the next query runs; it gets them in a one-item list to pop, so that
    the rows are freed as soon as they are turned (a million rows are half a gigabyte)."""

    sql: str
    params: tuple[Any, ...] = ()
    take: Callable[[list[Sequence[Sequence[Any]]]], Any] | None = None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Reading many rows makes millions of new objects, none of them garbage: the cyclic
    collector would start again and again over an ever larger heap (a gallery of 1,000,000
    people opened in 16.5 s with it, 13.0 s without)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


class Database(Protocol):
    """A database its owners share; ``sqlite.SqliteDb`` and ``postgres.PostgresDb`` are the
    two. Writes are ``?``-parameter statements run in one transaction; ``change`` is what the
    other nodes sharing the database are told."""

    describe: str

    async def open(self, schemas: Sequence[Schema]) -> None:
        """Connect, and create or upgrade the owners' tables (in order)."""
    async def apply(self, schemas: Sequence[Schema]) -> None:
        """Create or upgrade more owners' tables, once open."""
    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""
    async def snapshot(self, reads: Sequence[Read], mark: bool = False) -> list[Any]:
        """Each read's rows (or what its ``take`` made of them), all from one consistent
        snapshot; ``mark``: ``changed_elsewhere`` compares with this snapshot."""
    async def write(self, statements: Sequence[Statement], change: Change | None = None
                    ) -> list[int]:
        """Run statements in one transaction; the number each INSERT into a numbered
        table gave its row (0 for the other statements)."""
    async def forget(self, statements: Sequence[Statement], change: Change | None = None
                     ) -> None:
        """Like ``write``, for deletions that must not stay on disk."""
    async def changed_elsewhere(self) -> bool:
        """Whether another process committed since the last marked snapshot."""
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` off the event loop, on the thread that read the snapshots."""
    def follow(self, apply: Callable[[str, list[str]], Awaitable[None]]) -> None:
        """``await apply(event, keys)`` for each change another node commits."""
    def status(self) -> dict[str, str]:
        """For /healthz: the kind of database and its state."""
    async def close(self) -> None:
        """Idempotent."""
