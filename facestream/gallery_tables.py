"""The gallery's tables (``people`` and their ``samples``), how a database of an older
version is brought up to date (SQLite files of any version; PostgreSQL from version 4), and
the other owners' tables that follow the gallery's changes in the same transaction
(``Dependent``: history's); and how the gallery's rows are read (``sample_columns``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final, Protocol

import numpy as np

from .db.base import Schema, Statement, collector_paused
from .history_tables import HISTORY_TABLES

SCHEMA_VERSION: Final = 6


def _upgrade(c: sqlite3.Connection) -> None:
    """A gallery file of an older version, brought up to this one. Version 1 kept one
    embedding per person, in the table then called identities. Version 2 kept only a sample's
    thumbnail (a dlib chip); version 3 added the context square and the face's geometry in
    it (old samples keep working without them). Version 5 calls the tables by the names the
    code uses: ``identities`` is ``people``, a sample's ``identity`` its ``person``. Version
    6 adds the ``negatives`` table (created by the statements, like any missing table)."""
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "identities" not in tables:
        return  # a new file, or one of this version
    with c:
        c.execute("BEGIN IMMEDIATE")
        if "embedding" in [r[1] for r in c.execute("PRAGMA table_info(identities)")]:
            c.execute("ALTER TABLE identities RENAME TO identities_v1")
            c.execute("DROP INDEX IF EXISTS identities_email")
            for statement in SCHEMA.statements:
                c.execute(statement)
            c.execute(
                "INSERT INTO people (hash, name, email_hmac, created_at, updated_at) "
                "SELECT hash, name, email_hmac, created_at, updated_at FROM identities_v1"
            )
            c.execute(
                "INSERT INTO samples (person, model, dim, embedding, crop, source, created_at)"
                " SELECT hash, model, dim, embedding, NULL, 'import', created_at "
                "FROM identities_v1"
            )
            c.execute("DROP TABLE identities_v1")
            return
        cols = [r[1] for r in c.execute("PRAGMA table_info(samples)")]
        for col, kind in (("context", "BLOB"), ("geometry", "TEXT")):
            if cols and col not in cols:
                c.execute(f"ALTER TABLE samples ADD COLUMN {col} {kind}")
        # SQLite (3.26 and later) follows a renamed table in the references to it.
        c.execute("ALTER TABLE identities RENAME TO people")
        if "identity" in cols:
            c.execute("ALTER TABLE samples RENAME COLUMN identity TO person")
        for old in ("identities_email", "samples_identity"):
            c.execute(f"DROP INDEX IF EXISTS {old}")


#: The same in a PostgreSQL database of version 4 (the first it had); version 6's new table
#: is created by the statements.
_POSTGRES_STEPS: Final = {6: (), 5: (
    "ALTER TABLE identities RENAME TO people",
    "ALTER TABLE samples RENAME COLUMN identity TO person",
    "ALTER INDEX identities_email RENAME TO people_email",
    "ALTER INDEX samples_identity RENAME TO samples_person",
    "ALTER TABLE people RENAME CONSTRAINT identities_pkey TO people_pkey",
    "ALTER TABLE samples RENAME CONSTRAINT samples_identity_fkey TO samples_person_fkey",
)}

SCHEMA: Final = Schema("gallery", SCHEMA_VERSION, (
    """CREATE TABLE IF NOT EXISTS people (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email_hmac  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS people_email ON people (email_hmac)",
    """CREATE TABLE IF NOT EXISTS samples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    person      TEXT NOT NULL REFERENCES people (hash) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    crop        BLOB,
    context     BLOB,
    geometry    TEXT,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS samples_person ON samples (person)",
    # Faces the user said are not this person ("not X"; matching.Negatives), with the crop
    # they were seen in.
    """CREATE TABLE IF NOT EXISTS negatives (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    person      TEXT NOT NULL REFERENCES people (hash) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    crop        BLOB,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS negatives_person ON negatives (person)",
), _upgrade, version_key="schema_version",  # the key galleries have always had
    postgres_steps=_POSTGRES_STEPS)


class Dependent(Protocol):
    """Another owner's tables that name people by hash: created with the gallery's, and
    kept in step with it by the statements these return, which the gallery runs in the same
    transaction as its own change."""

    schema: Schema

    def enrolled(self, person: str, name: str) -> list[Statement]: ...
    def renamed(self, person: str, name: str) -> list[Statement]: ...
    def merged(self, target: str, source: str, name: str) -> list[Statement]: ...
    def deleted(self, person: str) -> list[Statement]: ...


#: Whose tables every gallery keeps in step, in every process: history's visits and stranger
#: groups (a ``faces delete`` from the command line takes the person's visits with them).
DEPENDENTS: Final[tuple[Dependent, ...]] = (HISTORY_TABLES,)


#: A gallery's samples as they are read, by column: ids, people, has_crop, source,
#: created_at, and the embeddings as one matrix (a row per sample).
SampleColumns = tuple[Sequence[int], Sequence[str], Sequence[Any], Sequence[str],
                      Sequence[float], np.ndarray]
#: A gallery as it is read: its samples' columns, and the people's rows ``(hash, name,
#: created_at, has_email)``.
Rows = tuple[SampleColumns, Sequence[Sequence[Any]]]

SAMPLE_ROWS: Final = ("SELECT id, person, dim, embedding, crop IS NOT NULL, source, "
                       "created_at FROM samples")
PERSON_ROWS: Final = ("SELECT hash, name, created_at, email_hmac IS NOT NULL "
                         "FROM people")


def sample_columns(fetched: list[Sequence[Sequence[Any]]]) -> SampleColumns:
    """The columns of the sample rows ``(id, person, dim, embedding, has_crop, source,
    created_at)`` taken out of ``fetched``: the rows and the embeddings' bytes are freed as
    soon as they are split and copied into one matrix (at a million samples they are a
    million tuples and half a gigabyte, gone before the people are read)."""
    with collector_paused():
        rows = fetched.pop()
        sids, owners, dims, blobs, has_crops, sources, created = (
            zip(*rows) if rows else ((),) * 7)
        del rows
        if not sids:
            matrix = np.zeros((0, 0), dtype=np.float32)
        elif len(set(dims)) > 1:  # never written so, but one row must not make the rest fail
            matrix = np.stack([np.frombuffer(b, dtype="<f4") for b in blobs])
        else:
            matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
        return sids, owners, has_crops, sources, created, matrix.astype(np.float32, copy=False)
