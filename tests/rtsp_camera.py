"""An H.264 RTSP camera for the tests and benchmarks, on a real RTSP server.

``make_clip`` writes an H.264 MP4 at test time (from ../shared/data, never committed): the
real talking head of the SadTalker clip, scaled so its face is a given width, drifting across
a 1080p or 4K frame. ``rtsp_camera`` serves such a clip with GStreamer's RTSP server
(``tests/rtsp_server.py`` under Debian's ``/usr/bin/python3``, the packages ``install.sh``
installs) and stops it, its whole process group, however the block ends.

The clips are encoded with PyAV (a test dependency): its wheels bundle FFmpeg with libx264,
while OpenCV's wheel can only write MPEG-4 part 2, which no RTSP camera sends.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import cv2
import numpy as np
from numpy.typing import NDArray

#: The clip, and who it shows (its file name says so; see ../shared/data/README.md).
HEAD_CLIP: Final = (Path(os.environ.get("FACESTREAM_TEST_DATA",
                                        Path(__file__).resolve().parents[2] / "shared" / "data"))
                    / "video" / "sadtalker" / "WDA_AlexandriaOcasioCortez_000.mp4")
#: YuNet's box around the face is this share of the 512 px clip's width (255 px, frames 0-200).
HEAD_FACE_SHARE: Final = 0.5
#: Frames of HEAD_CLIP a clip may use: the later ones are left for enrolling the same person
#: from a frame the camera never shows (``enrollment_frame``).
PLAYED_FRAMES: Final = 150
FPS: Final = 25
#: Debian's Python, which has GObject introspection and GStreamer's RTSP server (the venv
#: has neither).
SYSTEM_PYTHON: Final = "/usr/bin/python3"
SERVER_SCRIPT: Final = Path(__file__).with_name("rtsp_server.py")


@dataclass(frozen=True)
class Clip:
    path: Path
    width: int
    height: int
    #: The face's width in the clip's pixels, about.
    face_px: int
    frames: int
    fps: int = FPS

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def head_frames(count: int = PLAYED_FRAMES) -> list[NDArray[np.uint8]]:
    """The first ``count`` frames of the talking head (512x512 BGR)."""
    cap = cv2.VideoCapture(str(HEAD_CLIP))
    frames: list[NDArray[np.uint8]] = []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    if len(frames) < count:
        raise FileNotFoundError(f"{HEAD_CLIP}: read {len(frames)} frames, wanted {count}")
    return frames


def enrollment_frame() -> NDArray[np.uint8]:
    """A close-up of the same person that no clip shows: frame 190 of the talking head."""
    cap = cv2.VideoCapture(str(HEAD_CLIP))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 190)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise FileNotFoundError(f"{HEAD_CLIP}: cannot read frame 190")
    return frame


def flag_backdrop(head: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """The flag left of the head (no face in it), mirrored side by side to fill the frame."""
    strip = head[:, :110]
    tiles = max(1, round(width / height * head.shape[0] / (2 * strip.shape[1])))
    wall = np.hstack([strip, strip[:, ::-1]] * tiles)
    return cv2.resize(wall, (width, height), interpolation=cv2.INTER_CUBIC)


def make_clip(path: Path, width: int, height: int, face_px: int, seconds: float = 5.0,
              crf: int = 23, preset: str = "superfast") -> Clip:
    """An H.264 MP4 of ``width`` x ``height`` at 25 fps: the talking head, scaled so its face
    is about ``face_px`` wide, drifting left to right and back over its own flag backdrop
    (mirrored to fill the frame, no face in it). ``seconds`` at most PLAYED_FRAMES / 25.

    libx264 at constant quality ``crf``, yuv420p, no B-frames, one slice per picture and one
    keyframe a second, as cameras send (a client that joins late waits at most a second for
    a picture). ``superfast`` is the fastest preset that keeps what a camera's encoder uses
    and costs a decoder most (CABAC, the deblocking filter); ``ultrafast`` drops both.
    """
    frames = round(seconds * FPS)
    if not 0 < frames <= PLAYED_FRAMES:
        raise ValueError(f"a clip is 1 to {PLAYED_FRAMES} frames, not {frames}")
    heads = head_frames(frames)
    # Even sizes and places: the head is pasted into the 4:2:0 planes directly.
    side = 2 * round(face_px / HEAD_FACE_SHARE / 2)  # the head clip is square
    if side > min(width, height) or width % 2 or height % 2:
        raise ValueError(f"a {face_px} px face needs a {side} px picture in {width}x{height}")
    # Composed in I420, which the encoder takes: converting every 4K frame from BGR would
    # cost more than encoding it.
    backdrop = cv2.cvtColor(flag_backdrop(heads[0], width, height), cv2.COLOR_BGR2YUV_I420)
    y = (height - side) // 4 * 2
    x0, x1 = width // 4 - side // 2, 3 * width // 4 - side // 2
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        # One slice per picture: PyAV's default (slice threads) cuts each picture in two,
        # and rtph264pay's config-interval=-1 then puts SPS and PPS before both halves of a
        # keyframe, which a decoder takes for two pictures (half of each concealed).
        stream.thread_type = "FRAME"
        stream.options = {"preset": preset, "crf": str(crf),
                          "x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0"}
        for i in range(frames):
            # Back and forth, so the loop's seam moves the head by one step only.
            t = 1 - abs(2 * i / frames - 1)
            x = 2 * round((x0 + (x1 - x0) * t) / 2)
            image = backdrop.copy()
            head = cv2.resize(heads[i], (side, side), interpolation=cv2.INTER_AREA)
            paste_i420(image, width, height, head, x, y)
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return Clip(path, width, height, face_px, frames)


def paste_i420(image: NDArray[np.uint8], width: int, height: int, bgr: NDArray[np.uint8],
               x: int, y: int) -> None:
    """Paste ``bgr`` (even sides) into ``image``, a ``width`` x ``height`` picture in I420,
    its top-left corner at the even (``x``, ``y``)."""
    h, w = bgr.shape[:2]
    part = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    for dst, src, sub in zip(i420_planes(image, width, height), i420_planes(part, w, h),
                             (1, 2, 2)):
        dst[y // sub:(y + h) // sub, x // sub:(x + w) // sub] = src


def i420_planes(image: NDArray[np.uint8], width: int, height: int
                ) -> tuple[NDArray[np.uint8], NDArray[np.uint8], NDArray[np.uint8]]:
    """Views of the Y, U and V planes of an I420 picture (as OpenCV and FFmpeg lay it out:
    the full-size Y, then U and V at half the width and height)."""
    flat = image.reshape(-1)
    luma, chroma = width * height, width * height // 4
    return (flat[:luma].reshape(height, width),
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2))


# -- the RTSP server -------------------------------------------------------------------------


@dataclass(frozen=True)
class RtspCamera:
    """A clip being served: ``url`` is what a camera config names."""

    url: str
    clip: Clip
    #: The server's standard error (GStreamer's warnings, a traceback).
    log: Path


#: Debian packages the server needs; install.sh installs them.
SERVER_PACKAGES: Final = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                          "gstreamer1.0-plugins-bad")


@contextlib.contextmanager
def rtsp_camera(clip: Clip, timeout_s: float = 20.0) -> Iterator[RtspCamera]:
    """Serve ``clip`` at ``rtsp://127.0.0.1:PORT/camera`` (a free port) until the block ends.

    Waits until the server accepts connections, at most ``timeout_s`` (the first start of
    GStreamer on a machine builds its plugin registry: a few seconds). Raises RuntimeError,
    with the server's log, if it exits or is not ready in time. However the block ends, the
    server's whole process group is stopped and reaped.
    """
    log = clip.path.with_name(clip.path.stem + "-rtsp-server.log")
    # Debian's Python, not the venv's: no PYTHONPATH or PYTHONHOME of the caller's.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with open(log, "wb") as err:
        try:
            proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(clip.path)], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        except FileNotFoundError as e:
            raise RuntimeError(f"cannot start the RTSP server: {e}; ./install.sh installs "
                               f"{SERVER_PACKAGES}") from e
    try:
        port = _wait_ready(proc, log, timeout_s)
        yield RtspCamera(f"rtsp://127.0.0.1:{port}/camera", clip, log)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> int:
    """The port from the server's ``ready PORT`` line, once a connection to it succeeds."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                raise RuntimeError(f"the RTSP server was not ready within {timeout_s:.0f}s"
                                   + _tail(log))
            chunk = os.read(proc.stdout.fileno(), 256)
            if not chunk:
                raise RuntimeError(
                    f"the RTSP server exited with status {proc.wait(5)} before it was ready "
                    f"(./install.sh installs {SERVER_PACKAGES})" + _tail(log))
            line += chunk
    word, _, port = line.decode().strip().partition(" ")
    if word != "ready" or not port.isdigit():
        raise RuntimeError(f"the RTSP server said {line!r}, not 'ready PORT'" + _tail(log))
    try:
        socket.create_connection(("127.0.0.1", int(port)),
                                 timeout=max(0.1, deadline - time.monotonic())).close()
    except OSError as e:
        raise RuntimeError(f"the RTSP server said it listens on {port}, but: {e}"
                           + _tail(log)) from e
    return int(port)


def _tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace").strip().splitlines()[-lines:]
    return ("; its log ends:\n" + "\n".join(text)) if text else "; its log is empty"


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``timeout_s``; reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    if proc.stdout is not None:
        proc.stdout.close()
