"""Tracking logic: name and hash stay with a face while it is in view.

These drive the tracker with real embeddings of real photos (Obama, Biden) so that "same
person" and "different person" mean what they mean in production.
"""

from __future__ import annotations

import numpy as np
import pytest

from facestream.config import Config
from facestream.images import decode_image
from facestream.matching import GalleryIndex, face_hash
from facestream.recognition import Face, Recognizer, TrackHint
from facestream.tracking import Tracker

from .conftest import BIDEN, BIDEN2, OBAMA, OBAMA2, OBAMA3

THRESHOLD = Config().recognition.threshold()
POLICY = Config().recognition.policy()


@pytest.fixture(scope="module")
def emb(recognizer: Recognizer) -> dict[str, np.ndarray]:
    out = {}
    for key, path in {"o1": OBAMA, "o2": OBAMA2, "o3": OBAMA3, "b1": BIDEN, "b2": BIDEN2}.items():
        faces = recognizer.analyze_image(decode_image(path.read_bytes(), 10**8))
        assert faces[0].embedding is not None
        out[key] = faces[0].embedding
    return out


def gallery(**people: np.ndarray) -> GalleryIndex:
    names = list(people)
    return GalleryIndex([face_hash(people[n]) for n in names], names,
                        np.stack(list(people.values())), POLICY)


def skipped(hints: list[TrackHint]) -> list[tuple[int, int, int, int]]:
    return [h.box for h in hints if not h.due]


def due(hints: list[TrackHint]) -> list[tuple[int, int, int, int]]:
    return [h.box for h in hints if h.due]


BOX = (100, 100, 80, 80)
LOOK = np.full(64, 0.125, dtype=np.float32)
MOVED = (108, 104, 80, 80)


def test_unknown_face_keeps_its_provisional_hash_and_is_not_reembedded(emb: dict) -> None:
    t = Tracker(THRESHOLD, reembed_interval=1.0, timeout=0.4)
    empty = GalleryIndex.empty()
    t.update([Face(BOX, emb["o1"], look=LOOK)], 0.0, empty)
    (view,) = t.views()
    assert not view.known and view.hash == face_hash(emb["o1"])
    # The worker is told the face's look at that embedding, to notice somebody else there.
    assert t.plan(0.05)[0].look is LOOK
    hints = t.plan(0.1)
    assert skipped(hints) == [BOX] and due(hints) == []  # embedded just now: not again
    t.update([Face(MOVED, None)], 0.1, empty)  # detection only
    t.update([Face(MOVED, emb["o2"])], 1.2, empty)  # periodic re-embedding, another photo
    (view,) = t.views()
    assert view.hash == face_hash(emb["o1"]) and view.box == MOVED
    assert due(t.plan(2.5)) == [MOVED]  # due again after reembed_interval...
    assert skipped(t.plan(2.6)) == [MOVED]  # ...and claimed: a concurrent frame skips it


def test_enrolled_face_is_named_and_leaves_after_timeout(emb: dict) -> None:
    t = Tracker(THRESHOLD, timeout=0.4)
    index = gallery(obama=emb["o1"])
    t.update([Face(BOX, emb["o3"])], 0.0, index)
    (view,) = t.views()
    assert view.known and view.name == "obama" and view.hash == face_hash(emb["o1"])
    assert not t.expire(0.3)
    assert t.expire(0.5) and t.views() == []


def test_different_person_in_the_same_place_starts_a_new_track(emb: dict) -> None:
    t = Tracker(THRESHOLD)
    index = gallery(obama=emb["o1"])
    t.update([Face(BOX, emb["o2"])], 0.0, index)
    t.update([Face(MOVED, emb["b1"])], 1.5, index)  # re-embedding finds somebody else
    (view,) = t.views()
    assert not view.known and view.hash == face_hash(emb["b1"])


def test_returning_unknown_face_gets_its_hash_back(emb: dict) -> None:
    t = Tracker(THRESHOLD, timeout=0.4, memory_s=5.0)
    empty = GalleryIndex.empty()
    t.update([Face(BOX, emb["b1"])], 0.0, empty)
    assert t.expire(1.0)
    t.update([Face((300, 50, 90, 90), emb["b2"])], 2.0, empty)
    (view,) = t.views()
    assert view.hash == face_hash(emb["b1"])


def test_enrolling_a_live_face_keeps_its_hash(emb: dict) -> None:
    t = Tracker(THRESHOLD)
    t.update([Face(BOX, emb["b1"]), Face((300, 50, 60, 60), emb["o1"])], 0.0,
             GalleryIndex.empty())
    track = t.enrollable()
    assert track is not None and track.box == BOX  # the largest unknown face
    provisional = track.hash
    t.rematch(gallery(joe=track.first_embedding))
    views = {v.hash: v for v in t.views()}
    assert views[provisional].known and views[provisional].name == "joe"
    assert not views[face_hash(emb["o1"])].known


def test_largest_face_is_primary(emb: dict) -> None:
    t = Tracker(THRESHOLD)
    t.update([Face((0, 0, 50, 50), emb["o1"]), Face((200, 0, 120, 120), emb["b1"])], 0.0,
             GalleryIndex.empty())
    assert t.views()[0].hash == face_hash(emb["b1"])


def test_late_result_with_embeddings_still_starts_and_feeds_tracks(emb: dict) -> None:
    """Two workers finish out of order: the frame with embeddings (slow) lands after a newer
    detection-only frame. Its embeddings must not be lost, and boxes must not go back."""
    t = Tracker(THRESHOLD, timeout=0.4)
    index = gallery(obama=emb["o1"])
    t.update([Face(MOVED, None)], 0.2, index)  # newer frame, detection only: nothing yet
    assert t.views() == []
    t.update([Face(BOX, emb["o3"])], 0.1, index, stale=True)  # older frame, embedded
    (view,) = t.views()
    assert view.known and view.name == "obama"
    t.update([Face(MOVED, None)], 0.3, index)
    t.update([Face(BOX, emb["b1"])], 0.25, index, stale=True)  # stale: no split, no move
    (view,) = t.views()
    assert view.name == "obama" and view.box == MOVED


def test_a_face_embedded_from_the_stream_copy_asks_for_a_full_resolution_look(
    emb: dict
) -> None:
    """A large face first found by the fast pass is embedded from the scaled stream copy;
    the next frames are told it is due, so its region of the full-resolution frame is sent
    and it is embedded again from there (twice at most), then not until the interval."""
    t = Tracker(THRESHOLD, reembed_interval=1.0, timeout=0.4)
    empty = GalleryIndex.empty()
    t.update([Face(BOX, emb["o1"], look=LOOK, full_res=False)], 0.0, empty)
    assert due(t.plan(0.04)) == [BOX]
    t.update([Face(BOX, emb["o2"], look=LOOK, full_res=True, quality=0.8)], 0.04, empty)
    assert due(t.plan(0.08)) == []
    # Never found at full resolution: asked twice, then left to the interval.
    t.update([Face(MOVED, emb["b1"], look=LOOK, full_res=False)], 0.5, empty)
    asked = [bool(due(t.plan(0.5 + 0.04 * i))) for i in range(1, 5)]
    assert asked[:2] == [True, True] and asked[2:] == [False, False]


def test_poor_looks_do_not_outweigh_good_ones(emb: dict) -> None:
    """A track's evidence is the quality-weighted mean of its best looks: many poor looks of
    somebody else in the same box (not enough to split it) do not take over its name."""
    t = Tracker(-1.0, reembed_interval=1.0, timeout=0.4)  # never split: weighting decides
    index = gallery(obama=emb["o1"], biden=emb["b1"])
    t.update([Face(BOX, emb["o2"], look=LOOK, quality=0.9)], 0.0, index)
    for i in range(1, 12):
        t.update([Face(BOX, emb["b2"], look=LOOK, quality=0.03)], 0.1 * i, index)
    (track,) = t.tracks()
    assert track.match is not None and track.match.name == "obama"
    assert len(track.looks) == 8 and max(q for q, _ in track.looks) == pytest.approx(0.9)


def test_two_faces_in_one_frame_never_share_a_name_or_a_hash(emb: dict) -> None:
    """Faces in view together are two people (issue 19, defect 3: two faces in one frame
    showed the same stranger's hash). Two photos of Obama side by side: the gallery names
    both Obama, but only the one more like him keeps the name; two faces resembling the same
    stranger's group: the one seen first shows the group's hash, the other its own."""
    ob = face_hash(emb["o1"])
    t = Tracker(THRESHOLD)
    index = gallery(obama=emb["o1"])
    left, right = (0, 0, 90, 90), (400, 0, 90, 90)
    t.update([Face(left, emb["o2"]), Face(right, emb["o3"])], 0.0, index)
    views = {v.box: v for v in t.views()}
    sims = {box: index.identify(e) for box, e in ((left, emb["o2"]), (right, emb["o3"]))}
    assert all(m is not None and m.hash == ob for m in sims.values())  # both named, alone
    best = max(sims, key=lambda b: sims[b].similarity)  # type: ignore[union-attr]
    other = right if best == left else left
    assert (views[best].hash, views[best].name) == (ob, "obama")
    assert not views[other].known and views[other].hash not in (ob, views[best].hash)
    # Next frames: the holder keeps the name while both stay, whoever is re-embedded.
    t.update([Face(left, emb["o2"]), Face(right, emb["o3"])], 1.5, index)
    assert {v.box: v.hash for v in t.views()} == {b: v.hash for b, v in views.items()}
    assert len({v.hash for v in t.views()}) == 2

    # A stranger's group that both faces resemble.
    group = face_hash(emb["o1"])
    unknowns = GalleryIndex([group], [group], emb["o1"][None, :], POLICY)
    t = Tracker(THRESHOLD)
    t.update([Face(left, emb["o2"])], 0.0, GalleryIndex.empty(), unknowns=unknowns)
    t.update([Face(left, emb["o2"]), Face(right, emb["o3"])], 0.1, GalleryIndex.empty(),
             unknowns=unknowns)
    views = {v.box: v.hash for v in t.views()}
    assert views[left] == group and views[right] == face_hash(emb["o3"])
