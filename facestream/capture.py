"""Camera capture: a reader thread and an encoder thread, handing packets to the event loop.

The reader reads continuously and keeps only the newest frame, so a network camera's buffer is
drained and latency never accumulates however slow everything downstream is. A file source
plays at its native frame rate and loops, like a camera. A lost or absent source is reopened
with exponential backoff while the encoder shows a "no signal" frame.

The source is read through ``source.py`` (PyAV for files and streams, OpenCV for webcams).
Of a source whose packets the camera's video wants (``PacketSink``: an H.264 camera passed
through to video viewers, video.py), the reader hands on every compressed packet, in order,
timed as its frame is and with who was in view then; frames may be skipped, packets never.

The encoder takes the newest frame, scales it to the stream size, draws the latest face boxes
(``overlay.py``) and encodes one JPEG that every viewer shares. Both threads block only
themselves; they hand results over through ``deliver`` (thread-safe, e.g.
``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import unquote

import cv2
import numpy as np
from numpy.typing import NDArray

from .config import CameraConfig
from .hub import Packet
from .metrics import Metrics
from .overlay import annotate, no_signal_image
from .presence import Snapshot
from .privacy import redact_source
from .retry import Backoff, Outage
from .source import Reader, StreamFormat, open_reader

log = logging.getLogger(__name__)

# OpenCV and FFmpeg would print a warning of their own at every reconnection attempt (and
# FFmpeg's messages can quote the source); facestream logs each attempt itself, once, with the
# credentials redacted. Errors still come through.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

#: How often a "no signal" frame is sent while the source is down.
NO_SIGNAL_INTERVAL_S: Final = 0.5
#: File sources without a usable frame rate in their metadata play at this rate.
DEFAULT_FPS: Final = 25.0
#: A source that cannot be opened is explained once, in one WARNING line; the attempts that
#: follow are logged at DEBUG, with a short WARNING reminder at most this often.
UNAVAILABLE_REMINDER_S: Final = 300.0



class InView(Protocol):
    """Who is in view, to draw (presence.Presence): an immutable snapshot, read each frame."""

    @property
    def snapshot(self) -> Snapshot: ...


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "webcam", "file" or "url"
    target: int | str

    @classmethod
    def parse(cls, source: str) -> SourceSpec:
        s = source.strip()
        if s.isdigit():
            return cls("webcam", int(s))
        if s[:7].lower() == "file://":
            return cls("file", unquote(s[7:]))
        if "://" in s:
            return cls("url", s)
        return cls("file", s)


#: What a camera URL given over the API may start with: the network streams cameras send.
#: (FFmpeg would also read file://, ftp://, gopher://, tcp://, udp://, ... for anybody
#: who can name a source.)
STREAM_SCHEMES: Final = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
_API_SOURCES: Final = ("give a webcam index or an " + ", ".join(f"{s}://" for s in STREAM_SCHEMES)
                       + " URL")


def api_source_problem(source: str, files_allowed: bool) -> str | None:
    """Why ``source`` may not be given over the API (POST /cameras), or None. A webcam
    index and the stream schemes may; a file on this machine (a path, file://) only when
    ``server.api_camera_files`` allows it (the config file always may); other schemes not."""
    spec = SourceSpec.parse(source)
    if spec.kind == "webcam":
        return None
    if spec.kind == "file":
        return None if files_allowed else (
            "source: a file on the server is refused from the API (set "
            f"server.api_camera_files = true in the config file to allow it); {_API_SOURCES}")
    scheme = source.strip().split("://", 1)[0].lower()
    if scheme not in STREAM_SCHEMES:
        return f"source: {scheme[:20]!r} URLs are not camera streams; {_API_SOURCES}"
    return None


def _open(spec: SourceSpec, timeout_s: float) -> Reader | None:
    if spec.kind == "file" and not Path(str(spec.target)).is_file():
        return None
    return open_reader(spec.kind, spec.target, timeout_s)


def unavailable_hint(spec: SourceSpec, shown: str) -> str:
    """Why ``spec`` could not be opened, as far as can be told from here, and what to try:
    one line for the log. ``shown`` is the source with its credentials redacted."""
    if spec.kind == "webcam":
        index = spec.target
        device = Path(f"/dev/video{index}")
        if not sys.platform.startswith("linux"):
            why = f"no camera answers at index {index}"
        elif not device.exists():
            present = sorted(glob.glob("/dev/video*"),
                             key=lambda d: (len(d), d))  # video2 before video10
            why = f"{device} does not exist (" + (
                f"video devices here: {', '.join(present)}" if present else
                "no /dev/video* device at all: no webcam attached, or a container started "
                "without --device /dev/video0") + ")"
        elif not os.access(device, os.R_OK | os.W_OK):
            why = f"{device} exists but this user may not open it (add it to the video group)"
        else:
            why = f"{device} exists but does not deliver video (in use by another program, " \
                  "or not a capture device)"
        return (f"cannot open webcam {index}: {why}. List cameras with `ls /dev/video*` or "
                "`v4l2-ctl --list-devices`, or pass a video file or a stream instead: "
                "--source video.mp4, --source rtsp://user:pass@host/stream")
    if spec.kind == "file":
        path = Path(str(spec.target))
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        if not path.exists():
            why = f"there is no file {shown}{where}"
        elif path.is_dir():
            why = f"{shown} is a folder, not a video file"
        else:
            why = f"FFmpeg cannot read {shown} as a video"
        return (f"cannot open it: {why}. --source takes a video file, a webcam index "
                "(--source 0) or a stream URL (--source rtsp://user:pass@host/stream)")
    return ("cannot open it: nothing answered there in time, or the camera refused the path or "
            "the credentials. Check the host, port, path, user and password (open the URL in "
            "VLC or with ffprobe to compare); rtsp:// and http(s):// MJPEG streams are supported")


def scale_to(frame: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class SourcePacket:
    """One compressed packet as the source sent it (H.264 in Annex B), for passing it
    through to video viewers (video.py)."""

    data: bytes
    keyframe: bool
    #: time.monotonic() when it was read: its decoded frame's ``captured_at``.
    captured_at: float
    #: What the source sends; the same object for every packet of one opening.
    format: StreamFormat
    #: Who was in view then (FaceViews, boxes in the ``camera.max_side`` stream's pixels).
    faces: tuple[Any, ...]
    #: The packet's picture pixels per box pixel (1.0 when the stream is not scaled).
    face_scale: float
    #: Its time in the source's own clock (s), None if unknown (source.Sample).
    source_t: float | None = None


class PacketSink(Protocol):
    """Where compressed packets go (video.VideoStream's), from the reader thread."""

    def opened(self, fmt: StreamFormat | None) -> bool:
        """A source was opened that sends ``fmt`` (None: packets not at hand); whether its
        packets are wanted. Thread-safe."""

    def put(self, packet: SourcePacket) -> None:
        """One packet, in order. Thread-safe, never blocks."""


class Capture:
    """Reads ``config.source`` in a thread; encodes and delivers packets from another."""

    def __init__(
        self,
        config: CameraConfig,
        deliver: Callable[[Packet], Any],
        in_view: InView,
        metrics: Metrics,
        jpeg_wanted: Callable[[], bool] = lambda: True,
        packets: PacketSink | None = None,
    ) -> None:
        self.config = config
        #: Takes every compressed packet read, in order (none is skipped, unlike frames).
        self._packets = packets
        #: Whether anybody reads the annotated JPEGs now (MJPEG viewers, MQTT snapshots):
        #: without them each frame is handed on unencoded (a 1080p JPEG with its overlay
        #: costs about 12 ms, a third of a core at 25 fps).
        self._jpeg_wanted = jpeg_wanted
        self.spec = SourceSpec.parse(config.source)
        self._deliver = deliver
        self._in_view = in_view
        self._metrics = metrics
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._frame: NDArray[np.uint8] | None = None
        self._frame_seq = 0
        self._frame_at = 0.0
        self._frame_pos = -1
        self._connected = False
        self._reason = "connecting"
        self._threads: list[threading.Thread] = []
        self._seq = 0
        self.reconnects = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._read_loop, name="facestream-read", daemon=True),
            threading.Thread(target=self._encode_loop, name="facestream-encode", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout)

    def status(self) -> dict[str, Any]:
        return {
            "source": redact_source(self.config.source),
            "kind": self.spec.kind,
            "signal": self._connected,
            "state": "live" if self._connected else self._reason,
            "reconnects": self.reconnects,
            "resolution": None if self._frame is None else
            f"{self._frame.shape[1]}x{self._frame.shape[0]}",
        }

    # -- reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        shown = redact_source(self.config.source)
        #: The current run of failed opens (logged when it starts, reminded now and then).
        outage = Outage(log)
        reminded = 0.0
        #: "opened" is logged when the source is first opened and after it was lost or
        #: could not be opened; a file starting over from its beginning is no news.
        announce = True
        while not self._stop.is_set():
            reader = _open(self.spec, self.config.read_timeout_s)
            if reader is None:
                self._set_lost(f"cannot open source; retrying in {backoff.upcoming:.1f}s")
                announce = True
                now = time.monotonic()
                if outage.failed(logging.WARNING, "camera %s: %s. Retrying every %.1fs at "
                                 "first, then up to every %.1fs; each attempt is logged at "
                                 "DEBUG", shown, unavailable_hint(self.spec, shown),
                                 backoff.first, backoff.last):
                    reminded = now
                elif now - reminded >= UNAVAILABLE_REMINDER_S:
                    reminded = now
                    log.warning("camera %s: still cannot open it (%d attempts in %.0f min); "
                                "retrying", shown, outage.failures,
                                (now - (outage.since or now)) / 60)
                else:
                    log.debug("camera %s: cannot open; retrying in %.1fs", shown,
                              backoff.upcoming)
                self._stop.wait(backoff.next())
                continue
            if announce:
                log.info("camera %s: opened%s", shown,
                         self._opened_details(reader, outage.failures))
                announce = False
            else:
                log.debug("camera %s: playing it again from the start", shown)
            outage.clear()  # "opened ... after N failed attempts" said so
            try:
                got_any = self._read_from(reader)
            finally:
                reader.release()
            if self._stop.is_set():
                break
            if self.spec.kind == "file" and got_any:
                continue  # end of file: play it again from the start
            self.reconnects += 1
            announce = True
            if got_any:
                backoff.reset()
            self._set_lost(f"source lost; reconnecting in {backoff.upcoming:.1f}s")
            log.warning("camera %s: lost; reconnecting in %.1fs", shown, backoff.upcoming)
            self._stop.wait(backoff.next())

    def _opened_details(self, reader: Reader, failures: int) -> str:
        """`` (640x360, played in a loop) after 3 failed attempts``, as far as known."""
        width, height = reader.width, reader.height
        facts = [f"{width}x{height}"] if width > 0 and height > 0 else []
        if self.spec.kind == "file":
            facts.append("played in a loop")
        details = f" ({', '.join(facts)})" if facts else ""
        if failures:
            details += f" after {failures} failed attempt{'s' if failures > 1 else ''}"
        return details

    def _read_from(self, reader: Reader) -> bool:
        """Read until the source ends or fails; True if at least one frame came."""
        paced = self.spec.kind == "file"
        fps = reader.fps if paced else 0.0
        period = 1.0 / (fps if 1.0 <= fps <= 240.0 else DEFAULT_FPS)
        sink, face_scale = self._packets, 1.0
        if sink is not None and sink.opened(reader.format) and reader.format is not None:
            reader.keep_packets()
            fmt = reader.format
            longest = max(fmt.width, fmt.height)
            face_scale = longest / self.config.max_side if longest > self.config.max_side \
                else 1.0
        else:
            sink = None
        due = time.monotonic()
        position = 0
        got_any = False
        while not self._stop.is_set():
            sample = reader.read()
            if sample is None:
                return got_any
            frame = sample.frame
            got_any = got_any or frame is not None
            if paced:
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        return got_any
                elif delay < -2 * period:
                    due = time.monotonic()  # fell behind (e.g. a pause): don't burst to catch up
            now = time.monotonic()
            if sink is not None and sample.data:
                assert reader.format is not None
                sink.put(SourcePacket(sample.data, sample.keyframe, now, reader.format,
                                      self._in_view.snapshot.faces, face_scale,
                                      sample.source_t))
            if frame is not None:
                self._metrics.frames_captured.inc()
                with self._cond:
                    self._frame = frame
                    self._frame_seq += 1
                    self._frame_at = now
                    self._frame_pos = position if paced else -1
                    self._connected = True
                    self._cond.notify_all()
            position += 1
        return got_any

    def _set_lost(self, reason: str) -> None:
        with self._cond:
            self._connected = False
            self._reason = reason
            self._cond.notify_all()

    # -- encoder thread --------------------------------------------------------------------

    def _encode_loop(self) -> None:
        last_seq = 0
        last_no_signal = 0.0
        quality = [cv2.IMWRITE_JPEG_QUALITY, self.config.jpeg_quality]
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda seen=last_seq: self._stop.is_set() or self._frame_seq != seen,
                    timeout=NO_SIGNAL_INTERVAL_S,
                )
                frame, seq = self._frame, self._frame_seq
                frame_at, pos = self._frame_at, self._frame_pos
                connected, reason = self._connected, self._reason
            if self._stop.is_set():
                break
            now = time.monotonic()
            stale = now - frame_at > self.config.read_timeout_s
            if frame is not None and seq != last_seq and connected:
                last_seq = seq
                t0 = time.perf_counter()
                clean = scale_to(frame, self.config.max_side)
                if clean is frame:
                    clean = frame.copy()  # the reader may hand the same buffer back
                faces = self._in_view.snapshot.faces
                ok, jpeg = True, np.empty(0, np.uint8)
                if self._jpeg_wanted():
                    shown = clean.copy()
                    annotate(shown, faces)
                    ok, jpeg = cv2.imencode(".jpg", shown, quality)
                    self._metrics.stage_seconds.labels("encode").observe(
                        time.perf_counter() - t0)
                if ok:
                    # The reader hands over a new array per frame: the full-resolution frame
                    # goes on as it is, for recognition's full-resolution passes.
                    self._emit(clean, jpeg.tobytes(), frame_at, True, pos,
                               None if clean.shape == frame.shape else frame, faces)
            elif (not connected or stale) and now - last_no_signal >= NO_SIGNAL_INTERVAL_S:
                last_no_signal = now
                why = reason if not connected else "no frames from the source"
                img = no_signal_image(self.config.source, why)
                ok, jpeg = cv2.imencode(".jpg", img, quality)
                if ok:
                    self._emit(None, jpeg.tobytes(), now, False, -1)

    def _emit(self, image: NDArray[np.uint8] | None, jpeg: bytes, captured_at: float,
              signal: bool, frame_position: int, full: NDArray[np.uint8] | None = None,
              faces: tuple[Any, ...] = ()) -> None:
        self._seq += 1
        self._metrics.frames_encoded.inc()
        self._deliver(Packet(self._seq, captured_at, image, jpeg, signal, frame_position,
                             full, faces))
