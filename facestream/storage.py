"""The gallery of enrolled people: stored in a ``db.base.Database`` (SQLite in the data
dir, or PostgreSQL shared by several nodes; its tables in gallery_tables.py), and an
in-memory index for matching.

A person has a fixed hash (from its first embedding), a name, an optional email HMAC, and
one or more samples: an embedding plus the images of the face it was computed from (a
thumbnail, and a context square with the face's box and landmarks in it: small JPEGs), so the
whole gallery can be re-embedded for another model, each with its own alignment, without
re-enrolling anyone.

Every change is one transaction, committed before the coroutine returns, so anything the API
acknowledged survives a crash; tables of other owners that name people (history's, see
``gallery_tables.Dependent``) change in the same transaction. After each commit a new immutable
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
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from .config import Config
from .db.base import Conflict, Database, Read, Statement, StorageError, collector_paused
from .db.disk import DB_FILE, check_data_dir
from .db.sqlite import SqliteDb
from .gallery_tables import (
    DEPENDENTS,
    PERSON_ROWS,
    SAMPLE_ROWS,
    SCHEMA,
    Dependent,
    Rows,
    sample_columns,
)
from .gallery_types import (
    NO_IMAGES,
    AlreadyEnrolled,
    BelongsToOther,
    GalleryError,
    LastSample,
    ModelMismatch,
    NotFound,
    Person,
    Sample,
    SampleRecord,
    StoredImages,
)
from .matching import Embedding, GalleryIndex, Negatives, OpenSetPolicy, face_hash, normalize
from .names import clean_name, name_key
from .privacy import email_digest, load_or_create_secret
from .retry import Outage

log = logging.getLogger(__name__)

SOURCES: Final = ("upload", "live", "import", "history")

def _blob(emb: Embedding) -> bytes:
    return np.ascontiguousarray(emb, dtype="<f4").tobytes()


def _build(read: list[Rows], model: str) -> tuple[dict[str, Person], dict[int, Embedding],
                                                  dict[int, str], np.ndarray, Sequence[str]]:
    """People, embeddings and owners from what was read (taken out of ``read``), plus the
    embedding matrix and each sample's person, for the index."""
    with collector_paused():
        (sids, owners, has_crops, sources, created, matrix), person_rows = read.pop()
        samples: dict[str, list[Sample]] = {}
        for sid, owner, has_crop, source, at in zip(sids, owners, has_crops, sources, created):
            samples.setdefault(owner, []).append(Sample(sid, at, source, bool(has_crop)))
        people = {
            key: Person(key, name, model, at, bool(has_email), tuple(samples.get(key, ())))
            for key, name, at, has_email in person_rows
        }
        return people, dict(zip(sids, matrix)), dict(zip(sids, owners)), matrix, owners


class Gallery:
    """Enrolled people for one model: kept whole in memory and matched there, stored in a
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
        self._people: dict[str, Person] = {}
        self._embeddings: dict[int, Embedding] = {}  # sample id -> embedding
        self._owner: dict[int, str] = {}  # sample id -> person hash
        # name_key(name) -> the hashes of the people named so (and some no longer: a rename
        # leaves its old entry, which ``named`` drops when it meets it).
        self._by_name: dict[str, set[str]] = {}
        # person -> their negatives' (id, embedding): faces the user said are not them.
        self._negatives: dict[str, list[tuple[int, Embedding]]] = {}
        self.index = GalleryIndex.empty(policy, strategy)
        self._lock = asyncio.Lock()
        self._listeners: list[Callable[[str, Person | None, tuple[str, ...]], None]] = []

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
        people this is seconds of work) and on the database's own thread: the memory
        the reading freed is reused by the building (built on another thread, the same
        million-person gallery kept 330 MB more of the process's memory)."""
        read = [await self._read()]
        self._people, self._embeddings, self._owner, self.index = await self.db.run(
            self._built, read)
        self._by_name = {}
        for person in self._people.values():
            self._by_name.setdefault(name_key(person.name), set()).add(person.hash)
        await self._load_negatives()

    async def _load_negatives(self) -> None:
        """Every negative of this model (another model's wait for a re-embedding) into the
        index's snapshot."""
        negatives: dict[str, list[tuple[int, Embedding]]] = {}
        for nid, person, dim, blob in await self.db.query(
                "SELECT id, person, dim, embedding FROM negatives WHERE model = ? ORDER BY id",
                (self.model,)):
            emb = np.frombuffer(blob, dtype="<f4").reshape(dim).astype(np.float32)
            negatives.setdefault(person, []).append((int(nid), emb))
        self._negatives = negatives
        self.index = self.index.with_negatives(self._negatives_now())

    def _negatives_now(self) -> Negatives:
        return Negatives({p: np.stack([e for _, e in rows]) for p, rows in
                          self._negatives.items() if p in self._people},
                         self.policy.threshold)

    async def _read(self, people: Sequence[str] | None = None) -> Rows:
        """The rows of ``people`` (hashes; everyone for None), from one snapshot; after
        reading all, ``changed_elsewhere`` compares with it."""
        where, params = "", ()
        if people is not None:
            where, params = f" WHERE {{}} IN ({', '.join('?' * len(people))})", tuple(people)
        columns, rows = await self.db.snapshot([
            Read(f"{SAMPLE_ROWS}{where.format('person')} ORDER BY id", params,
                 sample_columns),
            Read(f"{PERSON_ROWS}{where.format('hash')} ORDER BY created_at", params),
        ], mark=people is None)
        return columns, rows

    def _built(self, read: list[Rows]) -> tuple[dict[str, Person], dict[int, Embedding],
                                                 dict[int, str], GalleryIndex]:
        people, embeddings, owner, matrix, owners = _build(read, self.model)
        return people, embeddings, owner, self._index_of(people, matrix, owners)

    def _index_of(self, people: dict[str, Person], matrix: np.ndarray,
                  owners: Sequence[str]) -> GalleryIndex:
        indexed = [person for person in people if people[person].samples]
        if not indexed:
            return GalleryIndex.empty(self.policy, self.strategy)
        position = {person: i for i, person in enumerate(indexed)}
        owner = np.array([position.get(person, -1) for person in owners], dtype=np.int64)
        kept = owner >= 0
        return GalleryIndex.from_arrays(
            indexed, [people[f].name for f in indexed],
            *((owner, matrix) if kept.all() else (owner[kept], matrix[kept])),
            self.strategy, self.policy)

    # -- following changes made elsewhere --------------------------------------------------

    async def _follow(self, event: str, people: list[str]) -> None:
        """Another node changed ``people`` (``reloaded``: anything): bring them in from the
        database and fire the same event here as the node that made the change."""
        async with self._lock:
            if event == "reloaded" or not people:
                try:
                    await self._reload()
                except ModelMismatch as exc:  # re-embedded elsewhere for another model
                    log.error("%s; until then this node matches the gallery it had", exc)
                return
            before = self._people.get(people[0])
            found, embeddings, owner, _, _ = _build([await self._read(people)], self.model)
            for person in people:
                self._drop_samples(self._people.get(person))
                if person in found:
                    self._people[person] = found[person]
                else:
                    self._people.pop(person, None)
            self._embeddings.update(embeddings)
            self._owner.update(owner)
            if event in ("negative_added", "merged"):  # (a merge moves the negatives too)
                await self._load_negatives()
            elif event == "deleted":
                for person in people:
                    self._negatives.pop(person, None)
            after = self._people.get(people[0])
            if event == "deleted" or after is None:
                # Changed, then deleted before we looked: the deletion's event is this one.
                self._changed("deleted", before, *people)
            else:
                self._changed(event, after, *people)

    async def reload_if_changed(self) -> bool:
        """Pick up changes committed by another process on the same SQLite file; True if
        there were any (a shared database's changes are followed as they are notified)."""
        async with self._lock:
            if not await self.db.changed_elsewhere():
                return False
            await self._reload()
            return True

    async def watch(self, every_s: float = 1.0) -> None:
        """Until cancelled, pick up what other processes (``python -m facestream faces ...``)
        commit to the same SQLite file. A failure is logged when it starts or changes, not on
        every look, and its end is logged too."""
        outage = Outage(log)
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.reload_if_changed()
            except GalleryError as exc:
                outage.failed(logging.ERROR, "gallery changed on disk but cannot be loaded: %s",
                              exc, reason=str(exc))
            except Exception as exc:  # noqa: BLE001 (logged with its traceback; goes on)
                outage.failed(logging.ERROR, "checking the gallery for outside changes failed",
                              reason=repr(exc), exc_info=True)
            else:
                outage.recovered(logging.INFO, "the gallery on disk can be read again")

    async def _reload(self) -> None:
        """The whole gallery again (another model's embeddings refused), then ``reloaded``."""
        await self._check_models()
        await self._load()
        self._changed("reloaded", None)

    def _drop_samples(self, enrolled: Person | None) -> None:
        """Forget ``enrolled``'s samples' embeddings and owners (the person itself stays)."""
        for sample in enrolled.samples if enrolled is not None else ():
            self._owner.pop(sample.id, None)
            self._embeddings.pop(sample.id, None)

    # -- change notification ---------------------------------------------------------------

    def on_change(self, listener: Callable[[str, Person | None, tuple[str, ...]], None]
                  ) -> None:
        """Call ``listener(event, person, hashes)`` after each committed change (this node's
        or, on a shared database, another node's): ``person`` as they are now (None when the
        change is about many), ``hashes`` every hash it changed (a merge: the one merged
        away, then the one kept)."""
        self._listeners.append(listener)

    def _changed(self, event: str, enrolled: Person | None, *people: str) -> None:
        """Swap in an index that follows the change to ``people`` (people added, changed
        or gone; milliseconds, see GalleryIndex.replaced), then tell the listeners."""
        index = self.index
        for person in people:
            now = self._people.get(person)
            if now is not None:
                self._by_name.setdefault(name_key(now.name), set()).add(person)
            if now is None or not now.samples:
                index = index.removed(person)
            else:
                index = index.replaced(person, now.name,
                                       [self._embeddings[s.id] for s in now.samples])
        self.index = index
        for listener in self._listeners:
            try:
                listener(event, enrolled, people)
            except Exception:
                log.exception("a gallery change listener failed on %s", event)

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[Person]:
        return list(self._people.values())

    def page(self, offset: int, limit: int) -> list[Person]:
        """``limit`` people from ``offset``, oldest first, without copying the others
        (``list()`` of 200,000 costs a millisecond each time)."""
        if offset >= len(self._people):
            return []  # (islice takes no offset beyond sys.maxsize, which a query may ask)
        return list(itertools.islice(self._people.values(), offset, offset + limit))

    @property
    def count(self) -> int:
        """How many people are enrolled."""
        return len(self._people)

    def get(self, person: str) -> Person | None:
        return self._people.get(person)

    def named(self, name: str) -> list[Person]:
        """The people called ``name`` (as name_key compares names), oldest first."""
        key = name_key(name)
        found = [p for h in self._by_name.get(key, ()) if (p := self._people.get(h)) is not None
                 and name_key(p.name) == key]
        if found:
            self._by_name[key] = {p.hash for p in found}
        else:
            self._by_name.pop(key, None)
        return sorted(found, key=lambda p: p.created_at)

    def sample_embeddings(self, person: str) -> dict[int, Embedding]:
        enrolled = self._people.get(person)
        return {s.id: self._embeddings[s.id] for s in enrolled.samples} if enrolled else {}

    async def find_by_email(self, email: str) -> list[Person]:
        digest = email_digest(self._secret, email)
        rows = await self.db.query("SELECT hash FROM people WHERE email_hmac = ?", (digest,))
        return [self._people[r[0]] for r in rows if r[0] in self._people]

    async def crop(self, person: str, sample_id: int | None = None) -> bytes | None:
        """A sample's aligned face crop (JPEG); without ``sample_id``, the first one."""
        if sample_id is None:
            sql, params = (("SELECT crop FROM samples WHERE person = ? AND crop IS NOT NULL "
                           "ORDER BY id LIMIT 1"), (person,))
        else:
            sql, params = ("SELECT crop FROM samples WHERE person = ? AND id = ?",
                           (person, sample_id))
        rows = await self.db.query(sql, params)
        return rows[0][0] if rows and rows[0][0] is not None else None

    async def records(self) -> list[tuple[Person, str | None, list[SampleRecord]]]:
        """Everything, for export and re-embedding: person, email HMAC, samples."""
        rows = await self.db.query(
            "SELECT id, person, dim, embedding, crop, source, created_at, context, geometry "
            "FROM samples ORDER BY id")
        by_person: dict[str, list[SampleRecord]] = {}
        for sid, person, dim, blob, crop, source, created, context, geometry in rows:
            emb = np.frombuffer(blob, dtype="<f4").reshape(dim).astype(np.float32)
            by_person.setdefault(person, []).append(SampleRecord(
                int(sid), person, emb, crop, source, created, context,
                json.loads(geometry) if geometry else None))
        emails = dict(await self.db.query("SELECT hash, email_hmac FROM people"))
        return [(i, emails.get(i.hash), by_person.get(i.hash, []))
                for i in self._people.values()]

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

    def _sample_sql(self, person: str, emb: Embedding, images: StoredImages, source: str,
                    now: float) -> tuple[str, tuple[Any, ...]]:
        if source not in SOURCES:
            raise GalleryError(f"unknown sample source {source!r}")
        geometry = json.dumps(images.geometry) if images.geometry is not None else None
        return (
            ("INSERT INTO samples (person, model, dim, embedding, crop, context, geometry, "
             "source, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
            (person, self.model, int(emb.shape[0]), _blob(emb), images.crop, images.context,
             geometry, source, now),
        )

    async def add(
        self,
        name: str,
        embedding: Sequence[float] | Embedding,
        email: str | None = None,
        person: str | None = None,
        model: str | None = None,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        email_hmac: str | None = None,
        force: bool = False,
    ) -> Person:
        """Enroll a person. ``person`` keeps a given hash (the prototype's, on import); by
        default the hash is derived from the embedding. Raises AlreadyEnrolled if the face is
        near-certainly an enrolled person (a chance of at most ``duplicate_far`` that it is
        somebody else) unless ``force``, ModelMismatch if ``model`` differs from the
        gallery's."""
        name = clean_name(name)
        emb = self._check_embedding(embedding, model)
        digest = email_digest(self._secret, email) if email and email.strip() else email_hmac
        async with self._lock:
            person = person or face_hash(emb)
            if person in self._people:
                existing = self._people[person]
                raise AlreadyEnrolled(person, existing.name, 1.0)
            match = None if force else self.index.near_certain(emb, self.duplicate_far)
            if match is not None:
                raise AlreadyEnrolled(match.hash, match.name, match.similarity)
            now = time.time()
            try:
                ids = await self.db.write([
                    (("INSERT INTO people (hash, name, email_hmac, created_at, "
                      "updated_at) VALUES (?, ?, ?, ?, ?)"), (person, name, digest, now, now)),
                    self._sample_sql(person, emb, images, source, now),
                    *self._cascade(lambda d: d.enrolled(person, name)),
                ], ("added", [person]))
            except Conflict:  # another node or process enrolled it a moment ago
                raise AlreadyEnrolled(person, name, 1.0) from None
            sid = ids[1]
            enrolled = Person(person, name, self.model, now, digest is not None,
                             (Sample(sid, now, source, images.crop is not None),))
            self._people[person] = enrolled
            self._embeddings[sid] = emb
            self._owner[sid] = person
            self._changed("added", enrolled, person)
            return enrolled

    async def add_sample(
        self,
        person: str,
        embedding: Sequence[float] | Embedding,
        images: StoredImages = NO_IMAGES,
        source: str = "upload",
        model: str | None = None,
        force: bool = False,
    ) -> Sample:
        """Add another sample to a person; it keeps its hash. Raises BelongsToOther if the
        face is near-certainly a different person, and more like it than like this one
        (unless ``force``)."""
        emb = self._check_embedding(embedding, model)
        async with self._lock:
            enrolled = self._people.get(person)
            if enrolled is None:
                raise NotFound(f"no enrolled person with hash {person}")
            other = None if force else self.index.near_certain(emb, self.duplicate_far)
            if other is not None and other.hash != person:
                own = self.index.score(emb, person)
                if own is None or other.similarity > own:
                    raise BelongsToOther(other.hash, other.name, other.similarity)
            now = time.time()
            try:
                sid = (await self.db.write([
                    self._sample_sql(person, emb, images, source, now),
                    ("UPDATE people SET updated_at = ? WHERE hash = ?", (now, person)),
                ], ("sample_added", [person])))[0]
            except Conflict:
                raise NotFound(f"no enrolled person with hash {person} (deleted elsewhere a "
                               "moment ago)") from None
            sample = Sample(sid, now, source, images.crop is not None)
            self._people[person] = replace(enrolled, samples=(*enrolled.samples, sample))
            self._embeddings[sid] = emb
            self._owner[sid] = person
            self._changed("sample_added", self._people[person], person)
            return sample

    async def delete_sample(self, person: str, sample_id: int) -> Person:
        async with self._lock:
            enrolled = self._people.get(person)
            if enrolled is None or all(s.id != sample_id for s in enrolled.samples):
                raise NotFound(f"no sample {sample_id} of person {person}")
            if len(enrolled.samples) == 1:
                raise LastSample(
                    f"sample {sample_id} is the only sample of {enrolled.name!r}; delete the "
                    "person instead"
                )
            await self.db.forget([
                ("DELETE FROM samples WHERE id = ? AND person = ?", (sample_id, person)),
                ("UPDATE people SET updated_at = ? WHERE hash = ?", (time.time(), person)),
            ], ("sample_deleted", [person]))
            self._embeddings.pop(sample_id, None)
            self._owner.pop(sample_id, None)
            enrolled = replace(enrolled,
                               samples=tuple(s for s in enrolled.samples if s.id != sample_id))
            self._people[person] = enrolled
            self._changed("sample_deleted", enrolled, person)
            return enrolled

    async def merge(self, target: str, source: str) -> Person:
        """"These are the same person": move ``source``'s samples to ``target`` (which keeps
        its hash, name and email) and remove ``source``."""
        if target == source:
            raise GalleryError("cannot merge a person into themselves")
        async with self._lock:
            into, other = self._people.get(target), self._people.get(source)
            if into is None or other is None:
                missing = target if into is None else source
                raise NotFound(f"no enrolled person with hash {missing}")
            now = time.time()
            await self.db.write([
                ("UPDATE samples SET person = ? WHERE person = ?", (target, source)),
                ("UPDATE negatives SET person = ? WHERE person = ?", (target, source)),
                (("UPDATE people SET updated_at = ?, email_hmac = "
                 "COALESCE(email_hmac, (SELECT email_hmac FROM people WHERE hash = ?)) "
                 "WHERE hash = ?"), (now, source, target)),
                ("DELETE FROM people WHERE hash = ?", (source,)),
                *self._cascade(lambda d: d.merged(target, source, into.name)),
            ], ("merged", [target, source]))
            for sample in other.samples:
                self._owner[sample.id] = target
            merged = replace(
                into,
                samples=tuple(sorted((*into.samples, *other.samples), key=lambda s: s.id)),
                has_email=into.has_email or other.has_email,
            )
            del self._people[source]
            self._people[target] = merged
            moved = self._negatives.pop(source, [])
            if moved:
                self._negatives[target] = sorted([*self._negatives.get(target, []), *moved],
                                                 key=lambda n: n[0])
                self.index = self.index.with_negatives(self._negatives_now())
            self._changed("merged", merged, source, target)
            return merged

    async def rename(self, person: str, name: str) -> Person:
        name = clean_name(name)
        async with self._lock:
            old = self._people.get(person)
            if old is None:
                raise NotFound(f"no enrolled person with hash {person}")
            await self.db.write([
                ("UPDATE people SET name = ?, updated_at = ? WHERE hash = ?",
                 (name, time.time(), person)),
                *self._cascade(lambda d: d.renamed(person, name)),
            ], ("renamed", [person]))
            enrolled = replace(old, name=name)
            self._people[person] = enrolled
            self._changed("renamed", enrolled, person)
            return enrolled

    async def delete(self, person: str) -> Person:
        async with self._lock:
            enrolled = self._people.get(person)
            if enrolled is None:
                raise NotFound(f"no enrolled person with hash {person}")
            await self.db.forget([
                ("DELETE FROM samples WHERE person = ?", (person,)),
                ("DELETE FROM negatives WHERE person = ?", (person,)),
                ("DELETE FROM people WHERE hash = ?", (person,)),
                *self._cascade(lambda d: d.deleted(person)),
            ], ("deleted", [person]))
            del self._people[person]
            self._drop_samples(enrolled)
            if self._negatives.pop(person, None) is not None:
                self.index = self.index.with_negatives(self._negatives_now())
            self._changed("deleted", enrolled, person)
            return enrolled

    async def add_negative(self, person: str, embedding: Sequence[float] | Embedding,
                           crop: bytes | None = None, source: str = "live") -> int:
        """"This face is not ``person``": keep it, so that matching never names it, or a face
        near-certainly the same, ``person`` again (see matching.Negatives). Their samples
        are untouched."""
        emb = self._check_embedding(embedding, None)
        async with self._lock:
            enrolled = self._people.get(person)
            if enrolled is None:
                raise NotFound(f"no enrolled person with hash {person}")
            now = time.time()
            try:
                (nid,) = await self.db.write([
                    ("INSERT INTO negatives (person, model, dim, embedding, crop, source, "
                     "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (person, self.model, int(emb.shape[0]), _blob(emb), crop, source, now)),
                ], ("negative_added", [person]))
            except Conflict:
                raise NotFound(f"no enrolled person with hash {person} (deleted elsewhere a "
                               "moment ago)") from None
            self._negatives.setdefault(person, []).append((nid, emb))
            self.index = self.index.with_negatives(self._negatives_now())
            self._changed("negative_added", enrolled, person)
            return nid

    def negatives(self, person: str) -> list[tuple[int, Embedding]]:
        """``person``'s negatives: (id, embedding), oldest first."""
        return list(self._negatives.get(person, ()))

    async def negative_crops(self) -> list[tuple[int, bytes | None]]:
        """Every negative's id and crop (to re-embed them with another model)."""
        return [(int(n), crop) for n, crop in
                await self.db.query("SELECT id, crop FROM negatives ORDER BY id")]

    async def replace_embeddings(self, model: str, embeddings: dict[int, Embedding],
                                 drop: Sequence[int] = (),
                                 negatives: dict[int, Embedding] | None = None) -> None:
        """Re-embedding: give every sample (and, given ``negatives``, every negative: the
        others are deleted) its embedding by ``model`` in one transaction (samples in
        ``drop``, which have no crop to re-embed, are deleted)."""
        statements: list[tuple[str, tuple[Any, ...]]] = [
            (f"UPDATE {table} SET model = ?, dim = ?, embedding = ? WHERE id = ?",
             (model, int(e.shape[0]), _blob(normalize(e)), row))
            for table, rows in (("samples", embeddings), ("negatives", negatives or {}))
            for row, e in rows.items()
        ]
        if negatives is not None:
            statements.append(("DELETE FROM negatives WHERE model != ?", (model,)))
        statements += [("DELETE FROM samples WHERE id = ?", (sid,)) for sid in drop]
        statements.append((("DELETE FROM people WHERE hash NOT IN "
                           "(SELECT DISTINCT person FROM samples)"), ()))
        async with self._lock:
            await self.db.write(statements, ("reloaded", []))
            self.model = model
            await self._load()
            self._changed("reloaded", None)

    async def close(self) -> None:
        """Idempotent."""
        await self.db.close()
