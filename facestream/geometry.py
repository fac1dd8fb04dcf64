"""Boxes in image pixels, shared by detection, tracking and the API."""

from __future__ import annotations

from typing import Final

Box = tuple[int, int, int, int]  # x, y, w, h

#: Box overlap (intersection over union) at or above which a detection continues a track.
TRACK_IOU: Final = 0.3


def intersection(a: Box, b: Box) -> int:
    """The area the two boxes share."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy


def iou(a: Box, b: Box) -> float:
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def inside(a: Box, b: Box, share: float = 0.6) -> bool:
    """At least ``share`` of ``a`` lies within ``b``."""
    return intersection(a, b) >= share * area(a)


def area(box: Box) -> int:
    return box[2] * box[3]
