"""Boxes in image pixels, shared by detection, tracking and the API."""

from __future__ import annotations

from typing import Final

Box = tuple[int, int, int, int]  # x, y, w, h

#: Box overlap (intersection over union) at or above which a detection continues a track.
TRACK_IOU: Final = 0.3


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def area(box: Box) -> int:
    return box[2] * box[3]
