"""The face gallery: SQLite in the data dir, one writer thread, an in-memory index for matching.

Every database call runs on one dedicated thread that owns the connection, so SQLite never
blocks the event loop and writes never race. A write is committed (WAL, synchronous=FULL)
before the coroutine returns, so anything the API acknowledged survives a crash. After each
commit a fresh immutable ``GalleryIndex`` is swapped in for the live matcher.

The gallery records which model made each embedding and refuses to mix models.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np

from .identity import Embedding, GalleryIndex, face_hash, normalize
from .privacy import email_digest

T = TypeVar("T")

DB_FILE: Final = "gallery.sqlite3"
SCHEMA_VERSION: Final = 1
MAX_NAME_LENGTH: Final = 200

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identities (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email_hmac  TEXT,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS identities_email ON identities (email_hmac);
"""


class GalleryError(Exception):
    """Base for gallery failures the API reports as 4xx."""


class ModelMismatch(GalleryError):
    pass


class AlreadyEnrolled(GalleryError):
    def __init__(self, existing_hash: str, name: str, similarity: float | None) -> None:
        super().__init__(f"this face is already enrolled as {name!r}")
        self.hash = existing_hash
        self.name = name
        self.similarity = similarity


class NotFound(GalleryError):
    pass


@dataclass(frozen=True)
class Identity:
    hash: str
    name: str
    model: str
    created_at: float
    has_email: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "model": self.model,
            "created_at": self.created_at,
            "has_email": self.has_email,
        }


def clean_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise GalleryError("name is required")
    name = " ".join(name.split())
    if len(name) > MAX_NAME_LENGTH:
        raise GalleryError(f"name is longer than {MAX_NAME_LENGTH} characters")
    return name


class Gallery:
    """Enrolled identities for one model. Create with ``await Gallery.open(...)``."""

    def __init__(self, path: Path, model: str, threshold: float, secret: bytes) -> None:
        self.path = path
        self.model = model
        self.threshold = threshold
        self._secret = secret
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="facestream-db")
        self._conn: sqlite3.Connection | None = None
        self._identities: dict[str, Identity] = {}
        self._embeddings: dict[str, Embedding] = {}
        self.index = GalleryIndex.empty()
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[str, Identity], None]] = []
        self._closed = False

    @classmethod
    async def open(cls, data_dir: Path, model: str, threshold: float, secret: bytes) -> Gallery:
        gallery = cls(data_dir / DB_FILE, model, threshold, secret)
        try:
            await gallery._run(gallery._open_sync)
        except BaseException:
            await gallery.close()
            raise
        gallery._rebuild_index()
        return gallery

    # -- writer thread ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, fn, *args)

    def _open_sync(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        self._conn = conn
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        models = [r[0] for r in conn.execute("SELECT DISTINCT model FROM identities")]
        others = [m for m in models if m != self.model]
        if others:
            count = conn.execute(
                "SELECT COUNT(*) FROM identities WHERE model != ?", (self.model,)
            ).fetchone()[0]
            raise ModelMismatch(
                f"the gallery {self.path} holds {count} identities embedded with "
                f"{', '.join(others)} but recognition.model is {self.model}; embeddings of "
                f"different models cannot be compared: set recognition.model = "
                f"\"{others[0]}\" or use another storage.data_dir"
            )
        for row in conn.execute(
            "SELECT hash, name, model, created_at, email_hmac IS NOT NULL, embedding, dim "
            "FROM identities ORDER BY created_at"
        ):
            ident = Identity(row[0], row[1], row[2], row[3], bool(row[4]))
            self._identities[ident.hash] = ident
            self._embeddings[ident.hash] = np.frombuffer(row[5], dtype="<f4").reshape(row[6])

    def _insert_sync(self, ident: Identity, email_hmac: str | None, emb: Embedding) -> None:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT INTO identities (hash, name, email_hmac, model, dim, embedding, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident.hash,
                    ident.name,
                    email_hmac,
                    ident.model,
                    int(emb.shape[0]),
                    np.ascontiguousarray(emb, dtype="<f4").tobytes(),
                    ident.created_at,
                    ident.created_at,
                ),
            )

    def _rename_sync(self, face: str, name: str) -> int:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            cur = self._conn.execute(
                "UPDATE identities SET name = ?, updated_at = ? WHERE hash = ?",
                (name, time.time(), face),
            )
            return cur.rowcount

    def _delete_sync(self, face: str) -> int:
        assert self._conn is not None
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            return self._conn.execute("DELETE FROM identities WHERE hash = ?", (face,)).rowcount

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- public API (event loop) -----------------------------------------------------------

    def on_change(self, listener: Callable[[str, Identity], None]) -> None:
        """Call ``listener(event, identity)`` after each committed change."""
        self._listeners.append(listener)

    def _changed(self, event: str, ident: Identity) -> None:
        self._rebuild_index()
        for listener in self._listeners:
            listener(event, ident)

    def _rebuild_index(self) -> None:
        hashes = list(self._identities)
        if hashes:
            matrix = np.stack([self._embeddings[h] for h in hashes]).astype(np.float32)
        else:
            matrix = np.zeros((0, 0), dtype=np.float32)
        self.index = GalleryIndex(hashes, [self._identities[h].name for h in hashes], matrix)

    def list(self) -> list[Identity]:
        return list(self._identities.values())

    def get(self, face: str) -> Identity | None:
        return self._identities.get(face)

    async def add(
        self,
        name: str,
        embedding: Sequence[float] | Embedding,
        email: str | None = None,
        face: str | None = None,
        model: str | None = None,
    ) -> Identity:
        """Enroll a face. ``face`` keeps a given hash (the prototype's, on import); by default
        the hash is derived from the embedding. Raises AlreadyEnrolled if the face matches an
        enrolled identity, ModelMismatch if ``model`` differs from the gallery's."""
        name = clean_name(name)
        if model is not None and model != self.model:
            raise ModelMismatch(
                f"embedding made by {model} cannot join a gallery of {self.model} embeddings"
            )
        emb = normalize(embedding)
        if self.index.matrix.size and emb.shape[0] != self.index.matrix.shape[1]:
            raise ModelMismatch(
                f"embedding has {emb.shape[0]} dimensions; {self.model} embeddings in this "
                f"gallery have {self.index.matrix.shape[1]}"
            )
        digest = email_digest(self._secret, email) if email and email.strip() else None
        async with self._lock:
            face = face or face_hash(emb)
            if face in self._identities:
                existing = self._identities[face]
                raise AlreadyEnrolled(face, existing.name, 1.0)
            match = self.index.match(emb, self.threshold)
            if match is not None:
                raise AlreadyEnrolled(match.hash, match.name, match.similarity)
            ident = Identity(face, name, self.model, time.time(), digest is not None)
            await self._run(self._insert_sync, ident, digest, emb)
            self._identities[face] = ident
            self._embeddings[face] = emb
            self._changed("added", ident)
            return ident

    async def rename(self, face: str, name: str) -> Identity:
        name = clean_name(name)
        async with self._lock:
            if face not in self._identities or not await self._run(self._rename_sync, face, name):
                raise NotFound(f"no enrolled face with hash {face}")
            old = self._identities[face]
            ident = Identity(face, name, old.model, old.created_at, old.has_email)
            self._identities[face] = ident
            self._changed("renamed", ident)
            return ident

    async def delete(self, face: str) -> Identity:
        async with self._lock:
            if face not in self._identities or not await self._run(self._delete_sync, face):
                raise NotFound(f"no enrolled face with hash {face}")
            ident = self._identities.pop(face)
            self._embeddings.pop(face, None)
            self._changed("deleted", ident)
            return ident

    async def close(self) -> None:
        """Idempotent: close the connection on its own thread, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._close_sync)
        finally:
            self._writer.shutdown(wait=True)
