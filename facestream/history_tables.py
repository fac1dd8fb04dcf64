"""History's tables, and how they follow the gallery's people.

``visits`` (with their images in ``visit_images``) and ``unknowns`` (the stranger groups)
name people by hash, enrolled or not. History (history.py) stores and reads them; this module
declares them (``SCHEMA``) and says what becomes of them when the gallery enrolls, renames,
merges or deletes a person (``HistoryTables``). The gallery runs those statements in the
same transaction as its own change, so no reader ever sees a deleted person's visits, or a
merged one's under the old hash.

They are apart from history.py because every gallery needs them, in every process: a
``faces delete`` from the command line, which never starts History, still takes the person's
visits with them. The gallery imports this module; history.py imports the gallery.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from .db.base import Schema, Statement

#: Version 2 keeps each visit's decision (decisions.Decision: how like the person named its
#: best face was, the runner-up, the threshold then, and the margin), when a user reviewed
#: it, and where its best face is in the snapshot (``box``: JSON [x, y, w, h] as fractions
#: of the frame's width and height).
_DECISION_COLUMNS: Final = (("score", "REAL"), ("runner", "TEXT"), ("runner_score", "REAL"),
                            ("threshold", "REAL"), ("margin", "REAL"), ("reviewed_at", "REAL"),
                            ("box", "TEXT"))


def _upgrade(c: sqlite3.Connection) -> None:
    """Visits of version 1 get the decision columns (empty: their decisions were not kept)."""
    columns = [r[1] for r in c.execute("PRAGMA table_info(visits)")]
    if not columns:
        return  # a new file
    with c:
        for column, kind in _DECISION_COLUMNS:
            if column not in columns:
                c.execute(f"ALTER TABLE visits ADD COLUMN {column} {kind}")


SCHEMA: Final = Schema("history", 2, (
    """CREATE TABLE IF NOT EXISTS visits (
    id          TEXT PRIMARY KEY,
    person      TEXT NOT NULL,
    known       INTEGER NOT NULL,
    name        TEXT,
    camera      TEXT NOT NULL,
    arrived_at  REAL NOT NULL,
    left_at     REAL,
    quality     REAL,
    score       REAL,
    runner      TEXT,
    runner_score REAL,
    threshold   REAL,
    margin      REAL,
    reviewed_at REAL,
    box         TEXT
)""",
    "CREATE INDEX IF NOT EXISTS visits_time ON visits (arrived_at, id)",
    "CREATE INDEX IF NOT EXISTS visits_person ON visits (person, arrived_at)",
    """CREATE TABLE IF NOT EXISTS visit_images (
    visit       TEXT PRIMARY KEY REFERENCES visits (id) ON DELETE CASCADE,
    crop        BLOB,
    context     BLOB,
    geometry    TEXT,
    snapshot    BLOB
)""",
    """CREATE TABLE IF NOT EXISTS unknowns (
    hash        TEXT PRIMARY KEY,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    count       INTEGER NOT NULL,
    created_at  REAL NOT NULL
)""",
), _upgrade, postgres_steps={2: tuple(
    f"ALTER TABLE visits ADD COLUMN IF NOT EXISTS {column} "
    f"{'DOUBLE PRECISION' if kind == 'REAL' else kind}" for column, kind in _DECISION_COLUMNS)})


class HistoryTables:
    """History's part of the gallery's changes (``gallery_tables.Dependent``)."""

    schema = SCHEMA

    def enrolled(self, person: str, name: str) -> list[Statement]:
        # A stranger seen before (enrolled from the live view or from history): their visits
        # are this person's now, and their group is gone.
        return [("UPDATE visits SET known = 1, name = ? WHERE person = ?", (name, person)),
                ("DELETE FROM unknowns WHERE hash = ?", (person,))]

    def renamed(self, person: str, name: str) -> list[Statement]:
        return [("UPDATE visits SET name = ? WHERE person = ?", (name, person))]

    def merged(self, target: str, source: str, name: str) -> list[Statement]:
        return [("UPDATE visits SET person = ?, name = ? WHERE person = ?",
                 (target, name, source)),
                ("UPDATE visits SET runner = ? WHERE runner = ?", (target, source))]

    def deleted(self, person: str) -> list[Statement]:
        # Their history goes with them: visits, person crops and snapshots.
        return [("DELETE FROM visits WHERE person = ?", (person,))]


HISTORY_TABLES: Final = HistoryTables()
