"""The SQLite file in the data dir: one writer thread owns the connection, a reader thread
reads beside it.

Every call runs on a dedicated thread, so SQLite never blocks the event loop and writes never
race. A write is committed (WAL, synchronous=FULL) before the coroutine returns, so anything
the API acknowledged survives a crash. Changes made by another process (the ``faces`` command
line) are noticed through ``PRAGMA data_version`` (``changed_elsewhere``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .base import META, Change, Conflict, Read, Schema, Statement, collector_paused
from .disk import DiskGuard, check_data_dir, check_gallery_file, storage_error

T = TypeVar("T")

log = logging.getLogger(__name__)


class SqliteDb:
    """A SQLite file: one writer thread owns the connection, a second thread reads through a
    read-only one (WAL lets it read while the writer writes), so SQLite never blocks the event
    loop, a history page never waits behind a write, and writes never race."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.describe = f"the gallery {path}"
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facestream-db")
        self._conn: sqlite3.Connection | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facestream-db-r")
        self._rconn: sqlite3.Connection | None = None
        self._guard: DiskGuard | None = None
        self._data_version = 0
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, fn, *args)
        except sqlite3.IntegrityError as exc:
            raise Conflict(str(exc)) from exc
        except sqlite3.Error as exc:
            mapped = storage_error(self.path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def open(self, schemas: Sequence[Schema]) -> None:
        await self._run(self._open_sync, schemas)

    async def apply(self, schemas: Sequence[Schema]) -> None:
        await self._run(self._apply_sync, schemas)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the database's thread, which did the reading."""
        return await self._run(fn, *args)

    def _open_sync(self, schemas: Sequence[Schema]) -> None:
        check_data_dir(self.path.parent)
        if not DiskGuard.holds(self.path):
            check_gallery_file(self.path)
        created = not self.path.exists()
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        if created:  # biometric data: this user's alone (SQLite's later -wal/-shm follow)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
        self._guard = DiskGuard.acquire(self.path)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Deleted rows are overwritten, not left in free pages until a VACUUM.
        conn.execute("PRAGMA secure_delete=ON")
        self._apply_sync(schemas)
        self._guard.reserve()  # a new file has had its -shm only since the first write

    def _apply_sync(self, schemas: Sequence[Schema]) -> None:
        """Each schema in turn: upgraded if its recorded version is older, its missing tables
        created, its version recorded."""
        assert self._conn is not None
        if self._guard is not None:
            self._guard.reserve()
        c = self._conn
        c.execute(META)
        for schema in schemas:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (schema.key,)).fetchone()
            if row is not None and (newer := schema.newer(int(row[0]), self.describe)):
                raise newer
            if schema.upgrade is not None and (row is None or int(row[0]) < schema.version):
                schema.upgrade(c)
                if row is not None:
                    log.warning("%s: %s tables upgraded from version %s to %d", self.describe,
                                schema.owner, row[0], schema.version)
            for statement in schema.statements:
                c.execute(statement)
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                      (schema.key, str(schema.version)))

    async def snapshot(self, reads: Sequence[Read], mark: bool = False) -> list[Any]:
        """Each read's rows (or what its ``take`` made of them), in one transaction on the
        writer's connection; ``mark``: ``changed_elsewhere`` compares with this one."""
        return await self._run(self._snapshot_sync, reads, mark)

    def _snapshot_sync(self, reads: Sequence[Read], mark: bool) -> list[Any]:
        assert self._conn is not None
        c = self._conn
        results = []
        with collector_paused(), c:
            c.execute("BEGIN")
            if mark:
                self._data_version = c.execute("PRAGMA data_version").fetchone()[0]
            for read in reads:
                fetched = [c.execute(read.sql, read.params).fetchall()]
                results.append(read.take(fetched) if read.take else fetched.pop())
        return results

    async def changed_elsewhere(self) -> bool:
        """Whether another process (the ``faces`` command) committed since the last marked
        snapshot."""
        return await self._run(self._changed_elsewhere_sync)

    def _changed_elsewhere_sync(self) -> bool:
        assert self._conn is not None
        version = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return bool(version != self._data_version)

    def follow(self, apply: Callable[[str, list[str]], Awaitable[None]]) -> None:
        """Other processes' changes are polled (``changed_elsewhere``), not pushed."""

    def status(self) -> dict[str, str]:
        return {"kind": "sqlite", "state": "ok"}

    def _write_sync(self, statements: Sequence[Statement]) -> list[int]:
        """Run statements in one IMMEDIATE transaction; return each one's lastrowid."""
        assert self._conn is not None
        if self._guard is not None:
            self._guard.reserve()  # the -shm may have grown in the last write
        ids = []
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for sql, params in statements:
                cur = self._conn.execute(sql, params)
                ids.append(int(cur.lastrowid or 0))
        return ids

    def _forget_sync(self, statements: Sequence[Statement]) -> None:
        """Delete data for good: secure_delete zeroes it in the database file, and a
        truncating checkpoint drops the write-ahead log that still holds the old pages."""
        assert self._conn is not None
        self._write_sync(statements)
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            # The deletion is committed (and the caller must hear so); only the old pages
            # wait in the log for the next checkpoint.
            log.warning("the deleted data stays in %s-wal until the next checkpoint: %s",
                        self.path, storage_error(self.path, exc) or exc)

    def _read_sync(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._rconn is None:
            self._rconn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0)
            self._rconn.execute("PRAGMA query_only=ON")
        return list(self._rconn.execute(sql, params))

    def _close_reader_sync(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, from the reader connection (never behind a write)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._reader, self._read_sync, sql, params)
        except sqlite3.Error as exc:
            mapped = storage_error(self.path, exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def write(self, statements: Sequence[Statement], change: Change | None = None
                    ) -> list[int]:
        """Run statements in one transaction on the writer; each one's lastrowid."""
        return await self._run(self._write_sync, statements)

    async def forget(self, statements: Sequence[Statement], change: Change | None = None
                     ) -> None:
        """Like ``write``, for deletions that must not stay on disk."""
        await self._run(self._forget_sync, statements)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._guard is not None:  # after the reader and the writer are closed
            self._guard.release()
            self._guard = None

    async def close(self) -> None:
        """Idempotent: close the connections on their own threads, then stop the threads."""
        if self._closed:
            return
        self._closed = True
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._reader, self._close_reader_sync)
            await self._run(self._close_sync)
        finally:
            self._reader.shutdown(wait=True)
            self._writer.shutdown(wait=True)
