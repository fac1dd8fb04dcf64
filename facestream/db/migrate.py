"""Moving rows from a SQLite file into PostgreSQL: every table in one transaction, numbered
tables continuing after the moved rows, and every count checked. Which tables move, and
whether they may, is for the command that calls it (pgmigrate.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, Final

import asyncpg

from .base import StorageError

#: A table and the columns moved of it.
Table = tuple[str, tuple[str, ...]]
BATCH: Final = 500


def _batches(conn: sqlite3.Connection, table: str, columns: tuple[str, ...]
             ) -> Iterator[list[tuple[Any, ...]]]:
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while rows := cursor.fetchmany(BATCH):
        yield rows


async def copy_tables(source: sqlite3.Connection, conn: asyncpg.Connection,
                      tables: Sequence[Table], numbered: Sequence[str], describe: str
                      ) -> dict[str, int]:
    """Copy ``tables`` (parents first) from ``source`` into ``conn``'s database ``describe``,
    in the caller's transaction; rows per table. New rows of the ``numbered`` tables go on
    after the moved ones; StorageError if a table does not hold what was read."""
    counts: dict[str, int] = {}
    for table, columns in tables:
        counts[table] = 0
        for rows in _batches(source, table, columns):
            await conn.copy_records_to_table(table, records=rows, columns=list(columns))
            counts[table] += len(rows)
    for table in numbered:
        await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
    for table, _ in tables:
        stored = await conn.fetchval(f"SELECT COUNT(*) FROM {table}")
        if stored != counts[table]:
            raise StorageError(f"{table}: {counts[table]} rows read but {stored} in "
                               f"{describe}; nothing was moved")
    return counts
