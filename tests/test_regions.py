"""Where small faces are looked for: the sweep's tiles and its pace (pure logic)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facestream.recognition import TrackHint
from facestream.regions import Sweep, tiles_for, track_regions

#: The fast pass of a 1080p camera streamed at 1280 px and detected at 640: a third.
FAST_1080P = 640 / 1920


def test_tiles_cover_the_frame_and_overlap_by_the_largest_face_they_must_find() -> None:
    tiles = tiles_for(1920, 1080, 1.0, 120)
    covered = np.zeros((1080, 1920), bool)
    for t in tiles:
        covered[t.y:t.y + t.h, t.x:t.x + t.w] = True
        assert t.w <= 640 and t.h <= 640
    assert covered.all()
    xs = sorted({t.x for t in tiles})
    assert all(b - a <= 640 - 120 for a, b in itertools.pairwise(xs))  # 120 px faces whole


def test_a_sweep_takes_its_planned_time_whatever_the_frame_rate() -> None:
    """4 MP/s: a 1080p frame in 0.52 s, whether frames come at 25 or at 5 per second; a
    4K frame in 2.1 s."""
    for fps in (25, 5):
        sweep = Sweep(4.0, 24, FAST_1080P)
        t, done = 0.0, None
        while done is None and t < 5:
            sweep.take(1920, 1080, t)
            done = sweep.last_s
            t += 1 / fps
        assert done == pytest.approx(1920 * 1080 / 4e6, abs=1.5 / fps)
    sweep = Sweep(4.0, 24, FAST_1080P / 2)
    t = 0.0
    while sweep.last_s is None and t < 10:
        sweep.take(3840, 2160, t)
        t += 0.04
    assert sweep.last_s == pytest.approx(3840 * 2160 / 4e6, abs=0.1)


def test_no_sweep_where_the_fast_pass_sees_the_whole_frame_or_when_turned_off() -> None:
    assert Sweep(4.0, 24, 1.0).take(640, 480, 0.0) == []  # a 640x480 camera
    assert Sweep(0.0, 24, FAST_1080P).take(1920, 1080, 0.0) == []
    # A larger smallest face: the sweep detects smaller, so a 4K sweep costs what 1080p's does.
    four_k, hd = Sweep(4.0, 48, FAST_1080P / 2), Sweep(4.0, 24, FAST_1080P)
    assert len(tiles_for(3840, 2160, four_k.scale, four_k.overlap)) == \
        len(tiles_for(1920, 1080, hd.scale, hd.overlap))


def test_small_tracked_faces_get_a_full_resolution_region_large_ones_only_when_due() -> None:
    full = np.zeros((1080, 1920, 3), np.uint8)
    small, large = (600, 300, 20, 20), (100, 100, 200, 200)  # stream pixels (1280 wide)
    regions = track_regions(full, 1.5, [TrackHint(small, None, False),
                                        TrackHint(large, None, False)], FAST_1080P)
    (region,) = regions
    assert region.pixels.shape[:2] == (72, 72) and region.scale == pytest.approx(40 / 30)
    assert (region.x0, region.y0) == (900 + 15 - 36, 450 + 15 - 36)
    assert len(track_regions(full, 1.5, [TrackHint(large, None, True)], FAST_1080P)) == 1
