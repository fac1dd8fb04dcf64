"""Where to look for small faces: full-resolution regions of a camera's frame.

Every analysed frame gets a fast pass over the stream copy (scaled to
``recognition.detect_max_side`` for detection), which finds the large faces. A face a few
metres from a 1080p or 4K camera is 25-60 px wide, a third of that or less after scaling:
too small for the detector. So each frame also sends the worker a few parts of the
full-resolution frame (``RegionImage``):

- around every tracked face, a square of ``TRACK_SPAN`` times its size, detected at a
  scale that makes the face about ``TRACK_FACE_PX`` wide (small faces are upsampled: the
  detector finds monochrome 24 px faces on 79% of looks at their own size, on all of them at
  1.5x), so a small face is followed, and embedded, at full resolution;
- the next tiles of a sweep (``Sweep``) that covers the whole frame in overlapping tiles,
  ``camera.sweep_mp_per_s`` megapixels of it per second (a 1080p frame every 0.52 s at the
  default 4), detected at the scale that makes a ``min_face_px`` face ``SWEEP_FACE_PX``
  wide: new small faces are found within one sweep.

A sweep's cost is paid as time goes on, not per frame: each frame takes as many tiles as
the time since the previous frame is worth (a slow machine analyses fewer frames, each with
more tiles, up to MAX_TILES_PER_FRAME), so a full sweep takes its planned time
(``Sweep.target_s``) whatever the frame rate. ``Sweep.last_s`` is how long the last full
sweep really took: longer than planned means the camera asks more than the machine has
(``facestream_sweep_seconds`` on /metrics, ``sweep_s`` in GET /cameras).

Regions are cut out here, on the event loop, as views (no pixels are copied until the pool
sends them to a worker), so only the parts searched at full resolution travel: a 1080p frame
is 6 MB, a tile 1.2 MB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from .recognition import RegionImage, TrackHint

#: Tiles are this many detector pixels on a side (YuNet's cost grows with the pixels).
TILE_PX: Final = 640
#: A tracked face's region: this many times its size, centred on it (the gallery's context
#: square is twice the face, so its sample images are cut from full-resolution pixels too).
TRACK_SPAN: Final = 2.4
#: A small tracked face is upsampled so it is about this wide (at most MAX_UPSAMPLE times);
#: one larger than LARGE_FACE_PX is detected at that width, enough for exact landmarks.
TRACK_FACE_PX: Final = 40
MAX_UPSAMPLE: Final = 3.0
LARGE_FACE_PX: Final = 96
#: The sweep detects at a scale that makes a ``min_face_px`` face this wide: YuNet finds
#: 24 px colour faces on 98% of looks and monochrome ones on 79% at their own size.
SWEEP_FACE_PX: Final = 24
#: The fast pass finds faces reliably from this many of its pixels (monochrome needs
#: about 32, colour 20): larger tracked faces need no region of their own.
FAST_PASS_FACE_PX: Final = 32
#: Tiles overlap by at most this many detector pixels.
MAX_OVERLAP: Final = 128
#: At most this many tiles per frame, however long since the previous one.
MAX_TILES_PER_FRAME: Final = 4


@dataclass(frozen=True)
class Tile:
    x: int
    y: int
    w: int
    h: int


def tiles_for(width: int, height: int, scale: float, overlap: int) -> list[Tile]:
    """Overlapping tiles covering a ``width`` x ``height`` frame, each TILE_PX detector
    pixels (TILE_PX / ``scale`` frame pixels) on a side, overlapping by ``overlap`` frame
    pixels so that a face up to that size lies whole in at least one of them."""
    side = max(overlap * 2, round(TILE_PX / scale))

    def starts(length: int) -> list[int]:
        if length <= side:
            return [0]
        n = math.ceil((length - overlap) / (side - overlap))
        step = (length - side) / (n - 1)
        return [round(i * step) for i in range(n)]

    return [Tile(x, y, min(side, width - x), min(side, height - y))
            for y in starts(height) for x in starts(width)]


class Sweep:
    """One camera's sweep of its full-resolution frame, tile after tile."""

    def __init__(self, mp_per_s: float, min_face_px: int, fast_scale: float) -> None:
        self.mp_per_s = mp_per_s
        #: Seconds a full sweep is planned to take (set with the frame size).
        self.target_s = 0.0
        self.fast_scale = fast_scale
        self.scale = min(1.0, SWEEP_FACE_PX / max(1, min_face_px))
        # Tiles overlap by the largest face they must find whole: faces larger than the
        # fast pass finds are its own. At 4K (fast pass at 1/6) that would be 240 px: capped
        # at MAX_OVERLAP detector pixels, a face up to a third larger may be cut at a tile's
        # edge and is found in a later sweep, when it has moved.
        self.overlap = min(math.ceil(FAST_PASS_FACE_PX / fast_scale * 1.25),
                           math.ceil(MAX_OVERLAP / self.scale))
        self._tiles: list[Tile] = []
        self._shape: tuple[int, int] = (0, 0)
        self._next = 0
        self._credit = 0.0
        self._last: float | None = None
        self._started = 0.0
        #: Seconds the last complete sweep took (None before the first one).
        self.last_s: float | None = None

    def take(self, width: int, height: int, now: float) -> list[Tile]:
        """The tiles to search in a frame of ``width`` x ``height`` analysed at ``now``
        (monotonic seconds)."""
        if self.mp_per_s <= 0 or self.scale <= self.fast_scale * 1.05:
            # No sweep, or none needed: the fast pass sees the frame at the sweep's scale
            # already (a camera no larger than recognition.detect_max_side).
            return []
        if (height, width) != self._shape:
            self._shape = (height, width)
            self.target_s = width * height / 1e6 / self.mp_per_s
            self._tiles = tiles_for(width, height, self.scale, self.overlap)
            self._next, self._credit, self._started, self._last = 0, 1.0, now, None
        if self._last is not None:
            self._credit += max(0.0, now - self._last) * len(self._tiles) / self.target_s
        self._last = now
        self._credit = min(self._credit, float(MAX_TILES_PER_FRAME))
        taken: list[Tile] = []
        while self._credit >= 1.0 and len(taken) < len(self._tiles):
            taken.append(self._tiles[self._next])
            self._credit -= 1.0
            self._next += 1
            if self._next == len(self._tiles):
                self._next = 0
                self.last_s = now - self._started
                self._started = now
        return taken


def track_regions(full: NDArray[np.uint8], ratio: float, hints: Sequence[TrackHint],
                  fast_scale: float) -> list[RegionImage]:
    """Full-resolution regions around the tracked faces the fast pass may miss or whose
    embedding is due; ``ratio`` is full-frame pixels per stream pixel, ``fast_scale`` the
    fast pass's detector pixels per full-frame pixel."""
    out = []
    fh, fw = full.shape[:2]
    for hint in hints:
        x, y, w, h = (v * ratio for v in hint.box)
        side = max(w, h)
        if side <= 0:
            continue
        if side * fast_scale >= FAST_PASS_FACE_PX * 2 and not hint.due:
            continue  # large, and not due: the fast pass follows it
        span = side * TRACK_SPAN
        x0 = max(0, round(x + w / 2 - span / 2))
        y0 = max(0, round(y + h / 2 - span / 2))
        x1, y1 = min(fw, round(x + w / 2 + span / 2)), min(fh, round(y + h / 2 + span / 2))
        if x1 - x0 < 8 or y1 - y0 < 8:
            continue
        # Small faces upsampled to TRACK_FACE_PX; large ones detected at LARGE_FACE_PX,
        # enough for landmarks as exact as the alignment needs.
        scale = min(MAX_UPSAMPLE, max(TRACK_FACE_PX / side, min(1.0, LARGE_FACE_PX / side)))
        out.append(RegionImage(full[y0:y1, x0:x1], x0, y0, scale))
    return out


def tile_regions(full: NDArray[np.uint8], tiles: Sequence[Tile], scale: float
                 ) -> list[RegionImage]:
    return [RegionImage(full[t.y:t.y + t.h, t.x:t.x + t.w], t.x, t.y, scale, tile=True)
            for t in tiles]

