"""H.264 live video: each camera's frames encoded once, for every video viewer, only while
there is one.

MJPEG sends every viewer a full JPEG per frame (about 130 KB at 1280x720, 26 Mbit/s at 25 fps);
H.264 carries the same picture in 1-3 Mbit/s. A camera's ``VideoStream`` reads the clean
frames (no boxes drawn) from its FrameHub, encodes them with libx264 (PyAV's bundled FFmpeg;
baseline profile, no B-frames, tuned for latency) and muxes them into fragmented MP4, one
fragment per frame, which browsers play through Media Source Extensions and players such
as VLC or ffplay read as it comes. The encoder runs in a worker thread and only while a
viewer is connected: with none, nothing is encoded.

Each viewer (``Viewer``) gets the stream's init segment, then fragments from a keyframe on
(a viewer joining asks for one, so it starts within a frame or two), and beside each frame
the faces the MJPEG overlay draws on it, with the frame's timestamp, so the page draws them
over the very frame. A viewer that falls behind (a slow link) has what it had not sent
dropped and resumes at the next keyframe, which it asks for: it gets fewer frames, never a
growing delay. Frame timestamps are the capture times (decisions and boxes are on the frames
analysed), so a loaded machine lowers the frame rate, not the timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from .config import VideoConfig
from .hub import FrameHub, Packet

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Timestamps of the encoded frames: 90 kHz, as RTP and MPEG-TS have them.
TIMEBASE: Final = Fraction(1, 90_000)
#: What a viewer may have waiting, in seconds of video, before it skips to the next keyframe.
MAX_BEHIND_S: Final = 1.0
#: Viewers may ask for a keyframe (joining, or skipping) at most this often.
KEYFRAME_ASK_S: Final = 0.5
SEND_TIMEOUT_S: Final = 10.0
#: A viewer whose page reports a picture later than this gets keyframes only, until its
#: lag is under LAG_LOW_S: what its link cannot carry is not sent (it would only queue up in
#: buffers the server cannot see, such as a proxy's or the browser's).
LAG_HIGH_S: Final = 0.8
LAG_LOW_S: Final = 0.5


@dataclass(frozen=True)
class Fragment:
    """One frame as fragmented MP4 (a ``moof`` and its ``mdat``)."""

    data: bytes
    keyframe: bool
    #: Its presentation time, seconds from the stream's start (what the player's clock says).
    t: float


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """The ISO BMFF boxes in ``data[start:end]``: (type, payload start, box end)."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, start + 8)[0], 16
        if size < header or start + size > end:
            return
        yield kind, start + header, start + size
        start += size


def _find(data: bytes, path: list[bytes], start: int = 0, end: int | None = None
          ) -> tuple[int, int] | None:
    """The payload (start, end) of the box at ``path`` (types, outermost first)."""
    for kind, payload, box_end in _boxes(data, start, end):
        if kind == path[0]:
            return (payload, box_end) if len(path) == 1 else \
                _find(data, path[1:], payload, box_end)
    return None


def codec_string(init: bytes) -> str:
    """The RFC 6381 codec of an init segment (``avc1.PPCCLL`` from its ``avcC``), for
    ``MediaSource.isTypeSupported`` and ``addSourceBuffer``."""
    stsd = _find(init, [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd"])
    if stsd is not None:
        at = init.find(b"avcC", stsd[0], stsd[1])
        if at >= 0:
            profile, compat, level = init[at + 5:at + 8]
            return f"avc1.{profile:02X}{compat:02X}{level:02X}"
    return "avc1.42E01E"


def _timescale(init: bytes) -> int:
    mdhd = _find(init, [b"moov", b"trak", b"mdia", b"mdhd"])
    if mdhd is None:
        return 90_000
    version = init[mdhd[0]]
    return int(struct.unpack_from(">I", init, mdhd[0] + (20 if version == 1 else 12))[0])


def _decode_time(moof: bytes) -> int:
    tfdt = _find(moof, [b"moof", b"traf", b"tfdt"])
    if tfdt is None:
        return 0
    version = moof[tfdt[0]]
    fmt = ">Q" if version == 1 else ">I"
    return int(struct.unpack_from(fmt, moof, tfdt[0] + 4)[0])


def _has_idr(mdat: bytes, start: int, end: int) -> bool:
    """Whether an mdat's length-prefixed NAL units include an IDR picture (type 5)."""
    while start + 5 <= end:
        size = struct.unpack_from(">I", mdat, start)[0]
        if mdat[start + 4] & 0x1F == 5:
            return True
        start += 4 + size
    return False


def _scaled(image: NDArray[np.uint8], scale: float) -> NDArray[np.uint8]:
    import cv2

    h, w = image.shape[:2]
    size = (max(2, round(w * scale)), max(2, round(h * scale)))
    # Linear: a seventh of INTER_AREA's 7 ms for 1080p to 720p, and the encoder smooths more.
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)  # type: ignore[return-value]


def _scaled_face(face: dict[str, Any], scale: float) -> dict[str, Any]:
    """A face (as /hash has it) with its box in the encoded picture's pixels."""
    if scale < 1.0:
        face["box"] = [round(v * scale, 1) for v in face["box"]]
    return face


class _Sink(io.RawIOBase):
    """Where the MP4 muxer writes: kept until whole boxes can be handed on."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)


class Encoder:
    """libx264 into fragmented MP4 for one picture size (worker thread only)."""

    def __init__(self, width: int, height: int, config: VideoConfig) -> None:
        import av

        self.size = (width, height)
        self._sink = _Sink()
        self._out = av.open(self._sink, mode="w", format="mp4", options={
            "movflags": "empty_moov+default_base_moof+frag_every_frame"})
        stream = self._out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = config.bitrate_kbps * 1000
        stream.codec_context.time_base = TIMEBASE
        stream.codec_context.options = {
            "preset": config.preset, "tune": "zerolatency", "profile": "baseline",
            "bf": "0", "g": "600", "sc_threshold": "0", "threads": "2",
            # A steady rate for a phone's link: bursts at most a second's worth.
            "maxrate": str(config.bitrate_kbps * 1000), "bufsize": str(config.bitrate_kbps * 1000)}
        self._stream = stream
        self.init: bytes | None = None
        #: The init segment's codec (``codec_string``), read once.
        self.codec = ""
        self._timescale = 90_000

    def encode(self, image: NDArray[np.uint8], pts: int, keyframe: bool) -> list[Fragment]:
        """Encode one BGR frame (of even width and height) at ``pts`` (90 kHz); the
        fragments completed by it."""
        import av
        import cv2

        # OpenCV's BT.601 (limited range, as H.264 expects) is 5x faster than swscale's.
        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, TIMEBASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        return self._take()

    def _take(self) -> list[Fragment]:
        data = bytes(self._sink.buffer)
        fragments: list[Fragment] = []
        used = 0
        moof: tuple[int, int] | None = None
        for kind, payload, end in _boxes(data):
            if kind in (b"ftyp", b"moov"):
                if kind == b"moov":
                    self.init = data[:end]
                    self.codec = codec_string(self.init)
                    self._timescale = _timescale(self.init)
                used = end
            elif kind == b"moof":
                moof = (used, end)
            elif kind == b"mdat" and moof is not None:
                chunk = data[moof[0]:end]
                fragments.append(Fragment(
                    chunk, _has_idr(data, payload, end),
                    _decode_time(chunk) / self._timescale))
                used, moof = end, None
        del self._sink.buffer[:used]
        return fragments

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._out.close()


#: What a viewer sends: ("json", message), ("init", init segment) or ("fragment", Fragment).
Item = tuple[str, Any]


@dataclass(eq=False)
class Viewer:
    """One viewer's stream: what it has yet to send, bounded by how far behind it may be
    (MAX_BEHIND_S of video; see VideoStream._deliver). Its writer takes ``next()``."""

    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)
    #: The presentation times of the fragments queued, oldest first.
    pending: deque[float] = field(default_factory=deque)
    #: Fragments are held back until a keyframe (joining, or after falling behind).
    waiting: bool = True
    sent_init: bytes | None = None
    #: How often it fell behind and skipped to a keyframe.
    skips: int = 0
    #: The page says its picture is late (a slow link, or buffers on the way): it is sent
    #: keyframes only until it catches up (see ``report_lag``).
    lagging: bool = False
    #: Just found late: what it has waiting is dropped at the next frame.
    cut: bool = False

    #: The presentation time of the newest frame the page has shown, and of the last
    #: keyframe sent to it while lagging: the next goes once the page has shown that one,
    #: so a link slower than even the keyframes gets one picture at a time, never a queue.
    shown_t: float = -1.0
    sent_key_t: float = -1.0

    def report_lag(self, seconds: float, shown_t: float | None = None) -> None:
        """The player's lag from capture to screen (and the presentation time of the frame
        it shows): above LAG_HIGH_S only keyframes go to it, one at a time, until it is
        back under LAG_LOW_S."""
        if shown_t is not None:
            self.shown_t = max(self.shown_t, shown_t)
        if seconds > LAG_HIGH_S:
            self.cut = self.cut or not self.lagging
            self.lagging = True
        elif seconds < LAG_LOW_S:
            self.lagging = False

    async def next(self) -> Item:
        item = await self.queue.get()
        if item[0] == "fragment" and self.pending:
            self.pending.popleft()
        return item


class VideoStream:
    """One camera's H.264 stream for its video viewers (see the module's docstring)."""

    def __init__(self, hub: FrameHub, config: VideoConfig, camera: str) -> None:
        self.hub = hub
        self.config = config
        self.camera = camera
        self.viewers: set[Viewer] = set()
        self._task: asyncio.Task[None] | None = None
        self._encoder: Encoder | None = None
        # The encoder's one thread: its calls run in order, so a close never overlaps an
        # encode that a cancelled task left running (libx264 would crash).
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"video {camera}")
        self._t0: float | None = None
        self._last_pts = -1
        self._last_key = -float("inf")
        self._key_wanted = False
        self._key_asked = -float("inf")
        self.frames_encoded = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def join(self) -> Viewer:
        viewer = Viewer()
        self.viewers.add(viewer)
        self._ask_keyframe()
        if not self.running:
            self._task = asyncio.create_task(self._run(), name=f"video {self.camera}")
        if self._encoder is not None and self._encoder.init is not None:
            self._send_init(viewer, self._encoder)
        return viewer

    async def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            await self.stop()

    async def stop(self) -> None:
        """Stop encoding (the last viewer left, or the camera is going)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        """The camera is going: stop encoding and end every viewer's stream."""
        await self.stop()
        for viewer in self.viewers:
            viewer.queue.put_nowait(("close", None))
        self.viewers.clear()
        self._thread.shutdown(wait=False)

    def _ask_keyframe(self) -> None:
        self._key_wanted = True

    async def _run(self) -> None:
        seq = 0
        try:
            while self.viewers and not self.hub.closed:
                packet = await self.hub.next(seq, timeout=1.0)
                if packet is None:
                    continue
                seq = packet.seq
                if packet.image is None:
                    self._broadcast({"type": "signal", "signal": False})
                    continue
                await self._encode(packet)
        finally:
            encoder, self._encoder = self._encoder, None
            self._t0 = None
            if encoder is not None:
                await self._call(encoder.close)

    async def _encode(self, packet: Packet) -> None:
        image = packet.image
        assert image is not None
        h, w = image.shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        if scale < 1.0:  # a phone's screen: the encoder's cost and the bitrate go with size
            image = await self._call(_scaled, image, scale)
            h, w = image.shape[:2]
        if h % 2 or w % 2:  # 4:2:0 needs even sides: the last row or column goes
            h, w = h - h % 2, w - w % 2
            image = image[:h, :w]
        if self._encoder is None or self._encoder.size != (w, h):
            if self._encoder is not None:
                await self._call(self._encoder.close)
            self._encoder = await self._call(Encoder, w, h, self.config)
            self._t0, self._last_pts = packet.captured_at, -1
            for viewer in self.viewers:
                viewer.waiting, viewer.sent_init = True, None
        assert self._t0 is not None
        pts = max(self._last_pts + 1, round((packet.captured_at - self._t0) * 90_000))
        self._last_pts = pts
        # Keyframes are timed by the frames' capture times, as everything on live video is.
        now = packet.captured_at
        keyframe = (now - self._last_key >= self.config.keyframe_interval_s
                    or (self._key_wanted and now - self._key_asked >= KEYFRAME_ASK_S))
        if keyframe:
            self._last_key = now
            if self._key_wanted:
                self._key_wanted, self._key_asked = False, now
        encoder = self._encoder
        fragments = await self._call(encoder.encode, image, pts, keyframe)
        self.frames_encoded += 1
        if encoder.init is not None:
            for viewer in self.viewers:
                if viewer.sent_init is not encoder.init:
                    self._send_init(viewer, encoder)
        # ``at``: the wall-clock capture time, for a player to measure its latency.
        at = time.time() - (time.monotonic() - packet.captured_at)
        self._broadcast({"type": "frame", "t": pts / 90_000, "at": round(at, 3), "size": [w, h],
                         "faces": [_scaled_face(f.to_json(), scale) for f in packet.faces]})
        for fragment in fragments:
            self._deliver(fragment)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the encoder's thread. Cancelling the caller does not cancel the
        call: the task waits for it (shielded), so nothing else starts meanwhile."""
        future = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future})
            raise

    def _send_init(self, viewer: Viewer, encoder: Encoder) -> None:
        assert encoder.init is not None
        self._drop_pending(viewer)
        viewer.queue.put_nowait(("json", {"type": "init", "codec": encoder.codec,
                                          "camera": self.camera}))
        viewer.queue.put_nowait(("init", encoder.init))
        viewer.sent_init, viewer.waiting = encoder.init, True

    def _broadcast(self, message: dict[str, Any]) -> None:
        for viewer in self.viewers:
            if not viewer.waiting:
                viewer.queue.put_nowait(("json", message))

    def _deliver(self, fragment: Fragment) -> None:
        for viewer in self.viewers:
            if viewer.sent_init is None:
                continue
            if viewer.pending and fragment.t - viewer.pending[0] > MAX_BEHIND_S:
                # Behind by more than it may be: what it has not sent goes, and it goes on
                # from the next keyframe (asked for now), live again.
                self._drop_pending(viewer)
                viewer.skips += 1
                viewer.waiting = True
                self._ask_keyframe()
            if viewer.cut:
                viewer.cut = False
                self._drop_pending(viewer)  # late already: what waits would only add to it
            if viewer.waiting or viewer.lagging:
                if not fragment.keyframe:
                    continue
                if viewer.lagging and not viewer.waiting and viewer.shown_t < viewer.sent_key_t:
                    continue  # the last one sent is not on its screen yet
                viewer.waiting = False
                viewer.sent_key_t = fragment.t
            viewer.pending.append(fragment.t)
            viewer.queue.put_nowait(("fragment", fragment))

    @staticmethod
    def _drop_pending(viewer: Viewer) -> None:
        """Forget what it has queued (frames and their faces), not its init segment."""
        kept = []
        while not viewer.queue.empty():
            item = viewer.queue.get_nowait()
            if item[0] == "init" or (item[0] == "json" and item[1].get("type") == "init"):
                kept.append(item)
        for item in kept:
            viewer.queue.put_nowait(item)
        viewer.pending.clear()
