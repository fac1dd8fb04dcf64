"""The database layer's promises to the tables' owners, on both databases: each owner's
tables are created from its ``Schema`` (upgraded only from an older recorded version), and
the statements an owner adds to a gallery change run in that change's one transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from facestream.config import Config
from facestream.db.base import Conflict, Schema, Statement
from facestream.db.disk import DB_FILE
from facestream.db.sqlite import SqliteDb
from facestream.gallery_tables import DEPENDENTS, Dependent
from facestream.storage import Gallery

from .conftest import Store
from .support import unit

VISIT = ("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at) "
         "VALUES (?, ?, ?, ?, 'cam', 1.0, 2.0)")




async def open_with(store: Store, dependents: tuple[Dependent, ...]) -> Gallery:
    policy = Config().recognition.policy("Dlib")
    if store.url:
        return await Gallery.open_url(store.url, "Dlib", policy, b"k" * 32,
                                      dependents=dependents)
    return await Gallery.open(store.data_dir, "Dlib", policy, b"k" * 32, dependents=dependents)


class Notes:
    """A third owner's table naming people: a note each time one is renamed, and a
    deletion that breaks its own uniqueness rule (the same note twice)."""

    schema = Schema("notes", 1, ("CREATE TABLE IF NOT EXISTS notes (note TEXT PRIMARY KEY)",))

    def enrolled(self, person: str, name: str) -> list[Statement]:
        return []

    def renamed(self, person: str, name: str) -> list[Statement]:
        return [("INSERT INTO notes (note) VALUES (?)", (f"{person} is {name}",))]

    def merged(self, target: str, source: str, name: str) -> list[Statement]:
        return []

    def deleted(self, person: str) -> list[Statement]:
        return [("INSERT INTO notes (note) VALUES (?)", (f"{person} deleted",))] * 2


async def test_an_owner_s_statements_commit_or_fail_with_the_gallery_s_change(
        store: Store) -> None:
    gallery = await open_with(store, (*DEPENDENTS, Notes()))
    try:
        ada = await gallery.add("Ada", unit(1))
        await gallery.db.write([(VISIT, ("v1", ada.hash, 1, "Ada"))])
        await gallery.rename(ada.hash, "Ada L")
        assert await store.rows("SELECT note FROM notes") == [(f"{ada.hash} is Ada L",)]
        assert await store.rows("SELECT name FROM visits") == [("Ada L",)]
        with pytest.raises(Conflict):
            await gallery.delete(ada.hash)
        # Nothing of the deletion happened: not the gallery's, not history's.
        assert await store.rows("SELECT name FROM people") == [("Ada L",)]
        assert await store.rows("SELECT id FROM visits") == [("v1",)]
        assert gallery.get(ada.hash) is not None
    finally:
        await gallery.close()
    meta = dict(await store.rows("SELECT key, value FROM meta WHERE key LIKE 'schema%'"))
    assert meta == {"schema_version": "6", "schema_version:history": "2",
                    "schema_version:notes": "1"}


async def test_a_process_that_never_starts_history_still_keeps_its_tables_in_step(
        store: Store) -> None:
    """As a ``faces`` command does: a deleted person's visits go, an enrolled stranger's
    visits become theirs."""
    gallery = await store.open()
    try:
        ada = await gallery.add("Ada", unit(1))
        stranger = "f7d0" * 16
        await gallery.db.write([(VISIT, ("v1", ada.hash, 1, "Ada")),
                                (VISIT, ("v2", stranger, 0, None))])
        await gallery.delete(ada.hash)
        await gallery.add("Bo", unit(2), person=stranger)
        assert await store.rows("SELECT id, known, name FROM visits") == [("v2", 1, "Bo")]
    finally:
        await gallery.close()


async def test_tables_added_later_number_their_rows(store: Store) -> None:
    gallery = await store.open()
    try:
        await gallery.db.apply([Schema("later", 1, (
            "CREATE TABLE IF NOT EXISTS later (id INTEGER PRIMARY KEY AUTOINCREMENT, x TEXT)",
        ))])
        ids = await gallery.db.write([("INSERT INTO later (x) VALUES (?)", ("a",)),
                                      ("INSERT INTO later (x) VALUES (?)", ("b",))])
        assert ids == [1, 2]
    finally:
        await gallery.close()


async def test_an_upgrade_runs_only_when_the_recorded_version_is_older(tmp_path: Path) -> None:
    upgraded: list[Any] = []

    def schema(version: int) -> Schema:
        return Schema("owner", version, ("CREATE TABLE IF NOT EXISTS t (x TEXT)",),
                      lambda conn: upgraded.append(version))

    for version in (1, 1, 2, 2):
        db = SqliteDb(tmp_path / DB_FILE)
        await db.open([schema(version)])
        await db.close()
    assert upgraded == [1, 2]  # the first opening finds no version: a file of before
    with sqlite3.connect(tmp_path / DB_FILE) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version:owner'"
                            ).fetchall() == [("2",)]
