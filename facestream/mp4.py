"""H.264 in fragmented MP4: libx264 (PyAV's bundled FFmpeg) for one picture size and rate,
and what the streams need to know of the boxes it writes (video.py sends them).

The encoder is tuned for live viewing: baseline profile (every browser plays it), no
B-frames, zerolatency, a steady rate (bursts at most a second's worth), keyframes only when
asked. The muxer writes an init segment (``ftyp`` + ``moov``) and then one fragment
(``moof`` + ``mdat``) per frame; ``Encoder.encode`` hands on each whole fragment with its
presentation time and whether it starts with an IDR picture.
"""

from __future__ import annotations

import contextlib
import io
import struct
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

#: Timestamps of the encoded frames: 90 kHz, as RTP and MPEG-TS have them.
TIMEBASE: Final = Fraction(1, 90_000)


@dataclass(frozen=True)
class Fragment:
    """One frame as fragmented MP4 (a ``moof`` and its ``mdat``)."""

    data: bytes
    keyframe: bool
    #: Its presentation time, seconds from the stream's start (what the player's clock says).
    t: float


class Timeline:
    """One stream's presentation times, from its frames' capture times (90 kHz from the first
    frame's, strictly increasing), and what goes with each frame until the muxer completes its
    fragment: FFmpeg writes a frame's fragment only when the next frame comes."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.last_pts = -1
        self._waiting: deque[tuple[int, Any]] = deque()

    def pts(self, captured_at: float) -> int:
        """The presentation time of the frame captured at ``captured_at`` (monotonic)."""
        self.last_pts = max(self.last_pts + 1, round((captured_at - self.t0) * 90_000))
        return self.last_pts

    def hold(self, pts: int, item: Any) -> None:
        """Keep ``item`` for the fragment of the frame at ``pts``."""
        self._waiting.append((pts, item))

    def take(self, fragment: Fragment) -> Any:
        """What was held for ``fragment``'s frame (items of frames before it are dropped;
        the nearest after it if none was held for it)."""
        fpts = round(fragment.t * 90_000)
        while len(self._waiting) > 1 and self._waiting[0][0] < fpts:
            self._waiting.popleft()
        pts, item = self._waiting[0]
        if pts <= fpts:
            self._waiting.popleft()
        return item


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


class _Sink(io.RawIOBase):
    """Where the MP4 muxer writes: kept until whole boxes can be handed on."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        return len(data)


class _Fragmenter:
    """A fragmented MP4 muxer writing into memory, its output cut into whole fragments."""

    def __init__(self, width: int, height: int) -> None:
        import av

        self.size = (width, height)
        self._sink = _Sink()
        self._out = av.open(self._sink, mode="w", format="mp4", options={
            "movflags": "empty_moov+default_base_moof+frag_every_frame"})
        self.init: bytes | None = None
        #: The init segment's codec (``codec_string``), read once.
        self.codec = ""
        self._timescale = 90_000

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


class Encoder(_Fragmenter):
    """libx264 into fragmented MP4 for one picture size (worker thread only)."""

    def __init__(self, width: int, height: int, bitrate_kbps: int, preset: str) -> None:
        super().__init__(width, height)
        stream = self._out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bitrate_kbps * 1000
        stream.codec_context.time_base = TIMEBASE
        stream.codec_context.options = {
            "preset": preset, "tune": "zerolatency", "profile": "baseline",
            "bf": "0", "g": "600", "sc_threshold": "0", "threads": "1",
            # A steady rate for a phone's link: bursts at most a second's worth.
            "maxrate": str(bitrate_kbps * 1000), "bufsize": str(bitrate_kbps * 1000)}
        self._stream = stream

    def encode(self, image: NDArray[np.uint8], pts: int, keyframe: bool) -> list[Fragment]:
        """Encode one BGR frame, scaled to the encoder's size, at ``pts`` (90 kHz); the
        fragments completed by it."""
        import av

        frame = av.VideoFrame.from_numpy_buffer(i420(image, self.size), format="yuv420p")
        frame.pts, frame.time_base = pts, TIMEBASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._stream.encode(frame):
            self._out.mux(packet)
        return self._take()


def i420(image: NDArray[np.uint8], size: tuple[int, int]) -> NDArray[np.uint8]:
    """A BGR ``image`` as I420 (planar 4:2:0, BT.601 limited range as H.264 expects) of
    ``size`` (even sides; an odd last row or column of ``image`` is left out).

    Converted at its own size, then each plane scaled: half the pixels of scaling the BGR
    image, and OpenCV converts five times faster than swscale."""
    import cv2

    h, w = image.shape[:2]
    yuv = cv2.cvtColor(image[:h - h % 2, :w - w % 2], cv2.COLOR_BGR2YUV_I420)
    h, w = h - h % 2, w - w % 2
    if (w, h) == size:
        return yuv  # type: ignore[return-value]
    out_w, out_h = size
    out = np.empty((out_h * 3 // 2, out_w), np.uint8)
    src, dst = yuv.reshape(-1), out.reshape(-1)  # views: the planes follow each other
    planes = ((0, w, h, 0, out_w, out_h),
              (w * h, w // 2, h // 2, out_w * out_h, out_w // 2, out_h // 2),
              (w * h * 5 // 4, w // 2, h // 2, out_w * out_h * 5 // 4, out_w // 2, out_h // 2))
    for at, pw, ph, out_at, out_pw, out_ph in planes:
        # Linear: a seventh of INTER_AREA's cost for 1080p to 720p; the encoder smooths more.
        cv2.resize(src[at:at + pw * ph].reshape(ph, pw), (out_pw, out_ph),
                   dst=dst[out_at:out_at + out_pw * out_ph].reshape(out_ph, out_pw),
                   interpolation=cv2.INTER_LINEAR)
    return out


class Passthrough(_Fragmenter):
    """H.264 as a camera sent it (Annex B packets, no B-frames) into the same fragmented MP4
    as ``Encoder`` writes: nothing is decoded or encoded.

    The init segment's ``avcC`` is the camera's SPS and PPS, taken from the first packet
    (a keyframe: it carries them in band, or ``extradata`` is put before it); the player
    gets the camera's profile and level in ``codec``.
    """

    def __init__(self, width: int, height: int, extradata: bytes, fps: float) -> None:
        super().__init__(width, height)
        self._stream = self._out.add_mux_stream("h264", width=width, height=height)
        self._stream.time_base = TIMEBASE
        #: Annex B SPS and PPS to put before the first keyframe if it lacks them.
        self._extradata = extradata if extradata[:3] in (b"\x00\x00\x00", b"\x00\x00\x01") \
            else b""
        #: Each sample lasts a frame at the stated rate, until the next one says otherwise.
        self._duration = round(90_000 / (fps if 1.0 <= fps <= 240.0 else 25.0))
        self._started = False

    def mux(self, data: bytes, pts: int, keyframe: bool) -> list[Fragment]:
        """One packet (Annex B) at ``pts`` (90 kHz, increasing); the fragments completed.
        Packets before the first keyframe are left out (nothing could decode them)."""
        import av

        if not self._started:
            if not keyframe:
                return []
            self._started = True
            if not any(unit[:1] and unit[0] & 0x1F == 7 for unit in _nal_units(data)):
                data = self._extradata + data
        packet = av.Packet(data)
        packet.stream = self._stream
        packet.time_base = TIMEBASE
        packet.pts = packet.dts = pts
        packet.duration = self._duration
        packet.is_keyframe = keyframe
        self._out.mux(packet)
        return self._take()


def _nal_units(data: bytes) -> list[bytes]:
    """The NAL units of Annex B ``data`` (start codes of 3 or 4 bytes)."""
    units = []
    at = data.find(b"\x00\x00\x01")
    while at >= 0:
        start = at + 3
        nxt = data.find(b"\x00\x00\x01", start)
        units.append(data[start:len(data) if nxt < 0 else nxt])
        at = nxt
    return units
