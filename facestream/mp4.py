"""H.264 in fragmented MP4: libx264 (PyAV's bundled FFmpeg) for one picture size and rate,
or a camera's own H.264 passed through, written as the streams send it (video.py).

The encoder is tuned for live viewing: baseline profile (every browser plays it), no
B-frames, zerolatency (each frame's packet comes back at once), a steady rate (bursts at
most a second's worth), keyframes only when asked. The muxer, written here, makes an init
segment (``ftyp`` + ``moov``) from the stream's SPS and PPS and then one fragment (``moof`` +
``mdat``) per frame, as soon as the frame is there: FFmpeg's muxer could only finish a
fragment when the next frame came, which kept every frame a frame period (40 ms) longer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

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
    frame's, strictly increasing)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.last_pts = -1

    def pts(self, captured_at: float) -> int:
        """The presentation time of the frame captured at ``captured_at`` (monotonic)."""
        self.last_pts = max(self.last_pts + 1, round((captured_at - self.t0) * 90_000))
        return self.last_pts


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


def _box(kind: bytes, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *parts)


#: The identity matrix of mvhd and tkhd.
_MATRIX: Final = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
#: trun's sample flags: a sync sample; one that depends on others.
_SYNC: Final = 0x02000000
_NOT_SYNC: Final = 0x01010000


def init_segment(width: int, height: int, sps: bytes, pps: bytes) -> bytes:
    """``ftyp`` and ``moov`` of one H.264 track (90 kHz) of fragmented MP4, its ``avcC``
    from the stream's SPS and PPS."""
    avcc = _box(b"avcC", bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),
                struct.pack(">H", len(sps)), sps, b"\x01", struct.pack(">H", len(pps)), pps)
    avc1 = _box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16),
                struct.pack(">HHIIIH", width, height, 0x480000, 0x480000, 0, 1), bytes(32),
                struct.pack(">Hh", 0x18, -1), avcc)
    empty = [_full_box(kind, 0, 0, bytes(4)) for kind in (b"stts", b"stsc", b"stco")]
    stbl = _box(b"stbl", _full_box(b"stsd", 0, 0, struct.pack(">I", 1), avc1), *empty[:2],
                _full_box(b"stsz", 0, 0, bytes(8)), empty[2])
    minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)),
                _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1),
                                        _full_box(b"url ", 0, 1))), stbl)
    mdia = _box(b"mdia",
                _full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, 90_000, 0, 0x55C4, 0)),
                _full_box(b"hdlr", 0, 0, bytes(4), b"vide", bytes(12), b"facestream\x00"),
                minf)
    tkhd = _full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, 1, 0, 0), bytes(8),
                     struct.pack(">hhhH", 0, 0, 0, 0), _MATRIX,
                     struct.pack(">II", width << 16, height << 16))
    mvhd = _full_box(b"mvhd", 0, 0, struct.pack(">IIIIIH", 0, 0, 1000, 0, 0x10000, 0x100),
                     bytes(10), _MATRIX, bytes(24), struct.pack(">I", 2))
    mvex = _box(b"mvex", _full_box(b"trex", 0, 0, struct.pack(">5I", 1, 1, 0, 0, 0)))
    return (_box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso6avc1mp41")
            + _box(b"moov", mvhd, _box(b"trak", tkhd, mdia), mvex))


def media_segment(sequence: int, pts: int, duration: int, sample: bytes, keyframe: bool
                  ) -> bytes:
    """``moof`` and ``mdat`` of one sample (length-prefixed NAL units) at ``pts`` (90 kHz:
    its decode time too, without B-frames), lasting ``duration``."""
    def moof(data_offset: int) -> bytes:
        trun = _full_box(b"trun", 0, 0x000701, struct.pack(
            ">IiIII", 1, data_offset, duration, len(sample), _SYNC if keyframe else _NOT_SYNC))
        traf = _box(b"traf", _full_box(b"tfhd", 0, 0x020000, struct.pack(">I", 1)),
                    _full_box(b"tfdt", 1, 0, struct.pack(">Q", pts)), trun)
        return _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    size = len(moof(0))
    return moof(size + 8) + _box(b"mdat", sample)


class _Fragmenter:
    """H.264 access units (Annex B) into fragmented MP4 (init_segment, media_segment): each
    frame's fragment at once, the init segment from the first keyframe's SPS and PPS (or
    ``extradata``'s)."""

    def __init__(self, width: int, height: int, fps: float, extradata: bytes = b"") -> None:
        self.size = (width, height)
        self.init: bytes | None = None
        #: The init segment's codec (``avc1.PPCCLL``), for the player.
        self.codec = ""
        self._extradata = extradata
        #: A sample lasts as long as the one before it did (the next one's decode time says
        #: when it really ends); the first, a frame at the stated rate.
        self._period = round(90_000 / (fps if 1.0 <= fps <= 240.0 else 25.0))
        self._last_pts: int | None = None
        self._sequence = 0

    def _fragment(self, data: bytes, pts: int, keyframe: bool) -> list[Fragment]:
        units = [unit.rstrip(b"\x00") for unit in _nal_units(data)]
        if self.init is None:
            if not keyframe:
                return []  # nothing before a keyframe decodes
            sets = {unit[0] & 0x1F: unit for unit in units + _nal_units(self._extradata)
                    if unit}
            if 7 not in sets or 8 not in sets:
                return []
            self.init = init_segment(*self.size, sets[7], sets[8])
            self.codec = codec_string(self.init)
        # The parameter sets are the init segment's (avc1); access unit delimiters go too.
        sample = b"".join(struct.pack(">I", len(unit)) + unit for unit in units
                          if unit and unit[0] & 0x1F not in (7, 8, 9))
        if self._last_pts is not None and pts > self._last_pts:
            self._period = min(pts - self._last_pts, 90_000)
        self._last_pts = pts
        self._sequence += 1
        return [Fragment(media_segment(self._sequence, pts, self._period, sample, keyframe),
                         keyframe, pts / 90_000)]

    def close(self) -> None:
        """Nothing to release (the Encoder's codec goes with it)."""


def x264_options(bitrate_kbps: int, preset: str) -> dict[str, str]:
    """libx264's options for live viewing (see the module's docstring)."""
    return {"preset": preset, "tune": "zerolatency", "profile": "baseline",
            "bf": "0", "g": "600", "sc_threshold": "0",
            # One thread: the same CPU as slice threads, and none waiting beside it.
            "threads": "1",
            # A steady rate for a phone's link: bursts at most a second's worth.
            "maxrate": str(bitrate_kbps * 1000), "bufsize": str(bitrate_kbps * 1000)}


class Encoder(_Fragmenter):
    """libx264 into fragmented MP4 for one picture size (worker thread only)."""

    def __init__(self, width: int, height: int, bitrate_kbps: int, preset: str) -> None:
        import av

        super().__init__(width, height, 25.0)
        codec = av.CodecContext.create("libx264", "w")
        codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
        # Rate control needs the rate; timestamps are 90 kHz.
        codec.time_base, codec.framerate = TIMEBASE, Fraction(25)
        codec.bit_rate = bitrate_kbps * 1000
        codec.options = x264_options(bitrate_kbps, preset)
        self._codec = codec

    def encode(self, image: NDArray[np.uint8], pts: int, keyframe: bool) -> list[Fragment]:
        """Encode one BGR frame, scaled to the encoder's size, at ``pts`` (90 kHz); its
        fragment (zerolatency: libx264 hands each frame's packet back at once)."""
        import av

        frame = av.VideoFrame.from_numpy_buffer(i420(image, self.size), format="yuv420p")
        frame.pts, frame.time_base = pts, TIMEBASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return [fragment for packet in self._codec.encode(frame)
                for fragment in self._fragment(bytes(packet), packet.pts, packet.is_keyframe)]


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

    The init segment's ``avcC`` is the camera's SPS and PPS, taken from the first keyframe
    (or from ``extradata`` if it lacks them); the player gets the camera's profile and level
    in ``codec``. Packets before the first keyframe are left out.
    """

    def __init__(self, width: int, height: int, extradata: bytes, fps: float) -> None:
        annex_b = extradata[:3] in (b"\x00\x00\x00", b"\x00\x00\x01")  # not an avcC record
        super().__init__(width, height, fps, extradata if annex_b else b"")

    def mux(self, data: bytes, pts: int, keyframe: bool) -> list[Fragment]:
        """One packet (Annex B) at ``pts`` (90 kHz, increasing); its fragment."""
        return self._fragment(data, pts, keyframe)



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
