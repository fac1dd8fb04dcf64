"""Eight strangers, each seen twice minutes apart, for the tests and benchmarks of stranger
grouping (issue 19: "no group holds two people, two faces in one frame never share a hash,
and at least 6 of 8 people's two photos land in one group").

``strangers_clip`` makes the clip (from ../shared/data, never committed): ``count`` people of
the LFW subset with two photos or more, picked by ``seed``. Each person's first photo is shown
alone for SHOWN_FRAMES frames (FPS a second), one person every SLOT_S seconds; once all of
them have come by, each person's second photo, in the same order (so a person's two photos
are ``count * SLOT_S`` seconds apart, two minutes or more); at the end the first two people
side by side (their first photos again). Last, with ``lookalikes``, the first person's two
photos side by side: two faces that both resemble that person's group, which must still
show two hashes (``tracking.Tracker._distinct``; two different people rarely resemble one
group, so without it the rule would hardly be put to the test). A photo is LFW's 250 px
image cut to its middle and scaled so the face is about FACE_PX wide, pasted on a 640x480
frame that moves a pixel or two between frames and goes through JPEG, as a camera's frames
do.

``play`` feeds the clip's frames to a camera's ``Presence`` and the worker pool the way the
live pipeline does (``plan``, ``pool.analyze_frame`` with the tracked faces' regions,
``observe``), at the capture times of the clip's timeline rather than the wall clock: a
person's second photo comes minutes after the first in the frames' times (far beyond the
tracker's ``memory_s``), so only History's stranger groups can give it the same hash, and
the test takes seconds. Between two people, ``between`` is awaited (the history writer
catches up, as it has minutes to). Who each face in view is comes from where it is in the
frame.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from facestream.presence import Presence
from facestream.regions import track_regions
from facestream.tracking import FaceView
from facestream.workers import WorkerPool

LFW: Final = (Path(os.environ.get("FACESTREAM_TEST_DATA",
                                  Path(__file__).resolve().parents[2] / "shared" / "data"))
              / "faces" / "lfw")
FRAME_W, FRAME_H = 640, 480
#: LFW's deep-funneled faces are about this wide in their 250 px photos.
LFW_FACE_PX: Final = 100
#: How wide a face is in the clip's frames (a person two or three metres from a webcam).
FACE_PX: Final = 80
#: The middle of an LFW photo that is shown (its edges often hold part of somebody else;
#: some of those faces are still in it, as bystanders are in a camera's view).
LFW_CUT: Final = (35, 215)
#: Frames analysed per second of the clip (what a loaded 2-core machine analyses; a face is
#: embedded again only every recognition.reembed_interval_s, 1 s, however many there are).
FPS: Final = 3.0
#: Each photo is in view for this many frames (2 s: announced after unknown_grace_s, 1 s,
#: and three looks embedded); a person comes by every SLOT_S seconds.
SHOWN_FRAMES: Final = 7
SLOT_S: Final = 16.0
#: After a photo leaves, one frame without anybody this long after its last frame: on it the
#: face is lost (recognition.track_timeout_s, 0.35 s) and its visit ends (presence.
#: depart_after_s, 3 s); none after that until the next person (absence is judged on
#: analysed frames, so there is nothing more to decide).
EMPTY_AFTER_S: Final = (3.5,)


@dataclass(frozen=True)
class Stranger:
    name: str
    photos: tuple[Path, Path]


@dataclass(frozen=True)
class Shown:
    """One photo in view: whose, which (0: first, 1: second), where its tile is."""

    person: int
    photo: int
    x: int
    y: int

    def holds(self, box: tuple[int, int, int, int]) -> bool:
        cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
        return self.x <= cx < self.x + TILE_PX and self.y <= cy < self.y + TILE_PX


TILE_PX: Final = round((LFW_CUT[1] - LFW_CUT[0]) * FACE_PX / LFW_FACE_PX)
ALONE: Final = ((FRAME_W - TILE_PX) // 2, (FRAME_H - TILE_PX) // 2)
SIDE_BY_SIDE: Final = ((FRAME_W // 4 - TILE_PX // 2, ALONE[1]),
                       (3 * FRAME_W // 4 - TILE_PX // 2, ALONE[1]))


@dataclass(frozen=True)
class Frame:
    at: float  # seconds into the clip (its capture time)
    shown: tuple[Shown, ...]
    #: Which stretch of the clip it belongs to (a person's photo, the side-by-side end, the
    #: lookalikes), -1 for the frames without anybody.
    segment: int


@dataclass
class StrangersClip:
    people: list[Stranger]
    frames: list[Frame]
    seed: int
    _tiles: dict[tuple[int, int], NDArray[np.uint8]] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.frames[-1].at

    def tile(self, person: int, photo: int) -> NDArray[np.uint8]:
        key = (person, photo)
        if key not in self._tiles:
            image = cv2.imread(str(self.people[person].photos[photo]), cv2.IMREAD_COLOR)
            a, b = LFW_CUT
            self._tiles[key] = cv2.resize(image[a:b, a:b], (TILE_PX, TILE_PX),
                                          interpolation=cv2.INTER_AREA)
        return self._tiles[key]

    def render(self, i: int) -> NDArray[np.uint8]:
        """Frame ``i``: a plain wall, the photos in view shifted by a pixel or two, as JPEG."""
        rng = random.Random(self.seed * 100_003 + i)
        image = np.empty((FRAME_H, FRAME_W, 3), np.uint8)
        image[:] = (112, 118, 121)
        image[FRAME_H * 2 // 3:] = (84, 90, 98)
        for s in self.frames[i].shown:
            x, y = s.x + rng.randint(-2, 2), s.y + rng.randint(-2, 2)
            image[y:y + TILE_PX, x:x + TILE_PX] = self.tile(s.person, s.photo)
        _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        return cv2.imdecode(jpeg, cv2.IMREAD_COLOR)


def pick_strangers(count: int = 8, seed: int = 0, exclude: frozenset[str] = frozenset()
                   ) -> list[Stranger]:
    """``count`` LFW people with two photos or more (their first two), chosen by ``seed``."""
    folders = [p for p in sorted(LFW.iterdir()) if p.is_dir() and p.name not in exclude]
    candidates = [(p.name, sorted(p.glob("*.jpg"))) for p in folders]
    candidates = [(name, photos) for name, photos in candidates if len(photos) >= 2]
    chosen = random.Random(seed).sample(candidates, count)
    return [Stranger(name, (photos[0], photos[1])) for name, photos in chosen]


def strangers_clip(count: int = 8, seed: int = 0, lookalikes: bool = True) -> StrangersClip:
    people = pick_strangers(count, seed)
    frames: list[Frame] = []

    def segment(start: float, shown: tuple[Shown, ...]) -> None:
        number = len({f.segment for f in frames if f.shown})
        frames.extend(Frame(start + k / FPS, shown, number) for k in range(SHOWN_FRAMES))
        last = frames[-1].at
        frames.extend(Frame(last + after, (), -1) for after in EMPTY_AFTER_S)

    slot = 0
    for photo in (0, 1):
        for person in range(count):
            segment(slot * SLOT_S, (Shown(person, photo, *ALONE),))
            slot += 1
    segment(slot * SLOT_S, tuple(Shown(p, 0, *xy) for p, xy in zip((0, 1), SIDE_BY_SIDE)))
    if lookalikes:
        segment((slot + 1) * SLOT_S,
                tuple(Shown(0, photo, *xy) for photo, xy in zip((0, 1), SIDE_BY_SIDE)))
    return StrangersClip(people, frames, seed)


@dataclass
class Outcome:
    """What the live view showed: each stranger's hash (their group's, or their own), by
    frame, with who it was. A photo's largest face is its person; a smaller one is somebody
    else who was in that photo (LFW's photos have some), a stranger of their own. A face
    named as somebody enrolled (the live view's open-set mistakes, 1%) is only counted."""

    people: list[str]
    #: (segment, person, photo, is the person) -> hashes shown on that face, with how many
    #: frames.
    seen: dict[tuple[int, int, int, bool], Counter[str]] = field(default_factory=dict)
    #: Frames in which two faces showed one hash.
    shared: list[int] = field(default_factory=list)
    #: Frames with two faces or more in view.
    crowded: int = 0
    #: Faces found outside the photos (a detector's false alarm).
    stray: int = 0
    #: Faces named as somebody enrolled (counted in each frame): every one is a stranger.
    named: int = 0
    frames: int = 0

    def who(self, person: int, photo: int, main: bool) -> str:
        name = self.people[person]
        return name if main else f"{name}'s photo {photo + 1}: another face"

    def groups(self) -> dict[str, set[str]]:
        """Each hash shown, with who it was shown on."""
        out: dict[str, set[str]] = {}
        for (_, person, photo, main), hashes in self.seen.items():
            for h in hashes:
                out.setdefault(h, set()).add(self.who(person, photo, main))
        return out

    def mixed(self) -> dict[str, set[str]]:
        """Hashes shown on two people or more (must be none)."""
        return {h: p for h, p in self.groups().items() if len(p) > 1}

    def hash_of(self, person: int, photo: int) -> str | None:
        """The stranger's hash a person's photo showed alone (the one shown most)."""
        alone = sorted((segment, hashes) for (segment, who, which, main), hashes
                       in self.seen.items() if (who, which, main) == (person, photo, True))
        return alone[0][1].most_common(1)[0][0] if alone else None

    def together(self) -> list[str]:
        """The people whose two photos (minutes apart) showed one hash: one group."""
        return [name for i, name in enumerate(self.people)
                if (h := self.hash_of(i, 0)) is not None and h == self.hash_of(i, 1)]

    def report(self) -> dict[str, Any]:
        return {"people": len(self.people), "frames": self.frames,
                "hashes_shown": len(self.groups()),
                "groups_holding_two_people": len(self.mixed()),
                "frames_with_two_faces_or_more": self.crowded,
                "frames_with_a_shared_hash": len(self.shared),
                "people_whose_photos_share_a_group": len(self.together()),
                "faces_named_as_somebody_enrolled": self.named, "stray_faces": self.stray}

    def observe(self, i: int, frame: Frame, faces: Sequence[FaceView]) -> None:
        """Frame ``i`` of the clip showed ``faces``."""
        self.frames += 1
        self.crowded += len(faces) > 1
        if len({f.hash for f in faces}) < len(faces):
            self.shared.append(i)
        by_photo: dict[Shown, list[FaceView]] = {}
        for face in faces:
            shown = next((s for s in frame.shown if s.holds(face.box)), None)
            if shown is None:
                self.stray += 1
            else:
                by_photo.setdefault(shown, []).append(face)
        for shown, in_photo in by_photo.items():
            largest = max(in_photo, key=lambda f: f.box[2] * f.box[3])
            for face in in_photo:
                if face.known:
                    self.named += 1
                    continue
                key = (frame.segment, shown.person, shown.photo, face is largest)
                self.seen.setdefault(key, Counter())[face.hash] += 1


async def play(clip: StrangersClip, presence: Presence, pool: WorkerPool,
               between: Callable[[], Awaitable[None]], min_face_px: int = 24,
               t0: float | None = None) -> Outcome:
    """Feed ``clip`` to ``presence`` through ``pool`` (see the module's docstring); capture
    times start at ``t0`` (monotonic; by default so that the clip ends now)."""
    t0 = time.monotonic() - clip.duration - 1.0 if t0 is None else t0
    out = Outcome([p.name for p in clip.people])
    # The fast pass sees the whole 640 px frame (detect_max_side): one scale everywhere.
    fast_scale = min(1.0, pool.settings.detect_max_side / max(FRAME_W, FRAME_H))
    last_segment = -1
    for i, frame in enumerate(clip.frames):
        if frame.shown and frame.segment != last_segment:
            await between()
            last_segment = frame.segment
        image = clip.render(i)
        at = t0 + frame.at
        plan = presence.plan(at)
        regions = track_regions(image, 1.0, plan.tracked, fast_scale)
        result = await pool.analyze_frame(image, plan.tracked, plan.embed_new, regions, 1.0,
                                          min_face_px)
        presence.observe(plan, i + 1, at, i, image, result)
        out.observe(i, frame, presence.snapshot.faces)
    await between()
    return out

