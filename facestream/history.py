"""Visit history: who came by, when, with their best face and a snapshot, kept for a while.

Presence announces visits (``arrived`` / ``left``); History stores them in its tables
(declared in history_tables.py) in the gallery's database: the visit row when it begins, its end and its best face crop,
context square and frame snapshot (JPEG blobs beside it, see README for the measurement) when
it ends. Encoding runs in a thread; the queue in between is bounded.

Strangers are grouped across visits and restarts: each unknown visit's person is an unknown
group (its hash is the provisional hash the live view shows), whose mean embedding is kept in
the ``unknowns`` table; Presence matches new unknown faces against ``unknown_index`` so the
same stranger keeps the same hash ("unknown f7d0, 5 visits"). Naming a group (or a visit)
enrolls the stranger with the best crops of their visits as samples and keeps the hash, so
their past visits become the person's.

Visits older than ``history.retention_days`` are deleted, with their images.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final

import numpy as np

from .config import HistoryConfig
from .db.base import StorageError
from .decisions import LOW_MARGIN, Decision, decide
from .events import Camera, GalleryChange, Output
from .gallery_types import GalleryError, NotFound, StoredImages
from .matching import Embedding, GalleryIndex, OpenSetPolicy, face_hash, normalize
from .presence import VisitEvent, VisitRecord
from .recognition import StoredFace
from .retry import Backoff, Outage
from .storage import Gallery

log = logging.getLogger(__name__)

#: Visit events waiting to be stored; beyond this the oldest waiting one is dropped (logged).
MAX_PENDING: Final = 512
PRUNE_INTERVAL_S: Final = 3600.0
MAX_PAGE: Final = 200
#: Samples a person gets when it is named from history: its best visits' faces.
SAMPLES_FROM_HISTORY: Final = 3
#: Storing a visit the database refused is retried after these, doubling.
RETRY_S: Final = (0.5, 30.0)
#: Forgotten visits and people remembered, so that late events do not bring them back.
MAX_TOMBSTONES: Final = 10_000
#: Strangers are grouped only on looks good enough to judge (recognition.look_quality: a
#: sharp, frontal face of 30 px or more), and a new face joins a group only when the chance
#: that it is somebody else is this small (the live view's open-set rate is 1%): a group
#: that mixes people would put them all into one person's samples when it is named.
GROUP_QUALITY: Final = 0.25
GROUP_FAR: Final = 1e-4

_VISIT_COLUMNS: Final = ("id, person, known, name, camera, arrived_at, left_at, score, runner, "
                         "runner_score, threshold, margin, reviewed_at, box")
#: Each stranger's visits: how many, the first arrival, the last departure.
_GROUP_SELECT: Final = ("SELECT person, COUNT(*), MIN(arrived_at), "
                        "MAX(COALESCE(left_at, arrived_at)) FROM visits WHERE known = 0")


@dataclass(frozen=True)
class Visit:
    id: str
    person: str
    known: bool
    name: str | None
    camera: str
    arrived_at: float
    left_at: float | None
    #: Why it got its name, judged on its best face (None for a visit stored before
    #: decisions were kept).
    decision: Decision | None = None
    #: When a user confirmed or corrected it on the review page.
    reviewed_at: float | None = None
    #: Where its best face is in the snapshot: [x, y, w, h], fractions of the frame's size.
    box: list[float] | None = None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Visit:
        vid, person, known, name, camera, arrived, left, score, runner, runner_score, \
            threshold, _margin, reviewed, box = row
        decision = None if threshold is None else \
            Decision(score, runner, runner_score, threshold)
        return cls(vid, person, bool(known), name, camera, arrived, left, decision, reviewed,
                   json.loads(box) if box else None)

    def to_json(self, names: Callable[[str], str | None] = lambda h: None) -> dict[str, Any]:
        """``names`` names the runner-up (None for somebody no longer enrolled)."""
        out = {"id": self.id, "hash": self.person, "known": self.known, "name": self.name,
               "camera": self.camera, "arrived_at": self.arrived_at, "left_at": self.left_at,
               "crop": f"/visits/{self.id}/crop", "snapshot": f"/visits/{self.id}/snapshot",
               "reviewed_at": self.reviewed_at, "box": self.box, "decision": None}
        if (d := self.decision) is not None:
            out["decision"] = {
                "score": d.score, "threshold": d.threshold, "margin": d.row()[4],
                "runner": None if d.runner is None else
                {"hash": d.runner, "name": names(d.runner), "score": d.runner_score}}
        return out


class History(Output):
    def __init__(self, gallery: Gallery, config: HistoryConfig) -> None:
        self.gallery = gallery
        #: The database History's tables are in (the gallery's): its reads and writes go
        #: straight to it.
        self.db = gallery.db
        self.config = config
        self.unknown_index: GalleryIndex = GalleryIndex.empty(self._group_policy())
        self._unknowns: dict[str, tuple[Embedding, int]] = {}  # hash -> mean, visits
        self._last_seen: dict[str, float] = {}
        self._stored_quality: dict[str, float] = {}  # open visits: quality of stored images
        self._written: set[str] = set()  # open visits whose row is stored
        self._open: dict[str, VisitRecord] = {}  # visits under way, by id (ended at close)
        # Visits (by id) and people (by hash, with when) forgotten while a visit may still be
        # open or queued: their later events are not stored (see _forgotten_event).
        self._tombstones: dict[str, float] = {}
        # Hashes merged into another person's (a stranger named as somebody enrolled): a
        # visit of theirs still open must not make them a stranger's group again.
        self._merged_away: dict[str, str] = {}
        # Visits under way split off their stranger's group (by id): their new group's hash.
        self._moved: dict[str, str] = {}
        self._queue: asyncio.Queue[VisitEvent] = asyncio.Queue(MAX_PENDING)
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load unknown groups and last-seen times; close visits a crash left open; start
        the writer and the pruning."""
        model = self.gallery.model
        for face, dim, blob, count in await self.db.query(
                "SELECT hash, dim, embedding, count FROM unknowns WHERE model = ?", (model,)):
            self._unknowns[face] = (np.frombuffer(blob, "<f4").reshape(dim).copy(), count)
        self._rebuild_unknowns()
        for person, last in await self.db.query(
                "SELECT person, MAX(COALESCE(left_at, arrived_at)) FROM visits GROUP BY person"):
            self._last_seen[person] = last
        await self.db.write([
            ("UPDATE visits SET left_at = arrived_at WHERE left_at IS NULL", ()),
        ])
        self._tasks = [asyncio.create_task(self._store_forever()),
                       asyncio.create_task(self._prune_forever())]

    async def close(self) -> None:
        """End the visits still open, store what is queued (the server is stopping)."""
        self._end_open(lambda record: True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- storing visits ------------------------------------------------------------------

    def visit_event(self, camera: Camera, event: VisitEvent) -> None:
        self.record(event)

    def camera_removed(self, camera: Camera) -> None:
        """Its visits end now (nobody is seen there any more)."""
        self._end_open(lambda record: record.camera == camera.name)

    def _end_open(self, which: Callable[[VisitRecord], bool]) -> None:
        now = time.time()
        for record in [r for r in self._open.values() if which(r)]:
            self.record(VisitEvent("left", replace(record, left_at=now)))

    def record(self, event: VisitEvent) -> None:
        """Queue a visit event for storing (event loop; never waits)."""
        v = event.visit
        if event.kind == "arrived":
            self._open[v.id] = v
        else:
            self._open.pop(v.id, None)
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            log.warning("history writer is behind; visit %s (%s) not stored",
                        dropped.visit.id, dropped.kind)
        self._queue.put_nowait(event)
        self._last_seen[v.person] = v.left_at if v.left_at is not None else v.arrived_at

    async def _store_forever(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._store_retrying(event)
            except Exception:
                log.exception("storing visit %s failed", event.visit.id)
                self._stored_quality.pop(event.visit.id, None)
            finally:
                self._queue.task_done()

    async def _store_retrying(self, event: VisitEvent) -> None:
        """Store ``event``; while the database cannot take it (a full or failing disk, a
        shared database away) try again with backoff, one line when that starts and one when
        it ends. Events keep queueing meanwhile (the oldest dropped past MAX_PENDING)."""
        v = event.visit
        if self._forgotten_event(v):
            self._ended(event)
            return
        statements = await self._statements(event)
        backoff, outage = Backoff(*RETRY_S), Outage(log)
        while True:
            if self._forgotten_event(v):
                self._ended(event)
                return  # forgotten while its images were encoded or the database was away
            try:
                await self.db.write(statements)
            except StorageError as exc:
                outage.failed(logging.ERROR, "visit %s not stored yet (retrying): %s", v.id, exc)
                await asyncio.sleep(backoff.next())
                continue
            outage.recovered(logging.WARNING, "history is being stored again (visit %s)", v.id)
            if event.kind == "arrived":
                self._written.add(v.id)
            self._ended(event)
            return

    def _ended(self, event: VisitEvent) -> None:
        if event.kind == "left":
            self._written.discard(event.visit.id)
            self._stored_quality.pop(event.visit.id, None)

    def _forgotten_event(self, v: VisitRecord) -> bool:
        """Whether ``v`` was deleted (DELETE /visits/{id}), or its person's history forgotten
        after it began, while its events waited: storing them would bring it back."""
        if v.id in self._tombstones:
            return True
        forgotten_at = self._tombstones.get(v.person)
        return forgotten_at is not None and v.arrived_at <= forgotten_at

    def _tombstone(self, key: str) -> None:
        self._tombstones.pop(key, None)
        self._tombstones[key] = time.time()
        while len(self._tombstones) > MAX_TOMBSTONES:
            del self._tombstones[next(iter(self._tombstones))]

    async def _statements(self, event: VisitEvent) -> list[tuple[str, tuple[Any, ...]]]:
        """What storing ``event`` writes, in one transaction (built once: it also moves this
        visit's stored quality and its stranger group on).

        A visit's row and its images row are inserted together, once (at its arrival, or
        at its departure if the arrival was never stored); later events only update them,
        so a visit deleted meanwhile (with its person, its history or on its own) stays
        deleted. A known visit is kept only while its person is enrolled: a person deleted
        while their arrival waited takes it with them."""
        v = event.visit
        statements: list[tuple[str, tuple[Any, ...]]] = []
        quality = v.best.quality if v.best is not None else None
        quality = None if quality is None else float(quality)
        left_at = None if v.left_at is None else float(v.left_at)
        update = v.id in self._written
        # A stranger merged into somebody while this event waited: the visit is theirs. A
        # visit split off its stranger's group while under way is its new group's.
        person, known, name = self._moved.get(v.id, v.person), v.known, v.name
        if (merged_into := self._merged_away.get(person)) is not None:
            joined = self.gallery.get(merged_into)
            person, known, name = merged_into, joined is not None, joined.name if joined else None
        if update:
            # Once stored as known, the gallery owns the row's name (renames and merges
            # update it); a stranger named from history while this event waited stays known.
            statements.append((
                ("UPDATE visits SET left_at = ?, quality = ?, "
                 "name = CASE WHEN known = 1 THEN name ELSE ? END, "
                 "known = CASE WHEN known = 1 THEN 1 ELSE ? END WHERE id = ?"),
                (left_at, quality, name, int(known), v.id)))
        else:
            statements.append((
                ("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at, "
                 "quality) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"),
                (v.id, person, int(known), name, v.camera, float(v.arrived_at), left_at,
                 quality)))
        stored = self._stored_quality.get(v.id)
        if v.best is not None and (stored is None or v.best.quality > stored):
            crop, context, geometry, snapshot = await asyncio.to_thread(self._encode, v)
            images = (crop, context, geometry, snapshot)
            decision = decide(self.gallery.index, v.best.embedding, person if known else None)
            statements.append((
                ("UPDATE visits SET score = ?, runner = ?, runner_score = ?, threshold = ?, "
                 "margin = ?, box = ? WHERE id = ?"), (*decision.row(), _snapshot_box(v), v.id)))
            if update:
                statements.append((
                    ("UPDATE visit_images SET crop = ?, context = ?, geometry = ?, "
                     "snapshot = ? WHERE visit = ?"), (*images, v.id)))
            else:
                statements.append((
                    ("INSERT INTO visit_images (visit, crop, context, geometry, snapshot) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (visit) DO NOTHING"), (v.id, *images)))
            self._stored_quality[v.id] = v.best.quality
        elif not update:
            statements.append((
                "INSERT INTO visit_images (visit) VALUES (?) ON CONFLICT (visit) DO NOTHING",
                (v.id,)))
        if known:
            statements.append((
                ("DELETE FROM visits WHERE id = ? AND known = 1 AND NOT EXISTS "
                 "(SELECT 1 FROM people WHERE hash = visits.person)"), (v.id,)))
        if (event.kind == "left" and not v.known and v.best is not None
                and v.best.quality >= GROUP_QUALITY
                and self.gallery.get(person) is None and person not in self._merged_away):
            statements.append(self._grouped(person, v.best.embedding))
        if event.kind == "left":
            self._moved.pop(v.id, None)
        return statements

    def _encode(self, v: VisitRecord) -> tuple[bytes, bytes, str, bytes | None]:
        import cv2

        assert v.best is not None
        images = v.best.images
        snapshot = None
        if v.best.frame is not None:
            frame = v.best.frame
            h, w = frame.shape[:2]
            scale = min(1.0, self.config.snapshot_max_side / max(h, w))
            if scale < 1.0:
                frame = cv2.resize(frame, (round(w * scale), round(h * scale)),
                                   interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", frame,
                                   [cv2.IMWRITE_JPEG_QUALITY, self.config.snapshot_quality])
            snapshot = buf.tobytes() if ok else None
        return images.crop, images.context, json.dumps(images.geometry()), snapshot

    def _grouped(self, person: str, embedding: Embedding) -> tuple[str, tuple[Any, ...]]:
        """Add an unknown visit's face to its group (a new group for a new stranger)."""
        mean, count = self._unknowns.get(person, (np.zeros_like(embedding), 0))
        return self._group_row(person, normalize((mean * count + embedding) / (count + 1)),
                               count + 1)

    def _group_row(self, person: str, mean: Embedding, count: int
                   ) -> tuple[str, tuple[Any, ...]]:
        """Group ``person`` is now ``count`` faces of mean ``mean``: in memory, and the
        statement that stores it."""
        self._unknowns[person] = (mean, count)
        # One group changed: the index follows it in milliseconds (GalleryIndex.replaced),
        # not a rebuild of every stranger's group at each departure.
        self.unknown_index = self.unknown_index.replaced(person, person, [mean])
        return (("INSERT INTO unknowns (hash, model, dim, embedding, count, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hash) DO UPDATE SET "
                 "model = excluded.model, dim = excluded.dim, embedding = excluded.embedding, "
                 "count = excluded.count"),
                (person, self.gallery.model, int(mean.shape[0]),
                 np.ascontiguousarray(mean, "<f4").tobytes(), count, time.time()))

    def _group_policy(self) -> OpenSetPolicy:
        return replace(self.gallery.policy, stranger_far=GROUP_FAR)

    def _rebuild_unknowns(self) -> None:
        """The unknowns' index from scratch (at start, and after pruning)."""
        self.unknown_index = GalleryIndex.from_samples(
            [(h, h, [m]) for h, (m, _) in self._unknowns.items()], "centroid",
            self._group_policy())

    def gallery_changed(self, change: GalleryChange) -> None:
        """An enrolled stranger is no longer unknown (Gallery.add removed the group's row);
        a deleted person's visits went with them (and their open visit's events are not
        stored)."""
        event, person = change.event, change.person
        if person is None:
            return
        if event == "merged":  # a stranger named as somebody enrolled, or two people one
            for merged in change.hashes:
                if merged != person.hash:
                    self._merged_away[merged] = person.hash
            while len(self._merged_away) > MAX_TOMBSTONES:
                del self._merged_away[next(iter(self._merged_away))]
        if person.hash in self._unknowns:
            del self._unknowns[person.hash]
            self.unknown_index = self.unknown_index.removed(person.hash)
        if event == "deleted":
            self._last_seen.pop(person.hash, None)
            self._tombstone(person.hash)
            # Strangers who had joined them are strangers again: their later visits must
            # not come back under the deleted person's hash.
            for stranger in [s for s, p in self._merged_away.items() if p == person.hash]:
                del self._merged_away[stranger]

    # -- retention -----------------------------------------------------------------------

    async def _prune_forever(self) -> None:
        while True:
            try:
                await self.prune()
            except Exception:
                log.exception("deleting old visits failed")
            await asyncio.sleep(PRUNE_INTERVAL_S)

    async def prune(self, now: float | None = None) -> int:
        """Delete visits older than the retention, and stranger groups left without
        visits. Returns the number of visits deleted."""
        cutoff = (now or time.time()) - self.config.retention_days * 86400
        old = await self.db.query(
            "SELECT COUNT(*) FROM visits WHERE COALESCE(left_at, arrived_at) < ?", (cutoff,))
        if not old[0][0]:
            return 0
        await self.db.forget([
            ("DELETE FROM visits WHERE COALESCE(left_at, arrived_at) < ?", (cutoff,)),
            ("DELETE FROM unknowns WHERE hash NOT IN (SELECT DISTINCT person FROM visits)",
             ()),
        ])
        await self._reload_unknowns()
        return int(old[0][0])

    async def _reload_unknowns(self) -> None:
        alive = {r[0] for r in await self.db.query("SELECT hash FROM unknowns")}
        self._unknowns = {h: v for h, v in self._unknowns.items() if h in alive}
        self._rebuild_unknowns()

    # -- reading -------------------------------------------------------------------------

    def in_view(self, person: str) -> bool:
        """Whether a visit of ``person`` (enrolled or not) is under way, on any camera."""
        return any(v.person == person for v in self._open.values())

    def last_seen(self, person: str) -> float | None:
        """When ``person`` was last seen: now while a visit of theirs is under way (not when
        it began), else when their latest visit ended; None if never."""
        return time.time() if self.in_view(person) else self._last_seen.get(person)

    async def visits(self, person: str | None = None, known: bool | None = None,
                     since: float | None = None, until: float | None = None,
                     cursor: str | None = None, limit: int = 50, camera: str | None = None,
                     low_margin: bool = False, reviewed: bool | None = None,
                     ) -> tuple[list[Visit], str | None]:
        """Visits, newest first, filtered; and the cursor of the next page (None at the end).
        Keyset paging on (arrived_at, id): a page costs the same at any depth.
        ``low_margin``: only decisions within review.LOW_MARGIN of going the other way."""
        where: list[str] = []
        params: list[Any] = []
        if camera is not None:
            where.append("camera = ?")
            params.append(camera)
        if low_margin:
            where.append("margin < ?")
            params.append(LOW_MARGIN)
        if reviewed is not None:
            where.append(f"reviewed_at IS {'NOT ' if reviewed else ''}NULL")
        if person is not None:
            where.append("person = ?")
            params.append(person)
        if known is not None:
            where.append("known = ?")
            params.append(int(known))
        if since is not None:
            where.append("COALESCE(left_at, arrived_at) >= ?")
            params.append(since)
        if until is not None:
            where.append("arrived_at < ?")
            params.append(until)
        if cursor is not None:
            at, vid = _parse_cursor(cursor)
            where.append("(arrived_at < ? OR (arrived_at = ? AND id < ?))")
            params += [at, at, vid]
        limit = max(1, min(limit, MAX_PAGE))
        sql = (f"SELECT {_VISIT_COLUMNS} FROM visits "
               f"{'WHERE ' + ' AND '.join(where) if where else ''} "
               "ORDER BY arrived_at DESC, id DESC LIMIT ?")
        rows = await self.db.query(sql, (*params, limit + 1))
        page = [Visit.from_row(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, (f"{page[-1].arrived_at!r}_{page[-1].id}" if more and page else None)

    async def visit(self, vid: str) -> Visit:
        rows = await self.db.query(f"SELECT {_VISIT_COLUMNS} FROM visits WHERE id = ?",
                                        (vid,))
        if not rows:
            raise NotFound(f"no visit {vid}")
        return Visit.from_row(rows[0])

    async def image(self, vid: str, which: str) -> bytes | None:
        column = {"crop": "crop", "snapshot": "snapshot"}[which]
        rows = await self.db.query(
            f"SELECT {column} FROM visit_images WHERE visit = ?", (vid,))
        return rows[0][0] if rows else None

    async def unknown_groups(self, limit: int = 50, offset: int = 0
                             ) -> tuple[list[dict[str, Any]], int]:
        """Strangers seen, most recently seen first: hash, visits, first and last seen
        (now, and ``in_view``, while a visit of theirs is under way)."""
        rows = await self.db.query(
            f"{_GROUP_SELECT} GROUP BY person ORDER BY 4 DESC LIMIT ? OFFSET ?",
            (max(1, min(limit, MAX_PAGE)), max(0, offset)))
        total = await self.db.query(
            "SELECT COUNT(DISTINCT person) FROM visits WHERE known = 0")
        return self._groups(rows), total[0][0]

    async def seen_before(self, embedding: Embedding) -> dict[str, Any] | None:
        """The stranger's group this face belongs to, by the rule that groups strangers'
        visits (``unknown_index``, GROUP_FAR), as ``unknown_groups`` shows it plus the
        ``similarity``; None for a face not seen before (or whose visits are gone)."""
        match = self.unknown_index.identify(embedding)
        if match is None:
            return None
        rows = await self.db.query(f"{_GROUP_SELECT} AND person = ? GROUP BY person",
                                   (match.hash,))
        if not rows:
            return None
        return {**self._groups(rows)[0], "similarity": round(match.similarity, 4)}

    def _groups(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        now = time.time()
        in_view = {v.person for v in self._open.values()}
        return [{"hash": p, "visits": n, "first_seen": first,
                 "last_seen": now if p in in_view else last, "in_view": p in in_view,
                 "crop": f"/unknowns/{p}/crop"} for p, n, first, last in rows]

    async def best_crop(self, person: str) -> bytes | None:
        rows = await self.db.query(
            "SELECT i.crop FROM visits v JOIN visit_images i ON i.visit = v.id "
            "WHERE v.person = ? ORDER BY v.quality DESC LIMIT 1", (person,))
        return rows[0][0] if rows else None

    # -- changing ------------------------------------------------------------------------

    async def assign(self, vid: str, person: str, name: str) -> None:
        """Visit ``vid`` was ``person``'s (the user said so): it is theirs, named."""
        await self.db.write([("UPDATE visits SET person = ?, known = 1, name = ? WHERE id = ?",
                              (person, name, vid))])

    async def reviewed(self, vids: list[str]) -> None:
        """A user confirmed or corrected these visits (the review page's "to review" list
        leaves them out)."""
        marks = ", ".join("?" * len(vids))
        await self.db.write([(f"UPDATE visits SET reviewed_at = ? WHERE id IN ({marks})",
                              (time.time(), *vids))])

    async def split(self, group: str, vids: list[str], embeddings: list[Embedding]) -> str:
        """These visits of stranger ``group`` (with their faces' ``embeddings``) are somebody
        else: they become a group of their own, whose hash is returned. The faces that were
        counted in the group's mean (visits ended, with a look good enough to judge) leave it
        for the new group's (a group left without faces is gone); a visit under way joins its
        new group when it ends."""
        new = face_hash(embeddings[0])
        marks = ", ".join("?" * len(vids))
        counted = {vid for vid, left, quality in await self.db.query(
            f"SELECT id, left_at, quality FROM visits WHERE id IN ({marks})", tuple(vids))
            if left is not None and quality is not None and quality >= GROUP_QUALITY}
        faces = [e for vid, e in zip(vids, embeddings) if vid in counted]
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            f"UPDATE visits SET person = ? WHERE known = 0 AND person = ? AND id IN ({marks})",
            (new, group, *vids))]
        if faces:
            total = np.sum(np.stack(faces), axis=0)
            if (old := self._unknowns.get(group)) is not None:
                mean, count = old
                if count > len(faces):
                    statements.append(self._group_row(
                        group, normalize(mean * count - total), count - len(faces)))
                else:
                    del self._unknowns[group]
                    self.unknown_index = self.unknown_index.removed(group)
                    statements.append(("DELETE FROM unknowns WHERE hash = ?", (group,)))
            statements.append(self._group_row(new, normalize(total), len(faces)))
        await self.db.write(statements)
        self._moved.update((vid, new) for vid in vids if vid in self._open)
        return new

    async def unname(self, vid: str, stranger: str) -> None:
        """Visit ``vid`` was not who it was named as: it is the stranger ``stranger``'s."""
        await self.db.write([("UPDATE visits SET person = ?, known = 0, name = NULL "
                              "WHERE id = ?", (stranger, vid))])

    async def delete_visit(self, vid: str) -> Visit:
        visit = await self.visit(vid)
        self._tombstone(vid)
        await self.db.forget([("DELETE FROM visits WHERE id = ?", (vid,))])
        await self._forgotten(visit.person)
        return visit

    async def forget(self, person: str) -> int:
        """Delete every visit of ``person`` (a hash, enrolled or not), images included."""
        rows = await self.db.query("SELECT COUNT(*) FROM visits WHERE person = ?",
                                        (person,))
        self._tombstone(person)
        await self.db.forget([
            ("DELETE FROM visits WHERE person = ?", (person,)),
            ("DELETE FROM unknowns WHERE hash = ?", (person,)),
        ])
        await self._forgotten(person)
        return int(rows[0][0])

    async def _forgotten(self, person: str) -> None:
        left = await self.db.query(
            "SELECT MAX(COALESCE(left_at, arrived_at)) FROM visits WHERE person = ?", (person,))
        if left[0][0] is None:
            self._last_seen.pop(person, None)
            if person in self._unknowns:
                await self.db.forget([("DELETE FROM unknowns WHERE hash = ?", (person,))])
                del self._unknowns[person]
                self.unknown_index = self.unknown_index.removed(person)
        else:
            self._last_seen[person] = left[0][0]

    async def stored_faces(self, person: str | None = None, visit: str | None = None,
                           limit: int = SAMPLES_FROM_HISTORY) -> list[StoredFace]:
        """The best stored faces of a person's visits (or of one visit), best first."""
        if visit is not None:
            sql, params = (("SELECT i.context, i.geometry, i.crop FROM visit_images i "
                            "WHERE i.visit = ?"), (visit,))
        else:
            sql, params = (("SELECT i.context, i.geometry, i.crop FROM visits v JOIN "
                            "visit_images i ON i.visit = v.id WHERE v.person = ? "
                            "ORDER BY v.quality DESC LIMIT ?"), (person, limit))
        return [StoredFace(context, json.loads(geometry) if geometry else None, crop)
                for context, geometry, crop in await self.db.query(sql, params)]


def _snapshot_box(v: VisitRecord) -> str | None:
    """The best face's box in its frame, as fractions of the frame's width and height (the
    snapshot is that frame, scaled)."""
    if v.best is None or v.best.box is None or v.best.frame is None:
        return None
    h, w = v.best.frame.shape[:2]
    x, y, bw, bh = v.best.box
    return json.dumps([round(x / w, 4), round(y / h, 4), round(bw / w, 4), round(bh / h, 4)])


def images_of(face: StoredFace) -> StoredImages:
    return StoredImages(face.crop, face.context, face.geometry)


def _parse_cursor(cursor: str) -> tuple[float, str]:
    at, _, vid = cursor.partition("_")
    try:
        return float(at), vid
    except ValueError:
        raise GalleryError(f"not a visits cursor: {cursor!r}") from None
