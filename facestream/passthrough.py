"""A camera's own H.264 passed through to its video viewers (the full tier, video.py): its
packets muxed as they are (mp4.Passthrough), not decoded and encoded again.

Every packet, in order, comes from the capture's reader thread through an ``Inbox`` (bounded;
``call_soon_threadsafe``). It needs H.264 without B-frames (packets are timed as they arrive,
by their capture times) and a picture within ``video.max_side`` (a 4K camera is still scaled
and encoded); ``video.passthrough`` turns it off. Nobody can ask a camera for a keyframe, so
the packets since its last one are kept (bounded by GOP_MAX_S and GOP_MAX_BYTES) and a viewer
joining gets them at once: it starts at once, and its player plays on from the newest. The
keyframe interval is measured by the source's own clock. Nothing is muxed while nobody
watches the full tier.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections import deque
from typing import Any, Final, Protocol

from prometheus_client import Counter

from .capture import SourcePacket
from .config import VideoConfig
from .hub import wall_clock
from .mp4 import Fragment, Passthrough, Timeline
from .source import StreamFormat

log = logging.getLogger(__name__)

#: The GOP cache holds at most this much since the camera's last keyframe (a camera whose
#: keyframes are further apart is joined at its next keyframe instead).
GOP_MAX_S: Final = 5.0
GOP_MAX_BYTES: Final = 8 * 1024 * 1024
#: Packets waiting between the reader thread and the event loop; beyond this they are
#: dropped, and the passthrough waits for the next keyframe.
INBOX_SIZE: Final = 250
#: Keyframe intervals measured, for the one stated (the longest of them).
INTERVALS_KEPT: Final = 8


class FrameMessage(dict[str, Any]):
    """A frame's message, which goes to many viewers: serialised once, by the first to send
    it. Its faces change only as often as recognition looks (a few times a second) and are
    most of what it weighs (a crowd's are about 0.3 Mbit/s, most of the low tier's 0.4): a
    viewer sent the same faces with its previous frame gets ``brief``, without them, and its
    page keeps the ones it has."""

    @functools.cached_property
    def text(self) -> str:
        return json.dumps(self)

    @functools.cached_property
    def faces_text(self) -> str:
        return json.dumps(self["faces"])

    @functools.cached_property
    def brief(self) -> str:
        return json.dumps({k: v for k, v in self.items() if k != "faces"})


def frame_message(pts: int, captured_at: float, size: tuple[int, int],
                  faces: tuple[Any, ...], scale: float) -> FrameMessage:
    """What a video viewer gets with each frame: its presentation time (``pts``, 90 kHz),
    its wall-clock capture time (for a player to measure its latency), the picture's size and
    the faces in view, their boxes in the picture's pixels (``scale``: its pixels per box
    pixel)."""
    return FrameMessage(type="frame", t=pts / 90_000, at=round(wall_clock(captured_at), 3),
                        size=list(size),
                        faces=[_scaled_face(f.to_json(), scale) for f in faces])


def _scaled_face(face: dict[str, Any], scale: float) -> dict[str, Any]:
    if scale != 1.0:
        face["box"] = [round(v * scale, 1) for v in face["box"]]
    return face


class Viewers(Protocol):
    """The full tier's viewers, as the feed needs them (video.VideoStream)."""

    def watched(self) -> bool:
        """Whether anybody watches the full tier."""

    def start_over(self) -> None:
        """Another stream (or a new muxer): each viewer waits for its new init segment."""

    def resync(self) -> None:
        """Packets were lost: each viewer goes on from the next keyframe."""

    def send_gop(self) -> None:
        """The muxer is new: give every viewer its init segment and the GOP so far."""

    def fragment(self, fragment: Fragment, frame: dict[str, Any]) -> None:
        """A fragment muxed (and its frame message), to the viewers."""


class Feed:
    """One camera's passthrough (event loop only): what its source sends, its GOP cache and,
    while somebody watches, its muxer."""

    def __init__(self, config: VideoConfig, camera: str, viewers: Viewers) -> None:
        self.config = config
        self.camera = camera
        self._viewers = viewers
        #: What is passed through now (None: the full tier is encoded), and the opening of
        #: the source its packets come from.
        self.source: StreamFormat | None = None
        self._opening: StreamFormat | None = None
        self._intervals: deque[float] = deque(maxlen=INTERVALS_KEPT)
        self._last_key_at: float | None = None
        #: The source time of the last packet (to notice pictures out of order), how often
        #: it went back in this opening, and the streams found to have undeclared B-frames.
        self._last_t: float | None = None
        self._backwards = 0
        self._reordered: set[StreamFormat] = set()
        #: The packets since the last keyframe, taken from a keyframe on (_in_sync) and kept
        #: while the GOP is within GOP_MAX_S and GOP_MAX_BYTES (_caching).
        self._packets: deque[SourcePacket] = deque()
        self._packet_bytes = 0
        self._in_sync = False
        self._caching = False
        self.muxer: Passthrough | None = None
        #: The fragments since the last keyframe, with their frame messages.
        self.gop: list[tuple[Fragment, dict[str, Any]]] = []
        #: The muxer's presentation times.
        self._timeline = Timeline(0.0)
        #: Packets muxed (none of them encoded).
        self.frames_passed = 0

    @property
    def keyframe_interval_s(self) -> float | None:
        """The camera's keyframe interval (the longest lately), None until measured."""
        return round(max(self._intervals), 2) if self._intervals else None

    def accepts(self, fmt: StreamFormat | None) -> bool:
        """Whether a source sending ``fmt`` is passed through (any thread)."""
        return (self.config.enabled and self.config.passthrough and fmt is not None
                and fmt.codec == "h264" and fmt not in self._reordered
                and not fmt.b_frames and max(fmt.width, fmt.height) <= self.config.max_side)

    def source_opened(self, fmt: StreamFormat | None) -> None:
        """The capture opened its source anew (it sends ``fmt``); its packets follow."""
        self._opening = fmt
        self._clear_packets()
        self._in_sync = False
        self._last_key_at = self._last_t = None  # another clock (a file starts over at 0)
        self._backwards = 0
        wanted = fmt if self.accepts(fmt) else None
        if wanted != self.source:  # else the same stream again (a file looping, a reconnection)
            self._switch(wanted)

    def _switch(self, wanted: StreamFormat | None) -> None:
        """Pass ``wanted`` through from now on (None: encode); the full tier starts over."""
        self.source = wanted
        self._intervals.clear()
        self.close_muxer()
        self._viewers.start_over()
        if wanted is not None:
            log.info("%s: its H.264 is passed through to video viewers (%dx%d)",
                     self.camera, wanted.width, wanted.height)

    def _clear_packets(self) -> None:
        self._packets.clear()
        self._packet_bytes = 0

    def receive(self, packet: SourcePacket) -> None:
        """One packet of the source, in order (from the Inbox)."""
        if self.source is None or packet.format is not self._opening:
            return  # not passed through, or from an opening that is over
        if packet.source_t is not None:
            if self._last_t is not None and packet.source_t < self._last_t:
                self._backwards += 1
            self._last_t = packet.source_t
            if self._backwards >= 2:
                # Pictures out of order: B-frames, though the stream did not say so (once
                # could be the camera's clock starting over).
                log.warning("%s: its H.264 has B-frames, which cannot be passed through; "
                            "encoded instead", self.camera)
                self._reordered.add(packet.format)
                self._switch(None)
                return
        if packet.keyframe:
            # By the source's clock where it has one: arrival times bunch up at the start.
            t = packet.captured_at if packet.source_t is None else packet.source_t
            if self._last_key_at is not None and t > self._last_key_at:
                self._intervals.append(t - self._last_key_at)
            self._last_key_at = t
            self._clear_packets()
            self._in_sync = self._caching = True
        elif not self._in_sync:
            return  # opened anew, or packets lost: nothing before a keyframe decodes
        if self._caching:
            self._packets.append(packet)
            self._packet_bytes += len(packet.data)
            if (packet.captured_at - self._packets[0].captured_at > GOP_MAX_S
                    or self._packet_bytes > GOP_MAX_BYTES):
                # Too long a GOP to keep: joiners wait for the next keyframe.
                self._clear_packets()
                self.gop.clear()
                self._caching = False
        if self.muxer is not None:
            self._mux(packet)
        elif packet.keyframe and self._viewers.watched():
            self.open_muxer()

    def restart(self) -> None:
        """A new muxer and init segment for every viewer, from the next keyframe."""
        self.close_muxer()
        self.packets_lost()
        self._viewers.start_over()

    def packets_lost(self) -> None:
        """Packets were dropped on their way (the loop fell behind): on from a keyframe."""
        self._clear_packets()
        self.gop.clear()
        self._last_key_at = None
        self._in_sync = False
        self._viewers.resync()

    def open_muxer(self) -> None:
        """Start muxing for the full tier's viewers: the GOP so far, given to them at once
        (or, with none kept, from the next keyframe)."""
        if self.source is None or not self._packets or self.muxer is not None:
            return
        fmt = self.source
        self.muxer = Passthrough(fmt.width, fmt.height, fmt.extradata, fmt.fps)
        self._timeline = Timeline(self._packets[0].captured_at)
        self.gop.clear()
        for packet in self._packets:
            self._mux(packet, deliver=False)
        if self.muxer.init is not None:
            self._viewers.send_gop()

    def close_muxer(self) -> None:
        """Nobody watches the full tier (or the stream changed): stop muxing."""
        muxer, self.muxer = self.muxer, None
        self.gop.clear()
        if muxer is not None:
            muxer.close()

    def _mux(self, packet: SourcePacket, deliver: bool = True) -> None:
        muxer = self.muxer
        assert muxer is not None
        pts = self._timeline.pts(packet.captured_at)
        fragments = muxer.mux(packet.data, pts, packet.keyframe)
        self.frames_passed += 1
        frame = frame_message(pts, packet.captured_at, muxer.size, packet.faces,
                              packet.face_scale)
        for fragment in fragments:
            if self.muxer is not muxer:
                break  # its last viewer moved to the low tier just now
            if fragment.keyframe:
                self.gop.clear()
            if deliver:
                self._viewers.fragment(fragment, frame)  # after the GOP before it
            if fragment.keyframe or self.gop:
                self.gop.append((fragment, frame))


class Inbox:
    """A camera's compressed packets, from its reader thread to its Feed on the event loop,
    in order (capture.PacketSink). Bounded: a loop that falls INBOX_SIZE packets behind loses
    packets, and the passthrough goes on from the next keyframe."""

    def __init__(self, feed: Feed, loop: asyncio.AbstractEventLoop, dropped: Counter) -> None:
        self._feed = feed
        self._loop = loop
        #: Counts the packets dropped because the loop fell behind
        #: (facestream_video_packets_dropped).
        self._dropped = dropped
        self._items: deque[tuple[str, Any]] = deque()
        self._scheduled = False
        self._overflow = False

    def opened(self, fmt: StreamFormat | None) -> bool:
        self._push(("opened", fmt))
        return self._feed.accepts(fmt)

    def put(self, packet: SourcePacket) -> None:
        if len(self._items) >= INBOX_SIZE:
            self._overflow = True
            self._dropped.inc()
            return
        self._push(("packet", packet))

    def _push(self, item: tuple[str, Any]) -> None:
        self._items.append(item)
        if not self._scheduled:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop closed (shutting down)
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        # Cleared first: whatever the reader adds from here on schedules another drain.
        self._scheduled = False
        if self._overflow:
            self._overflow = False
            self._feed.packets_lost()
        while self._items:
            kind, item = self._items.popleft()
            try:
                if kind == "opened":
                    self._feed.source_opened(item)
                else:
                    self._feed.receive(item)
            except Exception:  # a packet the muxer refuses: its viewers start over
                log.exception("%s: passing its video through failed", self._feed.camera)
                self._feed.restart()
