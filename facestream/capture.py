"""Camera capture: a reader thread and an encoder thread, handing packets to the event loop.

The reader reads continuously and keeps only the newest frame, so a network camera's buffer is
drained and latency never accumulates however slow everything downstream is. A file source
plays at its native frame rate and loops, like a camera. A lost or absent source is reopened
with exponential backoff while the encoder shows a "no signal" frame.

The encoder takes the newest frame, scales it to the stream size, draws the latest face boxes
and encodes one JPEG that every viewer shares. Both threads block only themselves; they hand
results over through ``deliver`` (thread-safe, e.g. ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

from .config import CameraConfig
from .hub import Packet
from .metrics import Metrics
from .privacy import redact_source
from .tracking import FaceView

log = logging.getLogger(__name__)

# OpenCV and FFmpeg would print a warning of their own at every reconnection attempt (and
# FFmpeg's messages can quote the source); facestream logs each attempt itself, once, with the
# credentials redacted. Errors still come through.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

NO_SIGNAL_SIZE: Final = (640, 360)
#: How often a "no signal" frame is sent while the source is down.
NO_SIGNAL_INTERVAL_S: Final = 0.5
#: File sources without a usable frame rate in their metadata play at this rate.
DEFAULT_FPS: Final = 25.0

KNOWN_COLOR: Final = (80, 200, 60)  # BGR
UNKNOWN_COLOR: Final = (0, 165, 255)


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "webcam", "file" or "url"
    target: int | str

    @classmethod
    def parse(cls, source: str) -> SourceSpec:
        s = source.strip()
        if s.isdigit():
            return cls("webcam", int(s))
        if "://" in s:
            return cls("url", s)
        return cls("file", s)


def _open(spec: SourceSpec, timeout_s: float) -> cv2.VideoCapture | None:
    if spec.kind == "file" and not Path(str(spec.target)).is_file():
        return None
    if spec.kind == "url":
        ms = int(timeout_s * 1000)
        cap = cv2.VideoCapture(
            str(spec.target),
            cv2.CAP_FFMPEG,
            [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms],
        )
    else:
        cap = cv2.VideoCapture(spec.target)
    if not cap.isOpened():
        cap.release()
        return None
    if spec.kind != "file":
        # Ask the backend to buffer as little as possible; reading continuously does the rest.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return cap


def scale_to(frame: NDArray[np.uint8], max_side: int) -> NDArray[np.uint8]:
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def annotate(frame: NDArray[np.uint8], faces: Sequence[FaceView]) -> None:
    """Draw each face's box and label onto ``frame`` in place."""
    scale = max(0.45, min(1.2, frame.shape[1] / 1000))
    thick = max(1, round(scale * 2))
    for face in faces:
        x, y, w, h = face.box
        color = KNOWN_COLOR if face.known else UNKNOWN_COLOR
        cv2.rectangle(frame, (x, y), (x + w, y + h), color, thick)
        label = face.name if face.known and face.name else f"unknown {face.hash[:8]}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(0, y - th - base - 4)
        cv2.rectangle(frame, (x, top), (x + tw + 6, top + th + base + 4), color, -1)
        cv2.putText(
            frame, label, (x + 3, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
            thick, cv2.LINE_AA,
        )


def no_signal_image(source: str, reason: str) -> NDArray[np.uint8]:
    w, h = NO_SIGNAL_SIZE
    img = np.full((h, w, 3), 40, dtype=np.uint8)
    cv2.putText(img, "NO SIGNAL", (w // 2 - 150, h // 2 - 10), cv2.FONT_HERSHEY_SIMPLEX, 1.6,
                (230, 230, 230), 3, cv2.LINE_AA)
    lines = [redact_source(source)[:70], reason[:70], time.strftime("%H:%M:%S")]
    for i, line in enumerate(lines):
        cv2.putText(img, line, (20, h // 2 + 40 + 26 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (180, 180, 180), 1, cv2.LINE_AA)
    return img


class Capture:
    """Reads ``config.source`` in a thread; encodes and delivers packets from another."""

    def __init__(
        self,
        config: CameraConfig,
        deliver: Callable[[Packet], Any],
        overlay: Callable[[], Sequence[FaceView]],
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.spec = SourceSpec.parse(config.source)
        self._deliver = deliver
        self._overlay = overlay
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
        }

    # -- reader thread ---------------------------------------------------------------------

    def _read_loop(self) -> None:
        backoff = self.config.reconnect_min_s
        shown = redact_source(self.config.source)
        while not self._stop.is_set():
            cap = _open(self.spec, self.config.read_timeout_s)
            if cap is None:
                self._set_lost(f"cannot open source; retrying in {backoff:.1f}s")
                log.warning("camera %s: cannot open; retrying in %.1fs", shown, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.config.reconnect_max_s)
                continue
            log.info("camera %s: opened", shown)
            try:
                got_any = self._read_from(cap)
            finally:
                cap.release()
            if self._stop.is_set():
                break
            if self.spec.kind == "file" and got_any:
                continue  # end of file: play it again from the start
            self.reconnects += 1
            self._set_lost(f"source lost; reconnecting in {backoff:.1f}s")
            log.warning("camera %s: lost; reconnecting in %.1fs", shown, backoff)
            self._stop.wait(backoff)
            if got_any:
                backoff = self.config.reconnect_min_s
            else:
                backoff = min(backoff * 2, self.config.reconnect_max_s)

    def _read_from(self, cap: cv2.VideoCapture) -> bool:
        """Read until the source ends or fails; True if at least one frame came."""
        paced = self.spec.kind == "file"
        fps = cap.get(cv2.CAP_PROP_FPS) if paced else 0.0
        period = 1.0 / (fps if 1.0 <= fps <= 240.0 else DEFAULT_FPS)
        due = time.monotonic()
        position = 0
        got_any = False
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok or frame is None or frame.size == 0:
                return got_any
            got_any = True
            if paced:
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    if self._stop.wait(delay):
                        return got_any
                elif delay < -2 * period:
                    due = time.monotonic()  # fell behind (e.g. a pause): don't burst to catch up
            self._metrics.frames_captured.inc()
            with self._cond:
                self._frame = frame
                self._frame_seq += 1
                self._frame_at = time.monotonic()
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
                shown = clean.copy()
                annotate(shown, self._overlay())
                ok, jpeg = cv2.imencode(".jpg", shown, quality)
                self._metrics.stage_seconds.labels("encode").observe(time.perf_counter() - t0)
                if ok:
                    self._emit(clean, jpeg.tobytes(), frame_at, True, pos)
            elif (not connected or stale) and now - last_no_signal >= NO_SIGNAL_INTERVAL_S:
                last_no_signal = now
                why = reason if not connected else "no frames from the source"
                img = no_signal_image(self.config.source, why)
                ok, jpeg = cv2.imencode(".jpg", img, quality)
                if ok:
                    self._emit(None, jpeg.tobytes(), now, False, -1)

    def _emit(self, image: NDArray[np.uint8] | None, jpeg: bytes, at: float, signal: bool,
              position: int) -> None:
        self._seq += 1
        self._metrics.frames_encoded.inc()
        self._deliver(Packet(self._seq, at, image, jpeg, signal, position))
