"""Reading a camera source, frame by frame: FFmpeg through PyAV for files and streams, OpenCV
for webcams.

PyAV demuxes before it decodes, so each frame's compressed packet is at hand: an H.264
camera's pictures can go to video viewers as the camera made them (video.py passes them
through) instead of being decoded, scaled and encoded again. OpenCV's ``VideoCapture`` only
gives decoded frames; it stays for webcams (V4L2), which send raw or MJPEG pictures anyway.

Decoding threads within a picture only (slices), never across pictures: frame threading
would hold each frame back by a frame or more per thread, a delay every viewer would see.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import cv2
import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class StreamFormat:
    """What one opened source sends: its codec and picture, and the codec's parameters."""

    #: FFmpeg's name of the codec: "h264", "mpeg4", "mjpeg", ...
    codec: str
    width: int
    height: int
    #: Pictures come out of order (B-frames): their packets cannot be timed by arrival.
    b_frames: bool
    #: The codec's global header (H.264: SPS and PPS, Annex B or avcC), b"" if none.
    extradata: bytes
    #: Frames per second as the source states it, 0.0 if it does not.
    fps: float


class Sample(NamedTuple):
    """One packet read: its decoded picture (None if it gave none: a decoding error, or a
    stream joined between keyframes) and, when asked for, its data (H.264 in Annex B)."""

    frame: NDArray[np.uint8] | None
    data: bytes | None
    keyframe: bool
    #: Its presentation time in the source's own clock (s), None if it has none: what
    #: keyframe intervals are measured by (arrival times bunch up when a stream starts).
    source_t: float | None = None


class Reader(Protocol):
    """An opened source (capture.py reads it in its own thread)."""

    width: int
    height: int
    #: Frames per second as the source states it, 0.0 if it does not.
    fps: float
    #: None for a source whose packets are not at hand (a webcam).
    format: StreamFormat | None

    def keep_packets(self) -> None:
        """From now on, ``read`` hands on each packet's data too."""

    def read(self) -> Sample | None:
        """The next packet, None at the end of the source or when it fails."""

    def release(self) -> None: ...


def open_reader(kind: str, target: int | str, timeout_s: float) -> Reader | None:
    """``target`` opened (a webcam index with OpenCV; a file or URL with PyAV), or None."""
    if kind == "webcam":
        return OpenCvReader.open(int(target))
    return AvReader.open(str(target), timeout_s if kind == "url" else None)


class OpenCvReader:
    """A webcam through OpenCV: decoded frames only."""

    format = None

    def __init__(self, cap: cv2.VideoCapture) -> None:
        self._cap = cap
        self.width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.fps = float(cap.get(cv2.CAP_PROP_FPS))

    @classmethod
    def open(cls, index: int) -> OpenCvReader | None:
        cap = cv2.VideoCapture(index)
        if not cap.isOpened():
            cap.release()
            return None
        # Ask the driver to buffer as little as possible; reading continuously does the rest.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cls(cap)

    def keep_packets(self) -> None:
        pass

    def read(self) -> Sample | None:
        ok, frame = self._cap.read()
        if not ok or frame is None or frame.size == 0:
            return None
        return Sample(frame, None, False)

    def release(self) -> None:
        self._cap.release()


class AvReader:
    """A file or a stream through PyAV: its first video stream, packet by packet."""

    def __init__(self, container: Any, stream: Any) -> None:
        self._container = container
        self._stream = stream
        ctx = stream.codec_context
        self.width, self.height = int(ctx.width), int(ctx.height)
        rate = stream.average_rate or stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        extradata = bytes(ctx.extradata or b"")
        self.format = StreamFormat(ctx.name, self.width, self.height,
                                   bool(ctx.has_b_frames), extradata, self.fps)
        self._packets = demux(container, stream)
        self._keep = False
        #: Frames the decoder gave at the end, still to be read.
        self._drained: list[Any] = []
        #: MP4 and MKV carry H.264 length-prefixed (avcC); RTSP as Annex B already.
        self._to_annexb: Any = None

    @classmethod
    def open(cls, target: str, timeout_s: float | None) -> AvReader | None:
        import av

        options = {"rtsp_transport": "tcp"} if target[:5].lower() == "rtsp:" else {}
        try:
            container = av.open(target, options=options,
                                timeout=None if timeout_s is None else (timeout_s, timeout_s))
        except (av.FFmpegError, OSError, ValueError):
            return None
        try:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # no frame delay (see the module's docstring)
            if not stream.codec_context.width:
                raise ValueError("no picture size")
            return cls(container, stream)
        except (av.FFmpegError, IndexError, ValueError):
            container.close()
            return None

    def keep_packets(self) -> None:
        import av

        self._keep = True
        if self.format is not None and self.format.codec == "h264" \
                and self.format.extradata[:1] == b"\x01":
            # SPS and PPS go before every keyframe too, so a stream cut anywhere at a
            # keyframe plays on its own (a viewer joining, a muxer starting).
            self._to_annexb = av.BitStreamFilterContext("h264_mp4toannexb",
                                                        in_stream=self._stream)

    def read(self) -> Sample | None:
        import av

        if self._drained:
            return Sample(_bgr(self._drained.pop(0)), None, False)
        while True:
            try:
                packet = next(self._packets)
            except (StopIteration, av.FFmpegError, OSError):
                return None
            if packet.size == 0:
                # The end: the frames a decoder held back (a file with B-frames) come out.
                try:
                    self._drained.extend(packet.decode())
                except av.FFmpegError:
                    pass
                if self._drained:
                    return Sample(_bgr(self._drained.pop(0)), None, False)
                continue
            frame = None
            try:
                for decoded in packet.decode():
                    frame = decoded
            except av.FFmpegError:
                pass  # a damaged picture: its packet still counts, as a camera sent it
            keyframe = bool(packet.is_keyframe)
            source_t = None if packet.pts is None or packet.time_base is None else \
                float(packet.pts * packet.time_base)
            data = None
            if self._keep:  # (the filter takes the packet's data: it is left empty)
                if self._to_annexb is not None:
                    data = b"".join(bytes(p) for p in self._to_annexb.filter(packet))
                else:
                    data = bytes(packet)
            return Sample(None if frame is None else _bgr(frame), data, keyframe, source_t)

    def release(self) -> None:
        with contextlib.suppress(Exception):
            self._container.close()


def demux(container: Any, stream: Any) -> Any:
    """``container``'s packets of ``stream``, as an iterator."""
    return iter(container.demux(stream))


def _bgr(frame: Any) -> NDArray[np.uint8]:
    """A decoded picture as OpenCV's BGR. 4:2:0 is converted by OpenCV (BT.601, as
    swscale's default is), several times faster than swscale; the rest by swscale."""
    if frame.format.name == "yuv420p" and frame.width % 2 == 0 and frame.height % 2 == 0:
        return cv2.cvtColor(frame.to_ndarray(), cv2.COLOR_YUV2BGR_I420)  # type: ignore
    return frame.to_ndarray(format="bgr24")  # type: ignore[no-any-return]
