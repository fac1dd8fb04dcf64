"""Face tracks between frames: who is in view, keeping name and hash while a face stays.

Pure logic, no I/O: the live pipeline feeds it detection results and reads ``views()``.
A detection is matched to an existing track by box overlap; only new faces, tracked faces
whose last embedding is older than ``reembed_interval``, and tracked faces whose look changed
since their last embedding (the worker checks) are embedded again. A track whose new embedding
no longer resembles it (a camera cut, somebody else in that place) is split at once, so a name
follows the person, not the box. Who a track is comes from the gallery's open-set decision
(``GalleryIndex.identify``) on its evidence: the quality-weighted mean of its best recent
looks (``Track.evidence``). An unknown face that is lost for a moment and comes back within
``memory_s`` gets its provisional hash back.

Faces in view together are different people, whatever they look like: no two tracks ever
show the same hash (``Tracker._distinct``). Of two faces the gallery names the same person,
the one more like them keeps the name (the one that had it, unless the other is clearly
more like them) and the other is a stranger; of two faces that resemble the same stranger's
group, the one in view first shows the group's hash and the other its own.

A far face gets a few good looks and many poor ones, so the evidence is weighted by each
look's quality (detector confidence, size, how frontal, how sharp: recognition.look_quality),
keeps the EVIDENCE_KEPT best looks (a good look is not pushed out by the poor ones after it)
and is not renormalised: its score against a person is the weighted mean of the looks'
own similarities, never higher than the looks say. Averaging similarities narrows a
stranger's spread around their mean, so the single-look open-set threshold keeps at least
the stranger rate it was calibrated for (README, "Faces at a distance").
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .geometry import TRACK_IOU, Box, iou
from .images import SampleImages
from .matching import Embedding, GalleryIndex, Match, face_hash, normalize
from .recognition import Face, TrackHint

#: Embeddings kept per track for its running mean.
EMBEDDINGS_KEPT = 10
#: Looks kept per track for its evidence: the best ones (by quality).
EVIDENCE_KEPT = 8
#: A look's weight is at least this (a face only ever seen poorly is still decided on).
MIN_LOOK_WEIGHT = 0.02
#: Frames a new track embedded from the stream copy asks for a full-resolution look.
FULL_RES_TRIES = 2
#: A face this many pixels wide or more counts as fully sharp for its best view.
BEST_SIDE = 112
#: Of two faces in view named the same person, the one named so before keeps the name
#: unless the other's similarity is higher by this much.
NAME_HOLD = 0.05


@dataclass(frozen=True)
class BestView:
    """A face's best embedded view: how good it was, its embedding and gallery images, when
    (the frame's capture time) and the frame itself (BGR, for a snapshot)."""

    quality: float
    embedding: Embedding
    images: SampleImages
    captured_at: float
    frame: NDArray[np.uint8] | None = field(default=None, compare=False, repr=False)
    #: The face's box in ``frame`` (x, y, w, h pixels), for the snapshot viewer.
    box: Box | None = None


@dataclass(frozen=True)
class FaceView:
    """One face as the API shows it."""

    hash: str
    name: str | None
    known: bool
    similarity: float | None
    box: Box

    def to_json(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "name": self.name,
            "known": self.known,
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "box": list(self.box),
        }


@dataclass
class Track:
    id: int
    box: Box
    first_seen: float  # capture time of the frame the face first appeared in
    last_seen: float
    last_embedded: float
    first_embedding: Embedding
    embeddings: deque[Embedding] = field(default_factory=lambda: deque(maxlen=EMBEDDINGS_KEPT))
    match: Match | None = None
    #: Gallery images of the face at its first and at its latest embedding.
    first_images: SampleImages | None = None
    last_images: SampleImages | None = None
    #: The face's look at its latest embedding (see recognition.look).
    look: NDArray[np.float32] | None = None
    #: The hash an unknown face shows: its unknown group's (a stranger seen before), else
    #: the hash of its first embedding.
    provisional_hash: str = ""
    #: The best view of the face so far (detector score times size), for its visit.
    best: BestView | None = None
    #: The looks its name is decided on: (quality, embedding), best kept.
    looks: list[tuple[float, Embedding]] = field(default_factory=list)
    first_quality: float = 0.0
    #: Looks still to ask for at full resolution: a face first embedded from the scaled
    #: stream copy (the fast pass found it) is due again at once, when the worker gets the
    #: full-resolution region around it (tried twice at most).
    full_res_wanted: int = 0

    def __post_init__(self) -> None:
        self.provisional_hash = self.provisional_hash or face_hash(self.first_embedding)
        if not self.embeddings:
            self.embeddings.append(self.first_embedding)
        if not self.looks:
            self.looks.append((max(MIN_LOOK_WEIGHT, self.first_quality), self.first_embedding))

    def add_look(self, embedding: Embedding, quality: float) -> None:
        """One more embedded look; beyond EVIDENCE_KEPT the poorest (the oldest of equals)
        goes."""
        self.embeddings.append(embedding)
        self.looks.append((max(MIN_LOOK_WEIGHT, quality), embedding))
        if len(self.looks) > EVIDENCE_KEPT:
            worst = min(range(len(self.looks)), key=lambda i: self.looks[i][0])
            del self.looks[worst]

    @property
    def evidence(self) -> Embedding:
        """The quality-weighted mean of its kept looks, not renormalised (see the module's
        docstring): what the gallery decides on."""
        weights = np.array([q for q, _ in self.looks], dtype=np.float32)
        stacked = np.stack([e for _, e in self.looks])
        return (weights @ stacked / float(weights.sum())).astype(np.float32)

    def offer(self, face: Face, seen_at: float, frame: NDArray[np.uint8] | None) -> None:
        """Keep ``face`` (in ``frame``) as the track's best view if it is better."""
        if face.embedding is None or face.images is None:
            return
        quality = face.quality or \
            face.score * min(1.0, (face.box[2] * face.box[3]) ** 0.5 / BEST_SIDE)
        if self.best is None or quality > self.best.quality:
            self.best = BestView(quality, face.embedding, face.images, seen_at, frame,
                                 face.box)

    @property
    def mean(self) -> Embedding:
        return normalize(np.mean(np.stack(self.embeddings), axis=0))

    @property
    def hash(self) -> str:
        return self.match.hash if self.match else self.provisional_hash

    @property
    def area(self) -> int:
        return self.box[2] * self.box[3]

    def view(self) -> FaceView:
        m = self.match
        return FaceView(
            hash=self.hash,
            name=m.name if m else None,
            known=m is not None,
            similarity=m.similarity if m else None,
            box=self.box,
        )


class Tracker:
    def __init__(
        self,
        threshold: float,
        reembed_interval: float = 1.0,
        timeout: float = 0.4,
        memory_s: float = 5.0,
    ) -> None:
        self.threshold = threshold
        self.reembed_interval = reembed_interval
        self.timeout = timeout
        self.memory_s = memory_s
        self._tracks: list[Track] = []
        self._lost: deque[tuple[float, Track]] = deque(maxlen=64)
        self._ids = itertools.count(1)
        self._named: dict[str, int] = {}  # person's hash -> the track showing their name

    # -- what the workers need -----------------------------------------------------------

    def plan(self, now: float) -> list[TrackHint]:
        """What the worker analysing a frame captured ``now`` needs to know of each track,
        claiming the ones due for re-embedding: they count as embedded from now, so a frame
        analysed concurrently by another worker does not embed the same face twice."""
        hints = []
        for t in self._tracks:
            due = now - t.last_embedded >= self.reembed_interval or t.full_res_wanted > 0
            if due:
                t.last_embedded = now
                t.full_res_wanted = max(0, t.full_res_wanted - 1)
            hints.append(TrackHint(t.box, t.look, due))
        return hints

    # -- updates -------------------------------------------------------------------------

    def update(
        self, faces: Sequence[Face], seen_at: float, index: GalleryIndex, stale: bool = False,
        unknowns: GalleryIndex | None = None, frame: NDArray[np.uint8] | None = None,
    ) -> None:
        """Apply one frame's detections, captured at ``seen_at`` (monotonic seconds).

        ``stale``: a newer frame's result was applied already (workers finish out of order,
        and a frame with embeddings takes longer than one without). Its boxes are old news,
        but its embeddings are not: they still start tracks for new faces and feed the
        tracks they belong to, without moving any box back in time.
        """
        if stale:
            faces = [f for f in faces if f.embedding is not None]
        pairs = sorted(
            (
                (iou(t.box, f.box), ti, fi)
                for ti, t in enumerate(self._tracks)
                for fi, f in enumerate(faces)
            ),
            reverse=True,
        )
        used_tracks: set[int] = set()
        used_faces: set[int] = set()
        ended: list[Track] = []
        for overlap, ti, fi in pairs:
            if overlap < TRACK_IOU:
                break
            if ti in used_tracks or fi in used_faces:
                continue
            used_tracks.add(ti)
            used_faces.add(fi)
            track, face = self._tracks[ti], faces[fi]
            if face.embedding is not None and float(face.embedding @ track.mean) < self.threshold:
                if not stale:
                    # Same place, different person: end this track and start a new one.
                    ended.append(track)
                    used_faces.discard(fi)
                continue
            if not stale:
                track.box = face.box
                track.last_seen = seen_at
            if face.embedding is not None:
                track.add_look(face.embedding, face.quality)
                track.full_res_wanted = 0 if face.full_res else track.full_res_wanted
                track.last_embedded = max(track.last_embedded, seen_at)
                track.last_images = face.images or track.last_images
                track.look = face.look if face.look is not None else track.look
                track.match = index.identify(track.evidence)
                track.offer(face, seen_at, frame)
        for track in ended:
            self._end(track, seen_at)
        for fi, face in enumerate(faces):
            if fi in used_faces or face.embedding is None:
                continue  # a face without an embedding waits for the next frame
            track = self._new_track(face, face.embedding, seen_at, index, unknowns)
            track.offer(face, seen_at, frame)
            self._tracks.append(track)
        self._distinct()

    def _distinct(self) -> None:
        """No two tracks in view show the same hash: they are two people (see the module's
        docstring)."""
        named: dict[str, list[Track]] = {}
        for track in self._tracks:
            if track.match is not None:
                named.setdefault(track.match.hash, []).append(track)
        holders: dict[str, int] = {}
        for person, tracks in named.items():
            keeper = max(tracks, key=lambda t: t.match.similarity  # type: ignore[union-attr]
                         + (NAME_HOLD if self._named.get(person) == t.id else 0.0))
            holders[person] = keeper.id
            for track in tracks:
                if track is not keeper:
                    track.match = None
        self._named = holders
        shown: set[str] = set(holders)
        for track in sorted((t for t in self._tracks if t.match is None), key=lambda t: t.id):
            if track.provisional_hash in shown:  # its own (of its first, latest or mean look)
                track.provisional_hash = next(
                    (h for h in map(face_hash, (track.first_embedding, track.embeddings[-1],
                                                track.mean)) if h not in shown),
                    track.provisional_hash)
            shown.add(track.provisional_hash)

    def _new_track(self, face: Face, emb: Embedding, seen_at: float, index: GalleryIndex,
                   unknowns: GalleryIndex | None) -> Track:
        revived = self._revive(emb, seen_at)
        if revived is not None:
            revived.box = face.box
            # Back in view: this appearance starts now (its earlier one may be a past visit).
            revived.first_seen = revived.last_seen = revived.last_embedded = seen_at
            # Who it is is decided again from what is seen now: the looks from before the
            # gap may be somebody else's who stood there (a far, poorly seen stranger must
            # not inherit a name through the old track's good looks).
            revived.looks.clear()
            revived.add_look(emb, face.quality)
            revived.full_res_wanted = 0 if face.full_res else FULL_RES_TRIES
            revived.last_images = face.images or revived.last_images
            revived.look = face.look
            revived.match = index.identify(revived.evidence)
            return revived
        seen_before = unknowns.identify(emb) if unknowns is not None else None
        track = Track(
            id=next(self._ids),
            box=face.box,
            first_seen=seen_at,
            last_seen=seen_at,
            last_embedded=seen_at,
            first_embedding=emb,
            first_images=face.images,
            last_images=face.images,
            look=face.look,
            provisional_hash=seen_before.hash if seen_before is not None else "",
            first_quality=face.quality,
            full_res_wanted=0 if face.full_res else FULL_RES_TRIES,
        )
        track.match = index.identify(track.evidence)
        return track

    def _revive(self, emb: Embedding, now: float) -> Track | None:
        best: tuple[float, int] | None = None
        for i, (lost_at, track) in enumerate(self._lost):
            if now - lost_at > self.memory_s:
                continue
            sim = float(emb @ track.mean)
            if sim >= self.threshold and (best is None or sim > best[0]):
                best = (sim, i)
        if best is None:
            return None
        _, track = self._lost[best[1]]
        del self._lost[best[1]]
        return track

    def _end(self, track: Track, now: float) -> None:
        if track in self._tracks:
            self._tracks.remove(track)
            self._lost.append((now, track))

    def expire(self, now: float) -> bool:
        """Drop tracks not seen for ``timeout`` before ``now`` (the capture time of the
        newest analysed frame: absence is judged on frames, not the wall clock); True if
        any was dropped."""
        gone = [t for t in self._tracks if now - t.last_seen > self.timeout]
        for track in gone:
            self._end(track, now)
        return bool(gone)

    def clear(self, now: float) -> None:
        for track in list(self._tracks):
            self._end(track, now)

    def rematch(self, index: GalleryIndex) -> None:
        """Re-evaluate every track against a changed gallery (enroll, rename, delete)."""
        for track in self._tracks:
            track.match = index.identify(track.evidence)
        for _, track in self._lost:
            track.match = None  # recomputed on revival
        self._distinct()

    # -- reading -------------------------------------------------------------------------

    def views(self) -> list[FaceView]:
        """Faces in view, largest first."""
        return [t.view() for t in sorted(self._tracks, key=lambda t: t.area, reverse=True)]

    def tracks(self) -> Iterable[Track]:
        return tuple(self._tracks)

    def largest(self) -> Track | None:
        return max(self._tracks, key=lambda t: t.area, default=None)

    def find(self, face_hash: str) -> Track | None:
        """The track in view showing ``face_hash`` (largest if several)."""
        by_size = sorted(self._tracks, key=lambda t: t.area, reverse=True)
        return next((t for t in by_size if t.hash == face_hash), None)

    def enrollable(self, wanted_hash: str | None = None) -> Track | None:
        """The track to enroll from the live view: the one with ``wanted_hash``, else the
        largest unknown face."""
        if wanted_hash is not None:
            return self.find(wanted_hash)
        by_size = sorted(self._tracks, key=lambda t: t.area, reverse=True)
        return next((t for t in by_size if t.match is None), None)
