#!/usr/bin/env python3
"""End-to-end live benchmark of facestream against its product targets.

Method: this script is the network camera, so the ground truth is exact.

* Program: person A ~6 s, empty ~2 s, person B ~6 s, empty ~2 s, stranger C ~6 s, empty ~2 s,
  repeated for ``--duration``, from the shared clips (read at run time). Frames are
  letterboxed to 640x480 and JPEG-encoded in memory beforehand. Face segments play (ping-pong)
  the first 80% of a clip; A and B are enrolled via ``POST /faces`` from the clip's *last*
  frame; C never is. "Empty" frames are the scene's colours without structure (checked to
  have no face: ``POST /process-frame`` must answer 422).
* Camera: ``multipart/x-mixed-replace`` MJPEG at 25 fps on 127.0.0.1 (monotonic-clock paced,
  idle empty frames before and after the program). OpenCV's FFMPEG backend is checked to read
  it, then ``python -m facestream --source <url>`` starts as a subprocess with a fresh data dir
  and ``DEEPFACE_HOME``. The send time of each segment's first frame is recorded.
* Load and scoring: ``--viewers`` clients read ``GET /streaming`` (parts split by
  Content-Length); one poller reads ``GET /hash`` every 20 ms. Reported: per-viewer fps over
  the face segments; the share of reads showing the right identity per person, skipping each
  segment's first 0.3 s (A/B: known with the enrolled hash; C: a face, not known); delay from a
  segment's start to its first right read; delay from a face leaving to the first
  ``hash: null``; reads of C as known; /hash latency; the server's own frame rates and stage
  means from ``GET /metrics`` (deltas over the run). ``--runs N`` reports medians.

``--canvas 1920x1080 --picture 240`` puts each 640x480 picture, scaled to 240 px high, in the
middle of a dark 1920x1080 frame: a far camera's small faces (about a quarter of their size
at 640x480) in a frame as large as a door camera's.

``--face-px N`` instead scales each clip so that its face is about N px wide in the frame
(YuNet's median width over a few of the clip's frames, measured once at setup; ``--canvas``
defaults to 640x480 then); "empty" frames are then the same spot of the canvas without the
person. The faces' widths in the frames sent (min/median/max per person) are reported under
``faces`` in the results, with the share of them YuNet finds there at full resolution.

``--mono`` makes the camera an IR camera at night: every frame it sends is grey,
contrast-equalised (CLAHE) and back to 3 identical channels, while A and B are still enrolled
from the clips' colour frames.

Reported besides: the server's CPU use in cores (user + system time of the server and its
worker processes, from /proc, over the program), and the gauge ``facestream_sweep_seconds``
(how long the server's latest full-resolution sweep of a frame took), sampled from
``GET /metrics`` every second during the program; null when the server does not export it.
Frames are JPEG-encoded once at setup, at most ``FRAMES_BUDGET`` bytes of them (a 4K frame
with a small picture in it is about 130 KB; a clip repeats fewer distinct frames beyond that).

``--pythonpath DIR`` serves the code in DIR (a git worktree of another commit) instead.

``--load N`` runs N CPU-bound processes (busy loops) beside the server for the whole run, as a
loaded machine would.

``--baseline`` instead times the original synchronous design in-process: one loop doing read
(decode the frame on air) -> detect -> embed -> draw + encode with
``facestream.recognition.Recognizer``, and reports the fps it sustains.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from aiohttp import ClientError, ClientSession, ClientTimeout, FormData, web

REPO = Path(__file__).resolve().parents[1]
VIDEOS = REPO.parent / "shared" / "data" / "video"
CLIPS = {"A": "sadtalker/WDA_AlexandriaOcasioCortez_000.mp4",
         "B": "video_retalking/2.mp4", "C": "liveportrait/d12.mp4"}
ENROLLED = ("A", "B")
FPS = 25
SIZE = (640, 480)
BOUNDARY = "camframe"
WARMUP_S = 0.3  # identity reads in a segment's first 0.3 s are not scored
#: Idle frames after the program, so the last face's departure (and its visit's end, after
#: presence.depart_after_s, 3 s) is measured.
TAIL_S = 4.5
#: The canvas around a picture: dark, not black (a night scene, not a letterbox).
CANVAS_GREY = 24
#: At most this many bytes of distinct JPEG frames are kept (4K frames are large).
FRAMES_BUDGET: Final = 384 << 20
#: Clip frames whose face is measured with YuNet, evenly spaced over what is played.
MEASURED_FRAMES = 9
SWEEP_PERIOD_S = 1.0

Read = tuple[float, float, str | None, bool]  # monotonic time answered, latency, hash, known


@dataclass
class Segment:
    label: str  # "A", "B", "C"; "" for no face
    first: int  # index of its first frame in the program
    start: float = 0.0  # monotonic send time of that frame
    end: float = 0.0


Box = tuple[int, int, int, int]  # x, y, w, h


@dataclass(frozen=True)
class Look:
    """How the camera shows the clips."""

    canvas: tuple[int, int] | None = None  # frame (w, h); None: SIZE, clips letterboxed
    picture: int = 240  # with canvas: the letterboxed 640x480 picture's height in it
    face_px: int = 0  # instead of picture: the clip scaled so its face is this wide
    mono: bool = False  # IR-like: grey, contrast-equalised, 3 identical channels


@dataclass
class Program:
    frames: list[bytes]
    segments: list[Segment]
    empties: list[bytes]
    enroll: dict[str, bytes]
    #: per person: the face's width in the clip and in the frames sent, and whether YuNet
    #: finds it there at full resolution
    faces: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per person: distinct frames a segment shows; and all of them together, in MB
    distinct: dict[str, int] = field(default_factory=dict)
    frames_mb: float = 0.0


def letterbox(img: np.ndarray) -> np.ndarray:
    (w, h), (ih, iw) = SIZE, img.shape[:2]
    s = min(w / iw, h / ih)
    small = cv2.resize(img, (round(iw * s), round(ih * s)), interpolation=cv2.INTER_AREA)
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def jpeg(img: np.ndarray, quality: int = 85) -> bytes:
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def on_canvas(pic: np.ndarray, canvas: tuple[int, int]) -> tuple[np.ndarray, Box]:
    """``pic`` in the middle of a dark frame of size ``canvas`` (w, h), cropped to it if it is
    larger; and where it is."""
    (cw, ch), (h, w) = canvas, pic.shape[:2]
    sy, sx = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
    pic = pic[sy:sy + ch, sx:sx + cw]
    (h, w), out = pic.shape[:2], np.full((ch, cw, 3), CANVAS_GREY, np.uint8)
    y, x = (ch - h) // 2, (cw - w) // 2
    out[y:y + h, x:x + w] = pic
    return out, (x, y, w, h)


def resized(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def infrared(bgr: np.ndarray) -> np.ndarray:
    """An IR camera's picture at night: grey, contrast equalised locally (CLAHE; a global
    histogram would be ruled by the dark canvas), as 3 identical channels."""
    grey = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(
        cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def clip_scale(look: Look, shape: tuple[int, ...], face_w: float) -> float:
    """Clip pixels -> pixels of the frames sent, for a clip of ``shape`` whose face is
    ``face_w`` wide."""
    if look.face_px:
        return look.face_px / face_w
    ih, iw = shape[:2]
    s = min(SIZE[0] / iw, SIZE[1] / ih)  # letterbox
    return s * look.picture / SIZE[1] if look.canvas else s


def camera_frame(img: np.ndarray, look: Look, scale: float) -> tuple[np.ndarray, Box]:
    """What the camera sends for clip frame ``img`` (``scale``: ``clip_scale``), and where the
    picture is in it."""
    if look.face_px:
        frame, box = on_canvas(resized(img, scale), look.canvas or SIZE)
    elif look.canvas is None:
        frame, box = letterbox(img), (0, 0, *SIZE)
    else:  # the 640x480 picture scaled to look.picture high
        boxed = letterbox(img)
        small = cv2.resize(boxed, (round(SIZE[0] * look.picture / SIZE[1]), look.picture),
                           interpolation=cv2.INTER_AREA)
        frame, box = on_canvas(small, look.canvas)
    return (infrared(frame) if look.mono else frame), box


def empty_frame(img: np.ndarray, look: Look, scale: float) -> bytes:
    """The scene's colours without structure: the whole frame, or with ``face_px`` the
    picture's spot of the canvas (the person has left, the far scene stays)."""
    tiny = cv2.resize(letterbox(img), (4, 3), interpolation=cv2.INTER_AREA)
    if look.face_px:
        h, w = resized(img, scale).shape[:2]
        frame = on_canvas(cv2.resize(tiny, (w, h), interpolation=cv2.INTER_CUBIC),
                          look.canvas or SIZE)[0]
    else:
        frame = cv2.resize(tiny, look.canvas or SIZE, interpolation=cv2.INTER_CUBIC)
    return jpeg(infrared(frame) if look.mono else frame)


def yunet(score: float) -> Any:
    """OpenCV's YuNet from the weight file facestream uses (``weights.YUNET_FILE``), provisioned
    into a temporary folder when the weights folder does not have it."""
    from facestream import weights

    if weights.path(weights.YUNET_FILE).is_file():
        return cv2.FaceDetectorYN.create(str(weights.path(weights.YUNET_FILE)), "", (320, 320),
                                         score, 0.3, 5000)
    saved = os.environ.get("DEEPFACE_HOME")
    with tempfile.TemporaryDirectory(prefix="facestream-bench-") as home:
        os.environ["DEEPFACE_HOME"] = home
        try:
            weights.provision()
            return yunet(score)  # the network is read in full when created
        finally:
            if saved is None:
                del os.environ["DEEPFACE_HOME"]
            else:
                os.environ["DEEPFACE_HOME"] = saved


def face_width(detector: Any, img: np.ndarray) -> float | None:
    """YuNet's width of the widest face in ``img``, or None."""
    h, w = img.shape[:2]
    detector.setInputSize((w, h))
    rows = detector.detect(img)[1]
    return None if rows is None else float(rows[:, 2].max())


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "median": None, "max": None}
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1),
            "max": round(max(values), 1)}


def read_clip(path: Path) -> list[np.ndarray]:
    cap, raw = cv2.VideoCapture(str(path)), []
    while (got := cap.read())[0]:
        raw.append(got[1])
    cap.release()
    if len(raw) < 10:
        raise RuntimeError(f"cannot read {path}")
    return raw


def build_program(duration: float, seg_s: float, gap_s: float, look: Look = Look()) -> Program:
    from facestream.config import RecognitionConfig

    detector = yunet(RecognitionConfig().min_face_score)
    cycle: list[tuple[str, list[bytes]]] = []
    empties, enroll, faces, distinct = [], {}, {}, {}
    seg_n, total_bytes = round(seg_s * FPS), 0
    for label, rel in CLIPS.items():
        raw = read_clip(VIDEOS / rel)
        # A segment plays (ping-pong) the first 80% of the clip from its start, so it shows
        # its first min(80%, segment) frames; fewer when the frames would exceed the budget.
        shown = raw[: min(len(raw) - max(1, len(raw) // 5), seg_n)]
        measured = [shown[round(i)] for i in np.linspace(0, len(shown) - 1, MEASURED_FRAMES)]
        clip_w = [w for f in measured if (w := face_width(detector, f)) is not None]
        if look.face_px and not clip_w:
            raise RuntimeError(f"YuNet finds no face in {rel}: cannot scale it to a face width")
        scale = clip_scale(look, raw[0].shape, statistics.median(clip_w) if clip_w else 1.0)
        first = jpeg(camera_frame(shown[0], look, scale)[0])
        share = FRAMES_BUDGET // len(CLIPS)
        shown = shown[: max(FPS, min(len(shown), share // len(first)))]
        played = [jpeg(camera_frame(f, look, scale)[0]) for f in shown]
        distinct[label], total_bytes = len(played), total_bytes + sum(map(len, played))
        found = []
        for f in measured:  # the frames sent, decoded, around the picture
            frame, (x, y, w, h) = camera_frame(f, look, scale)
            frame = cv2.imdecode(np.frombuffer(jpeg(frame), np.uint8), cv2.IMREAD_COLOR)
            m = max(32, w // 4)
            crop = frame[max(0, y - m):y + h + m, max(0, x - m):x + w + m]
            if (wf := face_width(detector, crop)) is not None:
                found.append(wf)
        faces[label] = {"clip_px": spread(clip_w)["median"], "scale": round(scale, 4),
                        "px": spread([w * scale for w in clip_w]),
                        "found_full_res": len(found) / len(measured),
                        "found_px": spread(found)}
        order = played + played[-2:0:-1]  # ping-pong: no jump cut inside a segment
        cycle.append((label, [order[i % len(order)] for i in range(seg_n)]))
        empties.append(empty_frame(raw[0], look, scale))
        cycle.append(("", [empties[-1]] * round(gap_s * FPS)))
        if label in ENROLLED:
            enroll[label] = jpeg(raw[-1], 95)  # a part of the clip that is never played
    total = round(duration * FPS)
    frames: list[bytes] = []
    segments: list[Segment] = []
    for label, seg in itertools.cycle(cycle):
        if len(frames) >= total:
            break
        segments.append(Segment(label, len(frames)))
        frames.extend(seg[: total - len(frames)])
    return Program(frames, segments, empties, enroll, faces, distinct, total_bytes / 2**20)


class Camera:
    """A 25 fps MJPEG camera: a clock puts a frame on air; every client is sent the newest."""

    def __init__(self, idle: bytes) -> None:
        self.idle, self.jpeg, self.seq, self.closed = idle, idle, 0, False
        self._new, self._done = asyncio.Event(), asyncio.Event()
        self._program: list[bytes] | None = None
        self.sent: list[float] = []
        self.late: list[float] = []

    async def handler(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": f"multipart/x-mixed-replace;boundary={BOUNDARY}"})
        await resp.prepare(request)
        seen = -1
        with contextlib.suppress(ConnectionResetError):
            while not self.closed:
                if self.seq == seen:
                    await self._new.wait()
                    continue
                seen, data = self.seq, self.jpeg
                head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n").encode()
                await resp.write(head + data + b"\r\n")
        return resp

    async def clock(self) -> None:
        t0 = time.monotonic()
        for i in itertools.count(1):
            await asyncio.sleep(max(0.0, t0 + i / FPS - time.monotonic()))
            data = self.idle
            if self._program is not None:
                data = self._program[len(self.sent)]
                self.sent.append(time.monotonic())
                self.late.append(self.sent[-1] - t0 - i / FPS)
                if len(self.sent) == len(self._program):
                    self._program = None
                    self._done.set()
            self.jpeg, self.seq = data, self.seq + 1
            self._new.set()
            self._new = asyncio.Event()

    async def play(self, program: list[bytes]) -> list[float]:
        """Put ``program`` on air; return each frame's send time once it has all been sent."""
        self.sent, self.late, self._program = [], [], program
        self._done.clear()
        await self._done.wait()
        return self.sent

    def close(self) -> None:
        self.closed = True
        self._new.set()


def probe_camera(url: str) -> dict[str, Any]:
    """Can OpenCV's FFMPEG backend (what facestream uses) read our MJPEG endpoint?"""
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000,
                                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000])
    shapes: list[list[int]] = []
    t0 = time.monotonic()
    while cap.isOpened() and len(shapes) < 25 and (got := cap.read())[0]:
        shapes.append(list(got[1].shape))
    cap.release()
    return {"frames": len(shapes), "shape": shapes[-1] if shapes else None,
            "seconds": round(time.monotonic() - t0, 2)}


async def viewer(session: ClientSession, url: str, arrivals: list[float]) -> None:
    """Read MJPEG parts by Content-Length, recording each part's arrival time."""
    async with session.get(url, timeout=ClientTimeout(total=None, sock_read=15)) as resp:
        while line := await resp.content.readline():
            if not line.startswith(b"--"):
                continue
            length = -1
            while (line := await resp.content.readline()).strip():
                key, _, value = line.decode("latin-1").partition(":")
                length = int(value) if key.strip().lower() == "content-length" else length
            if length < 0:
                raise ValueError("MJPEG part without Content-Length")
            if (await resp.content.readexactly(length))[:2] == b"\xff\xd8":
                arrivals.append(time.monotonic())


async def listener(session: ClientSession, url: str, events: list[dict[str, Any]]) -> None:
    """Record the websocket's visit events, with the monotonic time each arrived."""
    async with session.ws_connect(url) as ws:
        async for msg in ws:
            data = msg.json()
            if data.get("type") == "event":
                events.append({**data, "received": time.monotonic()})


def score_visits(segments: list[Segment], events: list[dict[str, Any]],
                 hashes: dict[str, str], wall_offset: float) -> dict[str, float]:
    """Each appearance of a person should be exactly one visit: one ``arrived`` dated within
    it and one ``left`` dated at its end; any other event is an extra."""
    def person(label: str, ev: dict[str, Any]) -> bool:
        return ev["hash"] == hashes[label] if label in hashes else not ev["known"]

    used: set[int] = set()
    exact = 0
    appearances = [s for s in segments if s.label]
    for s in appearances:
        start, end = s.start + wall_offset, s.end + wall_offset
        arrived = [i for i, e in enumerate(events) if e["event"] == "arrived" and person(
            s.label, e) and start - 0.2 <= e["at"] <= end]
        left = [i for i, e in enumerate(events) if e["event"] == "left" and person(
            s.label, e) and end - 1.0 <= e["at"] <= end + 0.5]
        exact += len(arrived) == 1 and len(left) == 1
        used.update(arrived + left)
    return {"visits_exact_share": exact / len(appearances) if appearances else math.nan,
            "visit_events_extra": float(len(events) - len(used)),
            "visit_events": float(len(events))}


async def poller(session: ClientSession, url: str, period: float, reads: list[Read],
                 errors: list[str]) -> None:
    due = time.monotonic()
    while True:
        t0 = time.perf_counter()
        try:
            async with session.get(url, timeout=ClientTimeout(total=2)) as resp:
                doc = await resp.json()
            reads.append((time.monotonic(), time.perf_counter() - t0, doc["hash"],
                          bool(doc["known"])))
        except (TimeoutError, OSError, ValueError, KeyError) as exc:
            errors.append(repr(exc))
        due = max(due + period, time.monotonic())
        await asyncio.sleep(due - time.monotonic())


METRIC_RE = re.compile(r'^(facestream_\w+?(?:_total|_sum|_count))(?:\{stage="(\w+)"\})? (\S+)$',
                       re.MULTILINE)


async def scrape(session: ClientSession, base: str) -> dict[str, float]:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    return {f"{m[1]}:{m[2]}" if m[2] else m[1]: float(m[3]) for m in METRIC_RE.finditer(text)}


def server_rates(before: dict[str, float], after: dict[str, float], secs: float
                 ) -> dict[str, float]:
    """Frame rates and mean stage times from two /metrics scrapes ``secs`` apart."""
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)  # a histogram child may be new

    out = {f"server_{n}_fps": delta(f"facestream_frames_{n}_total") / secs
           for n in ("captured", "encoded", "processed")}
    for key in after:
        stage = key.partition("facestream_stage_seconds_sum:")[2]
        if stage and (n := delta(f"facestream_stage_seconds_count:{stage}")):
            out[f"stage_{stage}_ms_mean"] = delta(key) / n * 1000
    return out


def analyze(segments: list[Segment], reads: list[Read], arrivals: list[list[float]],
            hashes: dict[str, str]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Flat scores, plus per face segment: start (s into the run), reads right, delays.

    ``steady_identity_X``: the share of right reads from a segment's first right one on (a
    segment never right counts all its scored reads wrong), apart from how long the first
    took; ``name_s_*``: delays to the first right name in A's and B's segments;
    ``stranger_named_share``: the share of reads in C's segments naming somebody."""
    def right(label: str, h: str | None, known: bool) -> bool:
        return known and h == hashes[label] if label in hashes else h is not None and not known

    good = {k: [0, 0] for k in CLIPS}
    steady = {k: [0, 0] for k in CLIPS}
    appear, leave, stranger, wrong, ghosts = [], [], 0, 0, 0
    named, stranger_reads = [], 0
    details: list[dict[str, Any]] = []
    for s, nxt in zip(segments, [*segments[1:], None]):
        during = [r for r in reads if s.start <= r[0] < s.end]
        if not s.label:
            ghosts += sum(r[2] is not None for r in during if r[0] >= s.start + 0.5)
            continue
        scored = [right(s.label, h, k) for t, _, h, k in during if t >= s.start + WARMUP_S]
        good[s.label] = [good[s.label][0] + sum(scored), good[s.label][1] + len(scored)]
        if s.label in hashes:
            wrong += sum(k and h != hashes[s.label] for _, _, h, k in during)
        else:
            stranger += sum(k for _, _, _, k in during)
            stranger_reads += len(during)
        first = next((r[0] for r in during if right(s.label, *r[2:])), math.inf)
        appear.append(first - s.start)
        if s.label in hashes:
            named.append(appear[-1])
        kept = ([right(s.label, h, k) for t, _, h, k in during
                 if t >= max(first, s.start + WARMUP_S)] if first < math.inf else scored)
        steady[s.label] = [steady[s.label][0] + (sum(kept) if first < math.inf else 0),
                           steady[s.label][1] + len(kept)]
        details.append({"label": s.label, "start_s": s.start - segments[0].start,
                        "scored_right": sum(scored), "scored": len(scored),
                        "appear_s": appear[-1]})
        if s.label not in hashes:  # whom a stranger was taken for, in how many reads
            who = {h: label for label, h in hashes.items()}
            named_as = [who.get(h, "other") for _, _, h, k in during if k]
            details[-1]["named_as"] = {n: named_as.count(n) for n in sorted(set(named_as))}
        if nxt is not None and not nxt.label:
            gone = next((r[0] for r in reads if nxt.start <= r[0] < nxt.end and r[2] is None),
                        math.inf)
            leave.append(details[-1].setdefault("leave_s", gone - s.end))
    out = {f"right_identity_{k}": ok / n if n else math.nan for k, (ok, n) in good.items()}
    out |= {f"steady_identity_{k}": ok / n if n else math.nan for k, (ok, n) in steady.items()}
    out |= {"name_s_median": statistics.median(named) if named else math.nan,
            "name_s_max": max(named, default=math.nan),
            "stranger_named_share": stranger / stranger_reads if stranger_reads else math.nan}
    out |= {"appear_s_max": max(appear), "appear_s_median": statistics.median(appear),
            "leave_s_max": max(leave, default=math.nan),
            "leave_s_median": statistics.median(leave) if leave else math.nan,
            "stranger_reads_as_enrolled": stranger, "enrolled_read_as_other": wrong,
            "empty_nonnull_reads_after_0.5s": ghosts}
    windows = [(s.start, s.end) for s in segments if s.label]
    fps, worst = [], math.inf
    for times in map(np.asarray, arrivals):
        fps.append(sum(((times >= a) & (times < b)).sum() for a, b in windows)
                   / sum(b - a for a, b in windows))
        for a, b in windows:  # the worst whole second inside a face segment
            worst = min([worst, *(((times >= a + k) & (times < a + k + 1)).sum()
                                  for k in range(int(b - a)))])
    lat = [r[1] * 1000 for r in reads]
    return out | {"viewer_fps_min": min(fps), "viewer_fps_median": statistics.median(fps),
                  "viewer_worst_1s_frames": float(worst),
                  "hash_p50_ms": float(np.percentile(lat, 50)),
                  "hash_p99_ms": float(np.percentile(lat, 99)), "hash_max_ms": max(lat),
                  "hash_reads": len(lat)}, details


@contextlib.asynccontextmanager
async def camera_server(idle: bytes) -> AsyncIterator[tuple[Camera, str]]:
    camera, app = Camera(idle), web.Application()
    app.router.add_get("/cam.mjpg", camera.handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    clock = asyncio.create_task(camera.clock())
    try:
        yield camera, f"http://127.0.0.1:{sock.getsockname()[1]}/cam.mjpg"
    finally:
        camera.close()
        clock.cancel()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serving(cmd: list[str], base: str, log_path: Path, timeout: float, cwd: Path,
                  env: dict[str, str], camera_live: bool = True
                  ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Run the facestream server ``cmd`` (answering at ``base``) in a session of its own;
    yield its process once /healthz answers, and says its (first) camera is live when
    ``camera_live``. Always terminated, then killed with its workers, on exit."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        async with ClientSession(timeout=ClientTimeout(total=2)) as session:
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"facestream at {base} did not become ready "
                                       f"(exit code {proc.poll()}):\n{tail}")
                with contextlib.suppress(OSError, asyncio.TimeoutError, ValueError):
                    async with session.get(base + "/healthz") as r:
                        if r.status == 200 and (not camera_live
                                                or (await r.json())["camera"]["signal"]):
                            break
                await asyncio.sleep(0.25)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, 20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its worker processes too, if left over
        await asyncio.to_thread(proc.wait)


@contextlib.asynccontextmanager
async def facestream_process(source: str | None, log_path: Path, timeout: float,
                             extra: tuple[str, ...] = (), code: Path | None = None
                             ) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m facestream`` on a free port with a fresh data dir; yields its base URL and
    its process once /healthz reports the (first) camera live. ``source`` None: the cameras
    of the config given in ``extra``. ``code``: serve the package in that source tree (a git
    worktree) instead of this one; it is the server's working directory too, because
    ``python -m`` puts that before ``PYTHONPATH``."""
    with tempfile.TemporaryDirectory(prefix="facestream-bench-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "facestream",
               *(("--source", source) if source is not None else ()), "--port", str(port),
               "--data-dir", f"{tmp}/data", "--no-auth", *extra]
        env = {**os.environ, "DEEPFACE_HOME": tmp}
        if code is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(code), *filter(None, [os.environ.get("PYTHONPATH")])])
        async with serving(cmd, base, log_path, timeout, code or REPO, env) as proc:
            yield base, proc


@contextlib.asynccontextmanager
async def facestream_server(source: str | None, log_path: Path, timeout: float,
                            extra: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """``facestream_process``, yielding only its base URL."""
    async with facestream_process(source, log_path, timeout, extra) as (base, _):
        yield base


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its descendants (the
    worker pool), from /proc: each live one's own time and that of the children it has
    reaped, so a worker that is replaced between two samples is still counted."""
    ticks, todo, seen = 0, [pid], set()
    while todo:
        if (p := todo.pop()) in seen:
            continue
        seen.add(p)
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            # utime stime cutime cstime: fields 14-17, counted after the ")" of the name
            ticks += sum(map(int, stat[stat.rindex(")") + 2:].split()[11:15]))
            for children in Path(f"/proc/{p}/task").glob("*/children"):
                todo.extend(map(int, children.read_text().split()))
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile; its parent's reaped-children time has it
    return ticks / os.sysconf("SC_CLK_TCK")


SWEEP_RE = re.compile(r"^facestream_sweep_seconds(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


async def sweep_sampler(session: ClientSession, base: str, samples: list[float]) -> None:
    """Every SWEEP_PERIOD_S, the gauge ``facestream_sweep_seconds`` (per camera: how long the
    latest full-resolution sweep of a frame took) from /metrics; none from a server without
    it. 0 (never swept yet) is not a sample."""
    while True:
        with contextlib.suppress(TimeoutError, ClientError, ValueError):
            async with session.get(base + "/metrics", timeout=ClientTimeout(total=2)) as r:
                text = await r.text()
            samples.extend(v for m in SWEEP_RE.finditer(text)
                           if math.isfinite(v := float(m[1])) and v > 0)
        await asyncio.sleep(SWEEP_PERIOD_S)


async def post_image(session: ClientSession, url: str, field: str, image: bytes,
                     **fields: str) -> tuple[int, Any]:
    form = FormData(fields)
    form.add_field(field, image, filename=f"{field}.jpg", content_type="image/jpeg")
    async with session.post(url, data=form) as r:
        return r.status, await r.json()


async def enroll_program(session: ClientSession, base: str, prog: Program) -> dict[str, str]:
    """Enroll the program's known people through the API: label -> hash."""
    hashes: dict[str, str] = {}
    for label, image in prog.enroll.items():
        status, body = await post_image(session, base + "/faces", "image", image,
                                        name=f"person {label}")
        if status != 201:
            raise RuntimeError(f"enrolling {label}: HTTP {status} {body}")
        hashes[label] = body["hash"]
    return hashes


async def live_run(args: argparse.Namespace, prog: Program, run: int) -> dict[str, Any]:
    log_path = args.out.with_name(f"{args.out.stem}.server{run}.log")
    tasks: list[asyncio.Task[None]] = []
    reads: list[Read] = []
    errors: list[str] = []
    arrivals: list[list[float]] = [[] for _ in range(args.viewers)]
    events: list[dict[str, Any]] = []
    sweeps: list[float] = []
    async with camera_server(prog.empties[-1]) as (camera, cam_url):
        probe = await asyncio.to_thread(probe_camera, cam_url)
        if probe["frames"] == 0:
            raise RuntimeError(f"OpenCV's FFMPEG backend cannot read {cam_url}: {probe}")
        extra = ("--model", args.model) if args.model else ()
        async with facestream_process(cam_url, log_path, args.startup_timeout, extra,
                                      args.pythonpath) as (base, server), \
                ClientSession() as session:
            hashes = await enroll_program(session, base, prog)
            for image in prog.empties:  # ground truth: the server must find no face here
                status, _ = await post_image(session, base + "/process-frame", "frame", image)
                if status != 422:
                    raise RuntimeError(f"an 'empty' frame is not faceless: HTTP {status}")
            try:
                tasks = [asyncio.create_task(viewer(session, base + "/streaming", a))
                         for a in arrivals]
                tasks.append(asyncio.create_task(
                    poller(session, base + "/hash", args.poll_ms / 1000, reads, errors)))
                tasks.append(asyncio.create_task(listener(session, base + "/ws", events)))
                await asyncio.sleep(1.5)  # viewers connected, identity back to null
                load0, cpu0, t0 = os.getloadavg()[0], time.process_time(), time.monotonic()
                before = await scrape(session, base)
                tasks.append(asyncio.create_task(sweep_sampler(session, base, sweeps)))
                server_cpu0, play0 = tree_cpu_seconds(server.pid), time.monotonic()
                sent = await camera.play(prog.frames)
                server_cpu = ((tree_cpu_seconds(server.pid) - server_cpu0)
                              / (time.monotonic() - play0))
                tasks[-1].cancel()  # the sweeps of the program only
                await asyncio.sleep(TAIL_S)
                after = await scrape(session, base)
                secs, cpu = time.monotonic() - t0, time.process_time() - cpu0
            finally:
                for t in tasks:
                    t.cancel()
                ended = await asyncio.gather(*tasks, return_exceptions=True)
    segs = prog.segments
    for s, nxt in zip(segs, [*segs[1:], None]):
        s.start = sent[s.first]
        s.end = sent[nxt.first] if nxt else sent[-1] + 1 / FPS
    segs = [*segs, Segment("", len(sent), segs[-1].end, segs[-1].end + TAIL_S)]
    summary, details = analyze(segs, reads, arrivals, hashes)
    summary |= server_rates(before, after, secs)
    program = [s for s in segs if s.start >= segs[0].start]
    summary |= score_visits(program, [e for e in events if e["received"] >= segs[0].start],
                            hashes, time.time() - time.monotonic())
    summary |= {"camera_fps": (len(sent) - 1) / (sent[-1] - sent[0]),
                "camera_late_ms_max": 1000 * max(camera.late), "bench_cpu_share": cpu / secs,
                "server_cpu_cores": server_cpu,
                "sweep_s_median": statistics.median(sweeps) if sweeps else math.nan,
                "sweep_s_max": max(sweeps, default=math.nan), "sweep_samples": len(sweeps)}
    return {"summary": summary, "ffmpeg_probe": probe, "camera_url": cam_url,
            "enrolled": hashes, "hash_errors": errors[:20],
            "viewer_errors": [repr(e) for e in ended if not isinstance(e, asyncio.CancelledError)],
            "loadavg_1m": [load0, os.getloadavg()[0]], "segments": details,
            "metrics_end": after, "server_log": str(log_path)}


async def live_runs(args: argparse.Namespace, prog: Program) -> list[dict[str, Any]]:
    """Each run bounded in time; SIGTERM/SIGINT cancel it, so its cleanup still runs."""
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    runs = []
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    try:
        for i in range(args.runs):
            async with asyncio.timeout(args.startup_timeout + args.duration + 120):
                runs.append(await live_run(args, prog, i))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    return runs


def baseline(prog: Program, duration: float) -> dict[str, Any]:
    """The original synchronous loop, in-process: read -> detect -> embed -> encode."""
    from facestream import recognition, weights

    recognition.configure_environment()
    weights.provision()
    rec = recognition.Recognizer("SFace")
    stages: dict[str, list[float]] = {"read": [], "detect": [], "embed": [], "encode": []}
    faces, face_s, t0 = 0, 0.0, time.monotonic()
    while (now := time.monotonic()) - t0 < duration:
        a = time.perf_counter()
        data = prog.frames[int((now - t0) * FPS) % len(prog.frames)]  # the frame on air now
        frame = np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)
        b = time.perf_counter()
        result = rec.analyze_frame(frame, [])
        c = time.perf_counter()
        for x, y, w, h in (f.box for f in result.faces):
            cv2.rectangle(frame, (x, y), (x + w, y + h), (80, 200, 60), 2)
        jpeg(frame, 80)
        for key, value in zip(stages, (b - a, result.detect_s, result.embed_s,
                                       time.perf_counter() - c)):
            stages[key].append(value)
        if result.faces:
            faces, face_s = faces + 1, face_s + time.perf_counter() - a
    n = len(stages["read"])
    return {"fps": n / (time.monotonic() - t0), "fps_with_face": faces / face_s, "frames": n,
            "frames_with_face": faces,
            **{f"{k}_ms_mean": 1000 * statistics.fmean(v) for k, v in stages.items()}}


def middle(values: list[float]) -> float:
    """The median of the runs that measured something (NaN: nothing measured)."""
    kept = [float(v) for v in values if not math.isnan(v)]
    return float(statistics.median(kept)) if kept else math.nan


TARGETS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "viewer_fps_min": (">= 24", lambda v: v >= 24),
    "right_identity_A": (">= 0.99", lambda v: v >= 0.99),
    "right_identity_B": (">= 0.99", lambda v: v >= 0.99),
    "right_identity_C": (">= 0.99", lambda v: v >= 0.99),
    "appear_s_max": ("<= 0.3", lambda v: v <= 0.3),
    "leave_s_max": ("<= 0.5", lambda v: v <= 0.5),
    "stranger_reads_as_enrolled": ("== 0", lambda v: v == 0),
    "visits_exact_share": ("== 1", lambda v: v == 1),
    "visit_events_extra": ("== 0", lambda v: v == 0),
    "hash_p99_ms": ("< 20", lambda v: v < 20),
}


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="program length, seconds")
    p.add_argument("--viewers", type=int, default=10)
    p.add_argument("--runs", type=int, default=1, help="fresh server per run; medians reported")
    p.add_argument("--segment-s", type=float, default=6.0)
    p.add_argument("--gap-s", type=float, default=2.0)
    p.add_argument("--poll-ms", type=float, default=20.0)
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--model", help="serve with this model (default: the server's, SFace)")
    p.add_argument("--canvas", help="frame size WxH, e.g. 1920x1080 or 3840x2160 (with "
                   "--picture or --face-px)")
    p.add_argument("--picture", type=int, default=240,
                   help="with --canvas: the 640x480 picture's height in the frame")
    p.add_argument("--face-px", type=int, default=0, metavar="N",
                   help="instead of --picture: scale each clip so its face is about N px wide "
                   "(canvas 640x480 unless --canvas)")
    p.add_argument("--mono", action="store_true", help="IR-like frames: grey, contrast-"
                   "equalised, 3 identical channels (enrollment stays in colour)")
    p.add_argument("--pythonpath", type=Path, metavar="DIR",
                   help="serve the facestream package in DIR (e.g. a git worktree of an older "
                   "commit) instead of this tree's")
    p.add_argument("--load", type=int, default=0,
                   help="CPU-bound processes to run beside the server")
    p.add_argument("--baseline", action="store_true", help="time the synchronous design")
    p.add_argument("--out", type=Path, help="JSON results (default bench/results/live.json, "
                   "or baseline.json with --baseline)")
    args = p.parse_args()
    if args.pythonpath is not None:
        args.pythonpath = args.pythonpath.resolve()
        if not (args.pythonpath / "facestream" / "__init__.py").is_file():
            p.error(f"--pythonpath {args.pythonpath}: no facestream package in it")
    if args.face_px < 0 or (args.canvas and not re.fullmatch(r"\d+x\d+", args.canvas.lower())):
        p.error("--face-px takes a width in px, --canvas WxH such as 1920x1080")
    mode = "baseline" if args.baseline else "live"
    args.out = args.out or REPO / "bench/results" / f"{mode}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    w, h = map(int, args.canvas.lower().split("x")) if args.canvas else SIZE
    look = Look((w, h) if args.canvas else None, args.picture, args.face_px, args.mono)
    prog = build_program(args.duration, args.segment_s, args.gap_s, look)
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    code = args.pythonpath or REPO

    def git(*cmd: str) -> str:  # which code was measured
        return subprocess.run(["git", "-C", str(code), *cmd], check=False, capture_output=True,
                              text=True).stdout.strip()

    config |= {"clips": CLIPS, "frame_size": [w, h], "fps": FPS, "cpus": os.cpu_count(),
               "code": str(code), "commit": git("rev-parse", "HEAD"),
               "uncommitted": git("status", "--porcelain", "facestream").splitlines(),
               "faces": prog.faces, "distinct_frames": prog.distinct,
               "frames_mb": round(prog.frames_mb, 1)}
    for label, face in prog.faces.items():
        px = face["px"]
        print(f"face {label}: {px['min']}/{px['median']}/{px['max']} px (min/median/max), "
              f"found by YuNet at full resolution in {face['found_full_res']:.0%} of "
              f"{MEASURED_FRAMES} frames", file=sys.stderr)
    if args.baseline:
        with tempfile.TemporaryDirectory(prefix="facestream-bench-") as home:
            os.environ["DEEPFACE_HOME"] = home  # weights are provisioned into it
            result: dict[str, Any] = {"config": config, "baseline": baseline(prog, args.duration)}
        for k, v in result["baseline"].items():
            print(f"{k:<20} {v:10.2f}")
    else:
        try:
            runs = asyncio.run(live_runs(args, prog))
        except asyncio.CancelledError:
            print("interrupted: the server was stopped, nothing written", file=sys.stderr)
            return 130
        median = {k: middle([r["summary"][k] for r in runs]) for k in runs[0]["summary"]}
        checks = {k: bool(ok(median[k])) for k, (_, ok) in TARGETS.items()}
        result = {"config": config, "median": median, "targets": checks, "runs": runs}
        print(f"{'metric':<32} {'median':>10}  target")
        for k, v in median.items():
            target, _ = TARGETS.get(k, ("", None))
            verdict = ("PASS" if checks[k] else "FAIL") if k in checks else ""
            print(f"{k:<32} {v:10.3f}  {target:<8} {verdict}")
    # NaN/inf (nothing measured / never happened) become JSON null.
    text = json.dumps(json.loads(json.dumps(result), parse_constant=lambda _: None), indent=2)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
