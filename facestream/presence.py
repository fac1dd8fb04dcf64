"""Who is in view: the one owner of live presence.

The pipeline hands every analysed frame to ``Presence.observe``; nothing else changes who is
in view. Presence keeps the face tracks (``tracking.Tracker``, private to it) and decides:

- which faces the worker analysing the next frame must embed (``plan``);
- when a face has left the view: when an analysed frame captured ``track_timeout_s`` after
  its last sighting does not show it. Absence is judged on analysed frames' capture times,
  never on the wall clock, so a loaded machine that analyses late only answers late;
- visits: a person continuously in view (through missed detections, a turned head, a slow
  machine) is one visit with one ``arrived`` and one ``left``. A departure is confirmed after
  ``depart_after_s`` without them; an unknown face is announced once it has stayed unknown
  for ``unknown_grace_s`` (so a face recognised on its second look arrives once, by name).

Readers only get immutable values: ``snapshot`` (the GET /hash document), ``live_face`` (a
face in view with its embeddings and images: to enroll it, add it as a sample, or find the
sample behind a wrong match) and, through listeners, snapshots and visit events. Everything
here runs on the event loop and never blocks.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from .geometry import area
from .images import SampleImages
from .matching import Embedding, GalleryIndex, Match
from .recognition import FrameResult, TrackHint
from .tracking import BestView, FaceView, Track, Tracker

#: Visit events kept for GET /events.
MAX_EVENTS: Final = 200
#: With nobody coming or going, box positions are pushed at most this often.
BOX_REFRESH_S: Final = 0.5


@dataclass(frozen=True)
class Snapshot:
    """Who is in view, as of one analysed frame."""

    faces: tuple[FaceView, ...] = ()
    signal: bool = False
    #: When the frame behind ``faces`` was captured: monotonic and wall-clock seconds.
    captured_at: float | None = None
    updated_at: float | None = None
    frame_position: int = -1

    @property
    def primary(self) -> FaceView | None:
        return self.faces[0] if self.faces else None

    def to_json(self) -> dict[str, Any]:
        """The ``GET /hash`` document."""
        p = self.primary
        return {
            "hash": p.hash if p else None,
            "name": p.name if p else None,
            "known": p.known if p else False,
            "similarity": p.to_json()["similarity"] if p else None,
            "faces": [f.to_json() for f in self.faces],
            "signal": self.signal,
            "updated_at": self.updated_at,
            "frame_position": self.frame_position,
        }

    def who(self) -> list[tuple[str, str | None, bool]]:
        return sorted((f.hash, f.name, f.known) for f in self.faces)


@dataclass(frozen=True)
class LiveFace:
    """A face in view, detached from its track: what a handler needs to enroll it, add it
    as a sample, or find the enrolled sample behind a wrong match."""

    view: FaceView
    first_embedding: Embedding
    first_images: SampleImages | None
    latest_embedding: Embedding
    latest_images: SampleImages | None
    mean: Embedding
    match: Match | None


@dataclass(frozen=True)
class FramePlan:
    """Which faces the worker analysing one frame embeds (see Recognizer.analyze_frame):
    tracked faces due or looking different, and new faces only if ``embed_new``, which one
    frame at a time holds so that two workers never embed the same newcomer."""

    tracked: tuple[TrackHint, ...]
    embed_new: bool


@dataclass(frozen=True)
class VisitRecord:
    """One visit as it stands: who, where, from when to when (wall-clock seconds; ``left_at``
    None while they are in view), and the best view of their face (with its frame)."""

    id: str
    person: str
    name: str | None
    known: bool
    camera: str
    arrived_at: float
    left_at: float | None
    best: BestView | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "hash": self.person, "name": self.name, "known": self.known,
                "camera": self.camera, "arrived_at": self.arrived_at, "left_at": self.left_at}


@dataclass(frozen=True)
class VisitEvent:
    kind: Literal["arrived", "left"]
    visit: VisitRecord

    @property
    def at(self) -> float:
        left = self.visit.left_at
        return left if self.kind == "left" and left is not None else self.visit.arrived_at

    def to_json(self) -> dict[str, Any]:
        """The websocket ``event`` message and a GET /events entry."""
        v = self.visit
        return {"type": "event", "event": self.kind, "visit": v.id, "hash": v.person,
                "name": v.name, "known": v.known, "at": self.at, "camera": v.camera}


@dataclass
class _Visit:
    id: str
    person: str
    name: str | None
    known: bool
    first_seen: float  # capture time (monotonic) of the first frame showing them
    last_seen: float  # ... and of the latest one
    arrived_at: float  # wall clock
    announced: bool = False
    best: BestView | None = None

    def record(self, camera: str, left_at: float | None = None) -> VisitRecord:
        return VisitRecord(self.id, self.person, self.name, self.known, camera,
                           self.arrived_at, left_at, self.best)


class Presence:
    def __init__(
        self,
        camera: str,
        threshold: float,
        reembed_interval_s: float = 1.0,
        track_timeout_s: float = 0.35,
        depart_after_s: float = 3.0,
        unknown_grace_s: float = 1.0,
        gallery: Callable[[], GalleryIndex] = GalleryIndex.empty,
        unknowns: Callable[[], GalleryIndex | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera = camera
        self.depart_after_s = depart_after_s
        self.unknown_grace_s = unknown_grace_s
        self._tracker = Tracker(threshold, reembed_interval_s, track_timeout_s)
        self._gallery = gallery
        self._unknowns = unknowns
        self._clock = clock
        self._snapshot = Snapshot()
        self._new_claimed = False
        self._applied_seq = 0
        self._visits: dict[str, _Visit] = {}  # person -> their open visit
        self._events: deque[VisitEvent] = deque(maxlen=MAX_EVENTS)
        self._last_faces_push = 0.0
        self._snapshot_listeners: list[Callable[[Snapshot, Snapshot, bool], None]] = []
        self._visit_listeners: list[Callable[[VisitEvent], None]] = []

    # -- reading -------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        """Who is in view now (an immutable value, safe to read from any thread)."""
        return self._snapshot

    def live_face(self, wanted: str | None = None, unknown_only: bool = False
                  ) -> LiveFace | None:
        """The face in view showing hash ``wanted``; without it the largest face (the largest
        unknown one with ``unknown_only``). None if there is no such face."""
        tracks = sorted(self._tracker.tracks(), key=lambda t: area(t.box), reverse=True)
        if wanted is not None:
            track = next((t for t in tracks if t.hash == wanted), None)
        else:
            track = next((t for t in tracks if not unknown_only or t.match is None), None)
        if track is None:
            return None
        return LiveFace(track.view(), track.first_embedding, track.first_images,
                        track.embeddings[-1], track.last_images, track.mean, track.match)

    def recent_events(self) -> list[dict[str, Any]]:
        """Arrivals and departures, newest first (the last MAX_EVENTS). A departure is
        confirmed ``depart_after_s`` after the person was last seen, and dated then."""
        return sorted((e.to_json() for e in self._events), key=lambda e: e["at"],
                      reverse=True)

    def open_visits(self) -> list[VisitRecord]:
        return [v.record(self.camera) for v in self._visits.values() if v.announced]

    def on_snapshot(self, listener: Callable[[Snapshot, Snapshot, bool], None]) -> None:
        """``listener(new, old, boxes_due)`` after each change of who is in view (and, with
        ``boxes_due``, when only their boxes moved, at most every BOX_REFRESH_S)."""
        self._snapshot_listeners.append(listener)

    def on_visit(self, listener: Callable[[VisitEvent], None]) -> None:
        self._visit_listeners.append(listener)

    # -- the pipeline's side -------------------------------------------------------------

    def plan(self, captured_at: float) -> FramePlan:
        """The embedding plan for a frame captured at ``captured_at`` (see FramePlan); pass
        it back to ``observe`` or ``abandon``."""
        embed_new = not self._new_claimed
        self._new_claimed = True
        return FramePlan(tuple(self._tracker.plan(captured_at)), embed_new)

    def abandon(self, plan: FramePlan) -> None:
        """The frame planned for was not analysed (the worker failed)."""
        if plan.embed_new:
            self._new_claimed = False

    def observe(self, plan: FramePlan, seq: int, captured_at: float, frame_position: int,
                image: NDArray[np.uint8] | None, result: FrameResult) -> bool:
        """Apply one analysed frame (sequence number ``seq``, captured at ``captured_at``,
        monotonic). A result that comes back after a newer frame's (workers finish out of
        order) only contributes its embeddings: its boxes and its time are old news. Returns
        whether the result was such a stale one."""
        self.abandon(plan)
        stale = seq < self._applied_seq
        self._applied_seq = max(self._applied_seq, seq)
        self._tracker.update(result.faces, captured_at, self._gallery(), stale=stale,
                             unknowns=self._unknowns(), frame=image)
        if stale:
            self._publish(self._snapshot.signal, None, None, -1)
            return True
        self._tracker.expire(captured_at)
        wall = self._clock() - (time.monotonic() - captured_at)
        self._update_visits(captured_at, wall)
        self._publish(True, captured_at, wall, frame_position)
        return False

    def no_signal(self, now: float) -> None:
        """The camera is lost: nobody can be seen. Visits end once ``depart_after_s`` has
        passed on the wall clock (``tick``), as no frame will tell."""
        self._tracker.clear(now)
        self._publish(False, None, None, -1, clear=True)

    def tick(self, now: float) -> None:
        """Called periodically (monotonic ``now``): without a signal there are no frames to
        judge departures by, so the wall clock confirms them."""
        if not self._snapshot.signal:
            self._update_visits(now, self._clock())

    def gallery_changed(self) -> None:
        """Enrolled, renamed, merged or deleted: who the faces in view are may have changed."""
        self._tracker.rematch(self._gallery())
        for visit in self._visits.values():
            track = next((t for t in self._tracker.tracks() if t.hash == visit.person), None)
            if track is not None:
                visit.known = track.match is not None
                visit.name = track.match.name if track.match else None
        self._publish(self._snapshot.signal, None, None, -1)

    # -- visits --------------------------------------------------------------------------

    def _update_visits(self, frame_time: float, wall: float) -> None:
        in_view: dict[str, list[Track]] = {}
        for track in self._tracker.tracks():
            in_view.setdefault(track.hash, []).append(track)
        for person, tracks in in_view.items():
            visit = self._visits.get(person)
            if visit is None:
                first = min(t.first_seen for t in tracks)
                visit = _Visit(uuid.uuid4().hex, person, None, False, first, frame_time,
                               wall - (frame_time - first))
                self._visits[person] = visit
            match = next((t.match for t in tracks if t.match is not None), None)
            visit.known, visit.name = match is not None, match.name if match else None
            visit.last_seen = max(visit.last_seen, *(t.last_seen for t in tracks))
            for track in tracks:
                if track.best is not None and (visit.best is None
                                               or track.best.quality > visit.best.quality):
                    visit.best = track.best
            if not visit.announced and (visit.known or
                                        frame_time - visit.first_seen >= self.unknown_grace_s):
                visit.announced = True
                self._emit(VisitEvent("arrived", visit.record(self.camera)))
        for person, visit in list(self._visits.items()):
            if person in in_view or frame_time - visit.last_seen < self.depart_after_s:
                continue
            del self._visits[person]
            if visit.announced:
                left = wall - (frame_time - visit.last_seen)
                self._emit(VisitEvent("left", visit.record(self.camera, left)))

    def _emit(self, event: VisitEvent) -> None:
        self._events.append(event)
        for listener in self._visit_listeners:
            listener(event)

    # -- snapshots -----------------------------------------------------------------------

    def _publish(self, signal: bool, captured_at: float | None, wall: float | None,
                 position: int, clear: bool = False) -> None:
        old = self._snapshot
        new = Snapshot(tuple(self._tracker.views()), signal,
                       captured_at if captured_at is not None else old.captured_at,
                       wall if wall is not None else old.updated_at,
                       position if captured_at is not None else
                       (-1 if clear else old.frame_position))
        self._snapshot = new
        now = time.monotonic()
        boxes_due = (new.who() == old.who() and [f.box for f in new.faces] !=
                     [f.box for f in old.faces] and now - self._last_faces_push >= BOX_REFRESH_S)
        if new.who() != old.who() or boxes_due:
            self._last_faces_push = now
        for listener in self._snapshot_listeners:
            listener(new, old, boxes_due)


__all__ = ["FramePlan", "LiveFace", "Presence", "Snapshot", "VisitEvent", "VisitRecord"]
