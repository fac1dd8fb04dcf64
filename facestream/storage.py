"""The face gallery: its tables in a ``db.base.Database`` (SQLite in the data dir, or
PostgreSQL shared by several nodes), and an in-memory index for matching.

An identity has a fixed hash (from its first embedding), a name, an optional email HMAC, and
one or more samples: an embedding plus the images of the face it was computed from (a
thumbnail, and a context square with the face's box and landmarks in it: small JPEGs), so the
whole gallery can be re-embedded for another model, each with its own alignment, without
re-enrolling anyone.

Every change is one transaction, committed before the coroutine returns, so anything the API
acknowledged survives a crash; tables of other owners that name identities (history's, see
``Dependent``) change in the same transaction. After each commit a new immutable
``GalleryIndex`` snapshot, derived from the last in milliseconds (``GalleryIndex.replaced``),
is swapped in for the live matcher. Changes made by another process (the ``faces`` command
line) or another node are read back and fire the same events.

The gallery records which model made each embedding and refuses to mix models. A write the
database refuses (``db.base.StorageError``: a full or failing disk, a shared database away)
changes nothing, in the database or in memory.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from .config import Config
from .db.base import Conflict, Database, Read, Schema, Statement, StorageError, collector_paused
from .db.disk import DB_FILE, check_data_dir
from .db.sqlite import SqliteDb
from .gallery_types import (
    NO_IMAGES,
    AlreadyEnrolled,
    BelongsToOther,
    GalleryError,
    Identity,
    LastSample,
    ModelMismatch,
    NotFound,
    Sample,
    SampleRecord,
    StoredImages,
)
from .history_tables import HISTORY_TABLES
from .identity import Embedding, GalleryIndex, OpenSetPolicy, face_hash, normalize
from .names import clean_name
from .privacy import email_digest, load_or_create_secret

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 4
SOURCES: Final = ("upload", "live", "import", "history")


def _upgrade(c: sqlite3.Connection) -> None:
    """A gallery file of an older version, brought up to this one. Version 1 kept one
    embedding per identity, in the identities table. Version 2 kept only a sample's
    thumbnail (a dlib chip); version 3 adds the context square and the face's geometry in it:
    old samples keep working without them."""
    if "embedding" in [r[1] for r in c.execute("PRAGMA table_info(identities)")]:
        with c:
            c.execute("BEGIN IMMEDIATE")
            c.execute("ALTER TABLE identities RENAME TO identities_v1")
            c.execute("DROP INDEX IF EXISTS identities_email")
            for statement in SCHEMA.statements:
                c.execute(statement)
            c.execute(
                "INSERT INTO identities (hash, name, email_hmac, created_at, updated_at) "
                "SELECT hash, name, email_hmac, created_at, updated_at FROM identities_v1"
            )
            c.execute(
                "INSERT INTO samples (identity, model, dim, embedding, crop, source, created_at)"
                " SELECT hash, model, dim, embedding, NULL, 'import', created_at "
                "FROM identities_v1"
            )
            c.execute("DROP TABLE identities_v1")
    cols = [r[1] for r in c.execute("PRAGMA table_info(samples)")]
    if cols:  # (a file without samples gets them with these columns)
        with c:
            for col, kind in (("context", "BLOB"), ("geometry", "TEXT")):
                if col not in cols:
                    c.execute(f"ALTER TABLE samples ADD COLUMN {col} {kind}")


SCHEMA: Final = Schema("gallery", SCHEMA_VERSION, (
    """CREATE TABLE IF NOT EXISTS identities (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email_hmac  TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS identities_email ON identities (email_hmac)",
    """CREATE TABLE IF NOT EXISTS samples (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    identity    TEXT NOT NULL REFERENCES identities (hash) ON DELETE CASCADE,
    model       TEXT NOT NULL,
    dim         INTEGER NOT NULL,
    embedding   BLOB NOT NULL,
    crop        BLOB,
    context     BLOB,
    geometry    TEXT,
    source      TEXT NOT NULL,
    created_at  REAL NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS samples_identity ON samples (identity)",
), _upgrade, version_key="schema_version")  # the key galleries have always had


class Dependent(Protocol):
    """Another owner's tables that name identities by hash: created with the gallery's, and
    kept in step with it by the statements these return, which the gallery runs in the same
    transaction as its own change."""

    schema: Schema

    def enrolled(self, face: str, name: str) -> list[Statement]: ...
    def renamed(self, face: str, name: str) -> list[Statement]: ...
    def merged(self, target: str, source: str, name: str) -> list[Statement]: ...
    def deleted(self, face: str) -> list[Statement]: ...


#: Whose tables every gallery keeps in step, in every process: history's visits and stranger
#: groups (a ``faces delete`` from the command line takes the person's visits with them).
DEPENDENTS: Final[tuple[Dependent, ...]] = (HISTORY_TABLES,)

#: A gallery's samples as they are read, by column: ids, identities, has_crop, source,
#: created_at, and the embeddings as one matrix (a row per sample).
SampleColumns = tuple[Sequence[int], Sequence[str], Sequence[Any], Sequence[str],
                      Sequence[float], np.ndarray]
#: A gallery as it is read: its samples' columns, and the identities' rows ``(hash, name,
#: created_at, has_email)``.
Rows = tuple[SampleColumns, Sequence[Sequence[Any]]]

_SAMPLE_ROWS: Final = ("SELECT id, identity, dim, embedding, crop IS NOT NULL, source, "
                       "created_at FROM samples")
_IDENTITY_ROWS: Final = ("SELECT hash, name, created_at, email_hmac IS NOT NULL "
                         "FROM identities")


def sample_columns(fetched: list[Sequence[Sequence[Any]]]) -> SampleColumns:
    """The columns of the sample rows ``(id, identity, dim, embedding, has_crop, source,
    created_at)`` taken out of ``fetched``: the rows and the embeddings' bytes are freed as
    soon as they are split and copied into one matrix (at a million samples they are a
    million tuples and half a gigabyte, gone before the identities are read)."""
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


def _blob(emb: Embedding) -> bytes:
    return np.ascontiguousarray(emb, dtype="<f4").tobytes()


def _build(read: list[Rows], model: str) -> tuple[dict[str, Identity], dict[int, Embedding],
                                                  dict[int, str], np.ndarray, Sequence[str]]:
    """Identities, embeddings and owners from what was read (taken out of ``read``), plus the
    embedding matrix and each sample's identity, for the index."""
    with collector_paused():
        (sids, owners, has_crops, sources, created, matrix), identity_rows = read.pop()
        samples: dict[str, list[Sample]] = {}
        for sid, ident, has_crop, source, at in zip(sids, owners, has_crops, sources, created):
            samples.setdefault(ident, []).append(Sample(sid, at, source, bool(has_crop)))
        identities = {
            face: Identity(face, name, model, at, bool(has_email), tuple(samples.get(face, ())))
            for face, name, at, has_email in identity_rows
        }
        return identities, dict(zip(sids, matrix)), dict(zip(sids, owners)), matrix, owners


class Gallery:
    """Enrolled identities for one model: kept whole in memory and matched there, stored in a
    ``Database`` (SQLite in the data dir, or PostgreSQL shared by several nodes). Create with
    ``await Gallery.open(...)``, ``Gallery.open_url(...)`` or ``Gallery.for_config(...)``."""

    def __init__(
        self, db: Database, model: str, policy: OpenSetPolicy, secret: bytes,
        strategy: str = "centroid", duplicate_far: float = 1e-6,
        dependents: Sequence[Dependent] = DEPENDENTS,
    ) -> None:
        self.db = db
        self.dependents = tuple(dependents)
        self.model = model
        self.policy = policy
        self.strategy = strategy
        self.duplicate_far = duplicate_far
        self._secret = secret
        self._identities: dict[str, Identity] = {}
        self._embeddings: dict[int, Embedding] = {}  # sample id -> embedding
        self._owner: dict[int, str] = {}  # sample id -> identity hash
        self.index = GalleryIndex.empty(policy, strategy)
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[str, Identity | None], None]] = []

    @classmethod
    async def open(cls, data_dir: Path, model: str, policy: OpenSetPolicy, secret: bytes,
                   **options: Any) -> Gallery:
        """The SQLite gallery in ``data_dir``. ``options``: ``strategy``, ``check_model``
        (refuse a gallery of another model's embeddings; default True), ``duplicate_far``,
        ``dependents`` (default ``DEPENDENTS``)."""
        return await cls._opened(SqliteDb(data_dir / DB_FILE), model, policy, secret,
                                 **options)

    @classmethod
    async def open_url(cls, url: str, model: str, policy: OpenSetPolicy, secret: bytes,
                       **options: Any) -> Gallery:
        """The gallery in the PostgreSQL database ``url``, followed as other nodes change
        it; ``options`` as for ``open``."""
        # asyncpg is imported only by the nodes that use it.
        from .db.postgres import PostgresDb

        return await cls._opened(PostgresDb(url, secret), model, policy, secret, **options)

    @classmethod
    async def _opened(cls, db: Database, model: str, policy: OpenSetPolicy, secret: bytes,
                      strategy: str = "centroid", check_model: bool = True,
                      duplicate_far: float = 1e-6,
                      dependents: Sequence[Dependent] = DEPENDENTS) -> Gallery:
        gallery = cls(db, model, policy, secret, strategy, duplicate_far, dependents)
        try:
            await db.open([SCHEMA, *(d.schema for d in gallery.dependents)])
            if check_model:
                await gallery._check_models()
            await gallery._load()
            db.follow(gallery._follow)
        except BaseException:
            await gallery.close()
            raise
        return gallery

    @classmethod
    async def for_config(
        cls, config: Config, model: str | None = None, check_model: bool = True
    ) -> Gallery:
        """The configured gallery (``storage.url``, or the data dir's SQLite file, created
        private with its secret) for ``model`` (default: the configured one), with that
        model's open-set policy."""
        data_dir = config.data_path
        try:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StorageError(
                f"cannot create the data dir {data_dir} ({exc.strerror}): create it, or choose "
                "another with --data-dir or storage.data_dir") from None
        check_data_dir(data_dir)  # before the secret is written into it
        secret = load_or_create_secret(data_dir, config.storage.secret)
        r = config.recognition
        model = model or r.model
        opener = (functools.partial(cls.open_url, config.storage.url) if config.storage.url
                  else functools.partial(cls.open, data_dir))
        return await opener(model, r.policy(model), secret, strategy=r.matching,
                            check_model=check_model, duplicate_far=r.duplicate_far)

    async def _check_models(self) -> None:
        rows = await self.db.query(
            "SELECT model, COUNT(*) FROM samples WHERE model != ? GROUP BY model", (self.model,))
        if rows:
            others = ", ".join(f"{count} by {model}" for model, count in rows)
            raise ModelMismatch(
                f"{self.db.describe} holds embeddings made {others}, but "
                f"recognition.model is {self.model}; embeddings of different models cannot be "
                f"compared: run `python -m facestream reembed --model {self.model}` to rebuild "
                f"them from the stored face crops, or set recognition.model = \"{rows[0][0]}\""
            )

    async def _load(self) -> None:
        """Read the whole gallery and build its index, off the event loop (at a million
        identities this is seconds of work) and on the database's own thread: the memory
        the reading freed is reused by the building (built on another thread, the same
        million-identity gallery kept 330 MB more of the process's memory)."""
        read = [await self._read()]
        self._identities, self._embeddings, self._owner, self.index = await self.db.run(
            self._built, read)

    async def _read(self, faces: Sequence[str] | None = None) -> Rows:
        """The rows of the identities ``faces`` (all for None), from one snapshot; after
        reading all, ``changed_elsewhere`` compares with it."""
        where, params = "", ()
        if faces is not None:
            where, params = f" WHERE {{}} IN ({', '.join('?' * len(faces))})", tuple(faces)
        columns, identities = await self.db.snapshot([
            Read(f"{_SAMPLE_ROWS}{where.format('identity')} ORDER BY id", params,
                 sample_columns),
            Read(f"{_IDENTITY_ROWS}{where.format('hash')} ORDER BY created_at", params),
        ], mark=faces is None)
        return columns, identities

    def _built(self, read: list[Rows]) -> tuple[dict[str, Identity], dict[int, Embedding],
                                                 dict[int, str], GalleryIndex]:
        identities, embeddings, owner, matrix, owners = _build(read, self.model)
        return identities, embeddings, owner, self._index_of(identities, matrix, owners)

    def _index_of(self, identities: dict[str, Identity], matrix: np.ndarray,
                  owners: Sequence[str]) -> GalleryIndex:
        indexed = [face for face in identities if identities[face].samples]
        if not indexed:
            return GalleryIndex.empty(self.policy, self.strategy)
        position = {face: i for i, face in enumerate(indexed)}
        owner = np.array([position.get(face, -1) for face in owners], dtype=np.int64)
        kept = owner >= 0
        return GalleryIndex.from_arrays(
            indexed, [identities[f].name for f in indexed],
            *((owner, matrix) if kept.all() else (owner[kept], matrix[kept])),
            self.strategy, self.policy)

    # -- following changes made elsewhere --------------------------------------------------

    async def _follow(self, event: str, faces: list[str]) -> None:
        """Another node changed ``faces`` (``reloaded``: anything): bring them in from the
        database and fire the same event here as the node that made the change."""
        async with self._lock:
            if event == "reloaded" or not faces:
                try:
                    await self._reload()
                except ModelMismatch as exc:  # re-embedded elsewhere for another model
                    log.error("%s; until then this node matches the gallery it had", exc)
                return
            before = self._identities.get(faces[0])
            identities, embeddings, owner, _, _ = _build([await self._read(faces)], self.model)
            for face in faces:
                self._drop_samples(self._identities.get(face))
                if face in identities:
                    self._identities[face] = identities[face]
                else:
                    self._identities.pop(face, None)
            self._embeddings.update(embeddings)
            self._owner.update(owner)
            after = self._identities.get(faces[0])
            if event == "deleted" or after is None:
                # Changed, then deleted before we looked: the deletion's event is this one.
                self._changed("deleted", before, *faces)
            else:
                self._changed(event, after, *faces)

    async def reload_if_changed(self) -> bool:
        """Pick up changes committed by another process on the same SQLite file; True if
        there were any (a shared database's changes are followed as they are notified)."""
        async with self._lock:
            if not await self.db.changed_elsewhere():
                return False
            await self._reload()
            return True

    async def _reload(self) -> None:
        """The whole gallery again (another model's embeddings refused), then ``reloaded``."""
        await self._check_models()
        await self._load()
        self._changed("reloaded", None)

    def _drop_samples(self, ident: Identity | None) -> None:
        """Forget ``ident``'s samples' embeddings and owners (the identity itself stays)."""
        for sample in ident.samples if ident is not None else ():
            self._owner.pop(sample.id, None)
            self._embeddings.pop(sample.id, None)

    # -- change notification ---------------------------------------------------------------

    def on_change(self, listener: Callable[[str, Identity | None], None]) -> None:
        """Call ``listener(event, identity)`` after each committed change (this node's or,
        on a shared database, another node's)."""
        self._listeners.append(listener)

    def _changed(self, event: str, ident: Identity | None, *faces: str) -> None:
        """Swap in an index that follows the change to ``faces`` (identities added, changed
        or gone; milliseconds, see GalleryIndex.replaced), then tell the listeners."""
        index = self.index
        for face in faces:
            now = self._identities.get(face)
            if now is None or not now.samples:
                index = index.removed(face)
            else:
                index = index.replaced(face, now.name,
                                       [self._embeddings[s.id] for s in now.samples])
        self.index = index
        for listener in self._listeners:
            try:
                listener(event, ident)
            except Exception:
                log.exception("a gallery change listener failed on %s", event)

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[Identity]:
        return list(self._identities.values())

    def page(self, offset: int, limit: int) -> list[Identity]:
        """``limit`` identities from ``offset``, oldest first, without copying the others
        (``list()`` of 200,000 costs a millisecond each time)."""
        if offset >= len(self._identities):
            return []  # (islice takes no offset beyond sys.maxsize, which a query may ask)
        return list(itertools.islice(self._identities.values(), offset, offset + limit))

    @property
    def count(self) -> int:
        """How many identities are enrolled."""
        return len(self._identities)

    def get(self, face: str) -> Identity | None:
        return self._identities.get(face)

    def sample_embeddings(self, face: str) -> dict[int, Embedding]:
        ident = self._identities.get(face)
        return {s.id: self._embeddings[s.id] for s in ident.samples} if ident else {}

    async def find_by_email(self, email: str) -> list[Identity]:
        digest = email_digest(self._secret, email)
        rows = await self.db.query("SELECT hash FROM identities WHERE email_hmac = ?", (digest,))
        return [self._identities[r[0]] for r in rows if r[0] in self._identities]

    async def crop(self, face: str, sample_id: int | None = None) -> bytes | None:
        """A sample's aligned face crop (JPEG); without ``sample_id``, the first one."""
        if sample_id is None:
            sql, params = (("SELECT crop FROM samples WHERE identity = ? AND crop IS NOT NULL "
                           "ORDER BY id LIMIT 1"), (face,))
        else:
            sql, params = ("SELECT crop FROM samples WHERE identity = ? AND id = ?",
                           (face, sample_id))
        rows = await self.db.query(sql, params)
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def records(self) -> list[tuple[Identity, str | None, list[SampleRecord]]]:
        """Everything, for export and re-embedding: identity, email HMAC, samples."""
        rows = await self.db.query(
            "SELECT id, identity, dim, embedding, crop, source, created_at, context, geometry "
            "FROM samples ORDER BY id")
        by_identity: dict[str, list[SampleRecord]] = {}
        for sid, face, dim, blob, crop, source, created, context, geometry in rows:
            emb = np.frombuffer(blob, dtype="<f4").reshape(dim).astype(np.float32)
            by_identity.setdefault(face, []).append(SampleRecord(
                int(sid), face, emb, crop, source, created, context,
                json.loads(geometry) if geometry else None))
        emails = dict(await self.db.query("SELECT hash, email_hmac FROM identities"))
        return [(i, emails.get(i.hash), by_identity.get(i.hash, []))
                for i in self._identities.values()]

    # -- writing ---------------------------------------------------------------------------

    def _cascade(self, step: Callable[[Dependent], list[Statement]]) -> list[Statement]:
        """What the dependents' tables do in the same transaction as a change."""
        return [statement for d in self.dependents for statement in step(d)]

    def _check_embedding(self, embedding: Sequence[float] | Embedding,
                         model: str | None) -> Embedding:
        if model is not None and model != self.model:
            raise ModelMismatch(
                f"embedding made by {model} cannot join a gallery of {self.model} embeddings"
            )
        emb = normalize(embedding)
        if len(self.index) and emb.shape[0] != self.index.dim:
            raise ModelMismatch(
                f"embedding has {emb.shape[0]} dimensions; {self.model} embeddings in this "
                f"gallery have {self.index.dim}"
            )
        return emb

    def _sample_sql(self, face: str, emb: Embedding, images: StoredImages, source: str,
                    now: float) -> tuple[str, tuple[Any, ...]]:
        if source not in SOURCES:
            raise GalleryError(f"unknown sample source {source!r}")
        geometry = json.dumps(images.geometry) if images.geometry is not None else None
        return (
            ("INSERT INTO samples (identity, model, dim, embedding, crop, context, geometry, "
             "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (face, self.model, int(emb.shape[0]), _blob(emb), images.crop, images.context,
             geometry, source, now),
        )

    async def add(
        self,
        name: str,
        embedding: Sequence[float] | Embedding,
        email: str | None = None,
        face: str | None = None,
        model: str | None = None,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        email_hmac: str | None = None,
        force: bool = False,
    ) -> Identity:
        """Enroll a face. ``face`` keeps a given hash (the prototype's, on import); by default
        the hash is derived from the embedding. Raises AlreadyEnrolled if the face is
        near-certainly an enrolled identity (a chance of at most ``duplicate_far`` that it is
        somebody else) unless ``force``, ModelMismatch if ``model`` differs from the
        gallery's."""
        name = clean_name(name)
        emb = self._check_embedding(embedding, model)
        digest = email_digest(self._secret, email) if email and email.strip() else email_hmac
        async with self._lock:
            face = face or face_hash(emb)
            if face in self._identities:
                existing = self._identities[face]
                raise AlreadyEnrolled(face, existing.name, 1.0)
            match = None if force else self.index.near_certain(emb, self.duplicate_far)
            if match is not None:
                raise AlreadyEnrolled(match.hash, match.name, match.similarity)
            now = time.time()
            try:
                ids = await self.db.write([
                    (("INSERT INTO identities (hash, name, email_hmac, created_at, "
                      "updated_at) VALUES (?, ?, ?, ?, ?)"), (face, name, digest, now, now)),
                    self._sample_sql(face, emb, images, source, now),
                    *self._cascade(lambda d: d.enrolled(face, name)),
                ], ("added", [face]))
            except Conflict:  # another node or process enrolled it a moment ago
                raise AlreadyEnrolled(face, name, 1.0) from None
            sid = ids[1]
            ident = Identity(face, name, self.model, now, digest is not None,
                             (Sample(sid, now, source, images.crop is not None),))
            self._identities[face] = ident
            self._embeddings[sid] = emb
            self._owner[sid] = face
            self._changed("added", ident, face)
            return ident

    async def add_sample(
        self,
        face: str,
        embedding: Sequence[float] | Embedding,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        model: str | None = None,
        force: bool = False,
    ) -> Sample:
        """Add another sample to an identity; it keeps its hash. Raises BelongsToOther if the
        face is near-certainly a different identity, and more like it than like this one
        (unless ``force``)."""
        emb = self._check_embedding(embedding, model)
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None:
                raise NotFound(f"no enrolled face with hash {face}")
            other = None if force else self.index.near_certain(emb, self.duplicate_far)
            if other is not None and other.hash != face:
                own = self.index.score(emb, face)
                if own is None or other.similarity > own:
                    raise BelongsToOther(other.hash, other.name, other.similarity)
            now = time.time()
            try:
                sid = (await self.db.write([
                    self._sample_sql(face, emb, images, source, now),
                    ("UPDATE identities SET updated_at = ? WHERE hash = ?", (now, face)),
                ], ("sample_added", [face])))[0]
            except Conflict:
                raise NotFound(f"no enrolled face with hash {face} (deleted elsewhere a "
                               "moment ago)") from None
            sample = Sample(sid, now, source, images.crop is not None)
            self._identities[face] = replace(ident, samples=(*ident.samples, sample))
            self._embeddings[sid] = emb
            self._owner[sid] = face
            self._changed("sample_added", self._identities[face], face)
            return sample

    async def delete_sample(self, face: str, sample_id: int) -> Identity:
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None or all(s.id != sample_id for s in ident.samples):
                raise NotFound(f"no sample {sample_id} of face {face}")
            if len(ident.samples) == 1:
                raise LastSample(
                    f"sample {sample_id} is the only sample of {ident.name!r}; delete the "
                    "identity instead"
                )
            await self.db.forget([
                ("DELETE FROM samples WHERE id = ? AND identity = ?", (sample_id, face)),
                ("UPDATE identities SET updated_at = ? WHERE hash = ?", (time.time(), face)),
            ], ("sample_deleted", [face]))
            self._embeddings.pop(sample_id, None)
            self._owner.pop(sample_id, None)
            ident = replace(ident, samples=tuple(s for s in ident.samples if s.id != sample_id))
            self._identities[face] = ident
            self._changed("sample_deleted", ident, face)
            return ident

    async def merge(self, target: str, source: str) -> Identity:
        """"These are the same person": move ``source``'s samples to ``target`` (which keeps
        its hash, name and email) and remove ``source``."""
        if target == source:
            raise GalleryError("cannot merge an identity into itself")
        async with self._lock:
            into, other = self._identities.get(target), self._identities.get(source)
            if into is None or other is None:
                missing = target if into is None else source
                raise NotFound(f"no enrolled face with hash {missing}")
            now = time.time()
            await self.db.write([
                ("UPDATE samples SET identity = ? WHERE identity = ?", (target, source)),
                (("UPDATE identities SET updated_at = ?, email_hmac = "
                 "COALESCE(email_hmac, (SELECT email_hmac FROM identities WHERE hash = ?)) "
                 "WHERE hash = ?"), (now, source, target)),
                ("DELETE FROM identities WHERE hash = ?", (source,)),
                *self._cascade(lambda d: d.merged(target, source, into.name)),
            ], ("merged", [target, source]))
            for sample in other.samples:
                self._owner[sample.id] = target
            merged = replace(
                into,
                samples=tuple(sorted((*into.samples, *other.samples), key=lambda s: s.id)),
                has_email=into.has_email or other.has_email,
            )
            del self._identities[source]
            self._identities[target] = merged
            self._changed("merged", merged, source, target)
            return merged

    async def rename(self, face: str, name: str) -> Identity:
        name = clean_name(name)
        async with self._lock:
            old = self._identities.get(face)
            if old is None:
                raise NotFound(f"no enrolled face with hash {face}")
            await self.db.write([
                ("UPDATE identities SET name = ?, updated_at = ? WHERE hash = ?",
                 (name, time.time(), face)),
                *self._cascade(lambda d: d.renamed(face, name)),
            ], ("renamed", [face]))
            ident = replace(old, name=name)
            self._identities[face] = ident
            self._changed("renamed", ident, face)
            return ident

    async def delete(self, face: str) -> Identity:
        async with self._lock:
            ident = self._identities.get(face)
            if ident is None:
                raise NotFound(f"no enrolled face with hash {face}")
            await self.db.forget([
                ("DELETE FROM samples WHERE identity = ?", (face,)),
                ("DELETE FROM identities WHERE hash = ?", (face,)),
                *self._cascade(lambda d: d.deleted(face)),
            ], ("deleted", [face]))
            del self._identities[face]
            self._drop_samples(ident)
            self._changed("deleted", ident, face)
            return ident

    async def replace_embeddings(self, model: str, embeddings: dict[int, Embedding],
                                 drop: Sequence[int] = ()) -> None:
        """Re-embedding: give every sample its embedding by ``model`` in one transaction
        (samples in ``drop``, which have no crop to re-embed, are deleted)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            ("UPDATE samples SET model = ?, dim = ?, embedding = ? WHERE id = ?",
             (model, int(e.shape[0]), _blob(normalize(e)), sid))
            for sid, e in embeddings.items()
        ]
        statements += [("DELETE FROM samples WHERE id = ?", (sid,)) for sid in drop]
        statements.append((("DELETE FROM identities WHERE hash NOT IN "
                           "(SELECT DISTINCT identity FROM samples)"), ()))
        async with self._lock:
            await self.db.write(statements, ("reloaded", []))
            self.model = model
            await self._load()
            self._changed("reloaded", None)

    async def close(self) -> None:
        """Idempotent."""
        await self.db.close()
