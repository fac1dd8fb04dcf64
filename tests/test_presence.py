"""Presence: who is in view, visits and their events, judged on analysed frames.

Driven with real embeddings of real photos (Obama, Biden) through the same entry points the
pipeline uses (plan, observe), with capture times chosen by the test: absence and departures
must follow the frames' capture times, not the wall clock.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from facestream.config import Config
from facestream.images import decode_image
from facestream.matching import GalleryIndex, face_hash
from facestream.presence import Presence, VisitEvent
from facestream.recognition import Face, FrameResult, Recognizer

from .conftest import BIDEN, BIDEN2, OBAMA, OBAMA2

POLICY = Config().recognition.policy()
THRESHOLD = Config().recognition.threshold()
BOX = (100, 100, 120, 120)


@pytest.fixture(scope="module")
def faces(recognizer: Recognizer) -> dict[str, Face]:
    out = {}
    for key, path in {"o1": OBAMA, "o2": OBAMA2, "b1": BIDEN, "b2": BIDEN2}.items():
        (face,) = recognizer.analyze_image(decode_image(path.read_bytes(), 10**8))[:1]
        out[key] = face
    return out


def seen(face: Face, box: tuple[int, int, int, int] = BOX) -> Face:
    """The face as a live frame shows it at ``box``."""
    return Face(box, face.embedding, face.images, face.score, face.look)


class Feed:
    """Plays analysed frames into a Presence, as the pipeline does, at chosen capture times."""

    def __init__(self, presence: Presence, t0: float | None = None) -> None:
        self.presence = presence
        self.t = time.monotonic() if t0 is None else t0
        self.seq = 0
        self.events: list[VisitEvent] = []
        presence.on_visit(self.events.append)

    def frame(self, *faces: Face, dt: float = 0.04, seq: int | None = None) -> bool:
        self.t += dt
        self.seq += 1
        plan = self.presence.plan(self.t)
        result = FrameResult(list(faces), 0.0, 0.0, sum(f.embedding is not None for f in faces))
        return self.presence.observe(plan, self.seq if seq is None else seq, self.t,
                                     self.seq, None, result)

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, e.visit.person) for e in self.events]


def presence(gallery: GalleryIndex | None = None, unknowns: GalleryIndex | None = None,
             **kwargs: float) -> Presence:
    index = gallery or GalleryIndex.empty(POLICY)
    return Presence("cam", THRESHOLD, gallery=lambda: index, unknowns=lambda: unknowns,
                    **kwargs)  # type: ignore[arg-type]


def enrolled(**people: Face) -> GalleryIndex:
    return GalleryIndex.from_samples(
        [(face_hash(f.embedding), name, [f.embedding]) for name, f in people.items()],
        "centroid", POLICY)


def test_a_person_who_stays_is_one_visit_through_missed_detections(faces: dict) -> None:
    feed = Feed(presence(enrolled(obama=faces["o1"]), depart_after_s=3.0))
    obama = face_hash(faces["o1"].embedding)
    feed.frame(seen(faces["o2"]))
    assert feed.kinds() == [("arrived", obama)]
    for second in range(20):  # 20 s in view; every 2nd second the face is missed for 0.48 s
        for k in range(25):
            if second % 2 and k < 12:
                feed.frame()  # (longer than track_timeout_s: GET /hash says nobody)
            else:
                feed.frame(seen(faces["o2"]))
    assert feed.kinds() == [("arrived", obama)]
    assert feed.presence.snapshot.primary is not None
    for _ in range(int(2.9 / 0.04)):  # gone for 2.9 s: not yet a departure
        feed.frame()
    assert feed.presence.snapshot.faces == () and feed.kinds() == [("arrived", obama)]
    for _ in range(5):
        feed.frame()
    assert feed.kinds() == [("arrived", obama), ("left", obama)]
    arrived, left = feed.events
    assert arrived.visit.id == left.visit.id and left.visit.known and left.visit.name == "obama"
    assert left.visit.left_at is not None and left.visit.left_at > arrived.visit.arrived_at


def test_absence_is_judged_on_analysed_frames_not_the_wall_clock(faces: dict) -> None:
    """A loaded machine analyses frames seconds late: a face in them is still in view."""
    feed = Feed(presence(track_timeout_s=0.35), t0=time.monotonic() - 5.0)
    for _ in range(10):
        feed.frame(seen(faces["b1"]))  # captured ~5 s ago, analysed now
    assert [f.hash for f in feed.presence.snapshot.faces] == [face_hash(faces["b1"].embedding)]
    # ... and it leaves when analysed frames 0.35 s later no longer show it.
    feed.frame(dt=0.3)
    assert feed.presence.snapshot.faces != ()
    feed.frame(dt=0.1)
    assert feed.presence.snapshot.faces == ()


def test_a_face_recognised_on_its_second_look_arrives_once_by_name(faces: dict) -> None:
    """An unknown face is announced only after unknown_grace_s; recognised before that, it
    arrives as the person, and the unknown never arrives at all."""
    p = presence(enrolled(joe=faces["b1"]), unknown_grace_s=1.0, depart_after_s=2.0)
    feed = Feed(p)
    feed.frame(seen(faces["o1"]))  # somebody unknown
    assert feed.kinds() == []
    for _ in range(30):  # 1.2 s unknown: announced
        feed.frame(seen(faces["o1"]))
    stranger = face_hash(faces["o1"].embedding)
    assert feed.kinds() == [("arrived", stranger)]
    assert feed.events[0].visit.known is False


def test_stale_results_add_embeddings_without_moving_time_back(faces: dict) -> None:
    p = presence(enrolled(obama=faces["o1"]))
    feed = Feed(p)
    feed.frame(Face(BOX))  # detection only, nothing to show yet
    feed.frame(Face(BOX))
    newest = p.snapshot.frame_position
    # A slower worker's older frame, with the embedding, comes back now.
    stale = feed.frame(seen(faces["o2"]), seq=1)
    assert stale is True
    assert p.snapshot.frame_position == newest
    assert p.snapshot.primary is not None and p.snapshot.primary.name == "obama"


def test_live_faces_are_values_detached_from_tracks(faces: dict) -> None:
    p = presence()
    feed = Feed(p)
    feed.frame(seen(faces["b1"], (0, 0, 200, 200)), seen(faces["o1"], (300, 0, 80, 80)))
    largest_unknown = p.live_face(unknown_only=True)
    assert largest_unknown is not None
    assert largest_unknown.view.hash == face_hash(faces["b1"].embedding)
    assert np.array_equal(largest_unknown.first_embedding, faces["b1"].embedding)
    assert largest_unknown.first_images is faces["b1"].images
    by_hash = p.live_face(face_hash(faces["o1"].embedding))
    assert by_hash is not None and by_hash.view.box == (300, 0, 80, 80)
    assert p.live_face("0" * 64) is None
    with pytest.raises(AttributeError):
        largest_unknown.match = None  # type: ignore[misc]


def test_a_stranger_seen_before_keeps_their_group_hash(faces: dict) -> None:
    group = "f7d0" + "0" * 60
    unknowns = GalleryIndex.from_samples([(group, group, [faces["b1"].embedding])],
                                         "centroid", POLICY)
    feed = Feed(presence(unknowns=unknowns))
    feed.frame(seen(faces["b2"]))  # another photo of the same stranger
    assert [f.hash for f in feed.presence.snapshot.faces] == [group]
    feed.frame(seen(faces["o1"], (400, 0, 90, 90)))
    hashes = {f.hash for f in feed.presence.snapshot.faces}
    assert face_hash(faces["o1"].embedding) in hashes  # somebody new gets their own


def test_a_face_back_after_its_visit_ended_starts_a_new_visit_dated_now(faces: dict) -> None:
    """Back after 4 s (its visit ended at 3 s; the tracker still remembers the face for 5 s):
    a second visit, arriving when the face came back, not when it first did."""
    feed = Feed(presence(depart_after_s=3.0, unknown_grace_s=0.0))
    for _ in range(25):
        feed.frame(seen(faces["b1"]))
    for _ in range(100):  # 4 s away
        feed.frame()
    for _ in range(25):
        feed.frame(seen(faces["b2"]))
    kinds = [k for k, _ in feed.kinds()]
    assert kinds == ["arrived", "left", "arrived"]
    first, left, second = feed.events
    assert second.visit.id != first.visit.id
    assert second.visit.arrived_at - left.visit.left_at == pytest.approx(4.0, abs=0.1)
