"""The newest frame, shared: one slot that the capture publishes into and every consumer
(MJPEG viewers, recognition lanes) reads at its own pace.

There is no queue. A consumer asks for "anything newer than the sequence number I last saw"
and gets the newest packet; whatever it missed in between is skipped. A slow viewer therefore
never slows the camera, the other viewers or recognition, and never sees stale frames.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray


def wall_clock(captured_at: float) -> float:
    """A ``time.monotonic()`` capture time as wall-clock time (Unix seconds), for clients on
    other machines (a player measuring its latency)."""
    return time.time() - (time.monotonic() - captured_at)


@dataclass(frozen=True)
class Packet:
    """One captured frame: the clean image for recognition and its annotated JPEG (empty
    while nobody reads JPEGs: see Capture's ``jpeg_wanted``)."""

    seq: int
    captured_at: float  # time.monotonic() when the frame was read
    image: NDArray[np.uint8] | None  # None for a "no signal" frame
    jpeg: bytes
    signal: bool
    frame_position: int = -1  # frame index within a file source, -1 for live sources
    #: The camera's full-resolution frame when ``image`` (the stream copy) is scaled down
    #: from it; None when they are the same size.
    full: NDArray[np.uint8] | None = None
    #: The faces drawn on ``jpeg`` (FaceViews, boxes in ``image``'s pixels): the H.264
    #: viewers' pages draw the same over the same frame (video.py).
    faces: tuple[Any, ...] = ()


class FrameHub:
    def __init__(self) -> None:
        self._latest: Packet | None = None
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def latest(self) -> Packet | None:
        return self._latest

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, packet: Packet) -> None:
        """Event-loop thread only (the capture hands over with call_soon_threadsafe)."""
        self._latest = packet
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        self._closed = True
        self._changed.set()

    async def next(self, after: int, timeout: float | None = None) -> Packet | None:
        """The newest packet with ``seq > after``; None on timeout or when closed."""
        while not self._closed:
            latest = self._latest
            if latest is not None and latest.seq > after:
                return latest
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that races with completion, leaving a task that never ends.
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                return None
        return None
