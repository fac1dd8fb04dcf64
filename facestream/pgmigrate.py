"""``facestream gallery migrate --to postgresql://...``: the SQLite gallery into PostgreSQL.

Copies people (with their email HMACs), samples (embeddings, thumbnails, context squares
and geometry, keeping their ids), visits with their images, and the unknowns, in one
transaction, into a database that holds no gallery yet; then notifies running nodes to reload.
The SQLite file is only read (safe while a server uses it) and stays as it was.

Emails stay HMACs: the nodes that use the database must have this data dir's secret
(``storage.secret``, or ``"hex:"`` and the contents of ``DATA_DIR/secret.key``); the database
records which.
Accounts, API tokens and the audit log move too when the database has no accounts yet (a
node started on it first made its own admin: then the database's accounts are kept). Login
sessions do not move: people log in again.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, TextIO

import asyncpg

from .accounts import Auth
from .config import Config
from .db.base import StorageError
from .db.disk import DB_FILE, read_only
from .db.migrate import Table, copy_tables
from .db.postgres import CHANNEL, COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S, notification, where
from .db.sqlite import SqliteDb
from .gallery_tables import DEPENDENTS, SCHEMA
from .gallery_types import GalleryError
from .privacy import SECRET_FILE, load_or_create_secret
from .storage import Gallery

#: Tables and columns moved, parents before children.
TABLES: Final[tuple[Table, ...]] = (
    ("people", ("hash", "name", "email_hmac", "created_at", "updated_at")),
    ("samples", ("id", "person", "model", "dim", "embedding", "crop", "context", "geometry",
                 "source", "created_at")),
    ("negatives", ("id", "person", "model", "dim", "embedding", "crop", "source",
                   "created_at")),
    ("visits", ("id", "person", "known", "name", "camera", "arrived_at", "left_at",
                "quality")),
    ("visit_images", ("visit", "crop", "context", "geometry", "snapshot")),
    ("unknowns", ("hash", "model", "dim", "embedding", "count", "created_at")),
)
#: The accounts' tables (in a gallery only once a server has run on it).
ACCOUNT_TABLES: Final[tuple[Table, ...]] = (
    ("users", ("name", "role", "password", "created_at")),
    ("tokens", ("id", "name", "role", "digest", "created_at")),
    ("audit", ("id", "at", "actor", "action", "status")),
)
#: Tables whose ids the database numbers: new rows continue after the moved ones.
NUMBERED: Final = ("samples", "negatives", "audit")


def _models(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT model FROM samples ORDER BY model")]


@asynccontextmanager
async def _current(db: Path) -> AsyncIterator[sqlite3.Connection]:
    """The gallery file ``db``, read-only, in this version's layout. A file of an older
    version (upgraded only when a server or command opens it) is copied beside itself and
    the copy upgraded, so the file itself is still only read."""
    with read_only(db) as source:
        row = source.execute("SELECT value FROM meta WHERE key = ?", (SCHEMA.key,)).fetchone()
        if row is not None and int(row[0]) >= SCHEMA.version:
            yield source
            return
        fd, name = tempfile.mkstemp(dir=db.parent, prefix=".migrate-", suffix=".sqlite3")
        os.close(fd)  # mode 0600: it holds the faces too
        copy = Path(name)
        try:
            target = sqlite3.connect(copy)
            try:
                source.backup(target)
            finally:
                target.close()
        except BaseException:
            copy.unlink(missing_ok=True)
            raise
    try:
        upgraded = SqliteDb(copy)
        try:
            await upgraded.open([SCHEMA, *(d.schema for d in DEPENDENTS)])
        finally:
            await upgraded.close()
        with read_only(copy) as conn:
            yield conn
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)


async def migrate(db: Path, url: str, model: str, config: Config) -> dict[str, int]:
    """Copy the gallery file ``db`` into the PostgreSQL database ``url``; rows per table."""
    secret = load_or_create_secret(db.parent, config.storage.secret)
    async with _current(db) as source:
        models = _models(source)
        if len(models) > 1:
            raise GalleryError(f"the gallery {db} mixes embeddings of {', '.join(models)}: "
                               "run `facestream reembed` first")
        model = models[0] if models else model
        # Creates the schema, and checks or records which secret the emails were made with.
        gallery = await Gallery.open_url(url, model, config.recognition.policy(model), secret,
                                         check_model=False)
        try:
            await Auth(gallery).ensure_schema()
        finally:
            await gallery.close()
        try:
            conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S,
                                         command_timeout=COMMAND_TIMEOUT_S)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise StorageError(f"cannot reach the gallery database {where(url)}: {exc}"
                               ) from exc
        try:
            return await _copy(source, conn, url)
        finally:
            await conn.close()


async def _copy(source: sqlite3.Connection, conn: asyncpg.Connection, url: str
                ) -> dict[str, int]:
    async with conn.transaction():
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM people) OR "
                               "EXISTS (SELECT 1 FROM visits)"):
            raise GalleryError(f"the database {where(url)} already holds a gallery: migrate "
                               "into an empty database")
        tables = list(TABLES)
        present = {r[0] for r in source.execute("SELECT name FROM sqlite_master")}
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users)"):
            tables += [t for t in ACCOUNT_TABLES if t[0] in present]
        counts = await copy_tables(source, conn, tables, NUMBERED, where(url))
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL,
                           notification("migrate", "reloaded", ()))
    return counts


async def cmd_migrate(config: Config, url: str, out: TextIO, err: TextIO) -> int:
    """The command: one line saying what was moved where, or what went wrong."""
    db = config.data_path / DB_FILE
    if not url.startswith(("postgresql://", "postgres://")):
        print("error: --to needs a URL like postgresql://user@host:5432/database", file=err)
        return 2
    try:
        counts = await migrate(db, url, config.recognition.model, config)
    except GalleryError as exc:
        print(f"error: {exc}", file=err)
        return 1
    moved = ", ".join(f"{n} {table}" for table, n in counts.items())
    secret = ("the same storage.secret as here" if config.storage.secret else
              f'storage.secret = "hex:" followed by the contents of {db.parent / SECRET_FILE}')
    print(f"moved {moved} from {db} into {where(url)}; to use it, give every node "
          f"storage.url and {secret}", file=out)
    return 0
