#!/usr/bin/env python3
"""What an H.264 RTSP camera at 1080p and at 4K costs facestream's capture: decoding and scaling.

Method: the tests' clips (tests/rtsp_camera.py: the shared talking head on a flag backdrop,
libx264 superfast at constant quality ``--crf``, one keyframe a second, 25 fps; a clip per
CRF given, as decoding costs more the more bits a camera sends), served by
the tests' RTSP server (GStreamer's, ``filesrc ! qtdemux ! h264parse ! rtph264pay``, in a
loop). Per resolution, ``--runs`` times each:

* **decode, live**: facestream's own ``capture._open`` (OpenCV, FFMPEG backend, its open and
  read timeouts, a one-frame buffer) reads the rtsp:// stream as the capture's reader thread
  does, for ``--seconds`` after ``--warmup`` seconds. CPU cores used = the process's CPU time
  (every thread: FFmpeg's decoder threads, the conversion to BGR, the read loop) / wall time,
  at the camera's 25 fps; CPU ms per frame = CPU time / frames read. Also the time from
  opening to the first frame.
* **decode, flat out**: the same clip read from its MP4 with the same backend as fast as it
  decodes: median wall ms per ``read()`` and CPU ms per frame (the cost of one frame without
  waiting for the camera).
* **scale**: ``capture.scale_to`` (``cv2.resize`` INTER_AREA), native size to a longest side
  of 640 (``recognition.detect_max_side``), 960 and 1280 (``camera.max_side``'s default):
  median wall ms per frame over the decoded frames, with OpenCV's default threads (the
  capture's encoder thread does not change them).

Every number is the median over the runs. The machine's other load shows in ``loadavg``.

    python bench/decode_cost.py [--runs 3] [--seconds 6] [--crf 23 17]

Prints a markdown table and writes bench/results/decode_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from facestream.capture import SourceSpec, _open, scale_to
from tests.rtsp_camera import Clip, make_clip, rtsp_camera

#: name: (width, height, face width in px), as in tests/test_rtsp.py.
CAMERAS: Final = {"1080p": (1920, 1080, 110), "4k": (3840, 2160, 200)}
SIDES: Final = (640, 960, 1280)
#: facestream's default camera.read_timeout_s: the open and read timeouts of _open.
TIMEOUT_S: Final = 5.0


def decode_live(url: str, warmup: float, seconds: float) -> dict[str, float]:
    """Read ``url`` as the capture's reader thread does; what it cost over ``seconds``."""
    t_open = time.perf_counter()
    cap = _open(SourceSpec.parse(url), TIMEOUT_S)
    if cap is None:
        raise RuntimeError(f"cannot open {url}")
    try:
        ok, frame = cap.read()
        if not ok:
            raise RuntimeError(f"no frame from {url}")
        first_frame_s = time.perf_counter() - t_open
        shape = frame.shape
        end_warmup = time.perf_counter() + warmup
        while time.perf_counter() < end_warmup:
            if not cap.read()[0]:
                raise RuntimeError(f"{url}: the stream ended during the warm-up")
        frames = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            if not cap.read()[0]:
                raise RuntimeError(f"{url}: the stream ended after {frames} frames")
            frames += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    finally:
        cap.release()
    return {"first_frame_s": first_frame_s, "fps": frames / wall, "cores": cpu / wall,
            "cpu_ms_per_frame": 1000 * cpu / frames, "width": shape[1], "height": shape[0]}


def decode_file(clip: Clip, keep_every: int = 10
                ) -> tuple[dict[str, float], list[NDArray[np.uint8]]]:
    """Decode the clip's MP4 flat out with the FFMPEG backend: ms per frame, and every
    ``keep_every``-th frame (all 125 of a 4K clip would be 3 GB, and the page faults of
    holding them would be counted as decoding)."""
    cap = cv2.VideoCapture(str(clip.path), cv2.CAP_FFMPEG)
    times, kept = [], []
    cpu0 = time.process_time()
    try:
        while True:
            t = time.perf_counter()
            ok, frame = cap.read()
            if not ok:
                break
            times.append(time.perf_counter() - t)
            if len(times) % keep_every == 1:
                kept.append(frame)
    finally:
        cap.release()
    cpu = time.process_time() - cpu0
    if len(times) != clip.frames:
        raise RuntimeError(f"{clip.path}: decoded {len(times)} of {clip.frames} frames")
    return ({"ms_per_frame": 1000 * statistics.median(times),
             "cpu_ms_per_frame": 1000 * cpu / len(times)}, kept)


def scale_cost(frames: list[NDArray[np.uint8]], side: int, repeat: int = 5
               ) -> dict[str, float]:
    """``scale_to(frame, side)`` over ``frames``, each ``repeat`` times: the median wall ms
    and the mean CPU ms (OpenCV may spread one resize over several threads)."""
    times = []
    cpu0 = time.process_time()
    for frame in frames:
        for _ in range(repeat):
            t = time.perf_counter()
            scale_to(frame, side)
            times.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu0
    return {f"scale_to_{side}_ms": 1000 * statistics.median(times),
            f"scale_to_{side}_cpu_ms": 1000 * cpu / len(times)}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def measure(name: str, crf: int, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    width, height, face = CAMERAS[name]
    t = time.perf_counter()
    clip = make_clip(folder / f"{name}-crf{crf}.mp4", width, height, face, seconds=5.0, crf=crf)
    made_s = time.perf_counter() - t
    result: dict[str, Any] = {
        "camera": name, "crf": crf, "width": width, "height": height, "frames": clip.frames,
        "fps": clip.fps,
        "bitrate_mbps": clip.path.stat().st_size * 8 / clip.seconds / 1e6,
        "clip_encode_s": made_s}
    file_runs, scale_runs = [], []
    for _ in range(args.runs):
        costs, frames = decode_file(clip)
        file_runs.append(costs)
        scale_runs.append({k: v for side in SIDES for k, v in scale_cost(frames, side).items()})
        del frames
    live_runs = []
    with rtsp_camera(clip) as camera:
        for _ in range(args.runs):
            live_runs.append(decode_live(camera.url, args.warmup, args.seconds))
            print(f"  {name} live: {live_runs[-1]}", file=sys.stderr)
    live = median_of(live_runs)
    if (live["width"], live["height"]) != (width, height):
        raise RuntimeError(f"{name}: OpenCV read {live['width']}x{live['height']}")
    result |= {"live": live, "live_runs": live_runs, "file": median_of(file_runs),
               "scale": median_of(scale_runs)}
    return result


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        "| camera | crf | Mbit/s | first frame s | live fps | decode: cores at 25 fps "
        "| decode: CPU ms/frame live | decode: ms/frame from file (wall / CPU) | "
        + " | ".join(f"scale to {s}: ms (wall / CPU)" for s in SIDES) + " |",
        "|---" * (8 + len(SIDES)) + "|",
    ]
    for r in results.values():
        live, file, scale = r["live"], r["file"], r["scale"]
        rows.append(
            f"| {r['camera']} {r['width']}x{r['height']} | {r['crf']} | {r['bitrate_mbps']:.1f} "
            f"| {live['first_frame_s']:.2f} | {live['fps']:.1f} | {live['cores']:.2f} "
            f"| {live['cpu_ms_per_frame']:.1f} "
            f"| {file['ms_per_frame']:.1f} / {file['cpu_ms_per_frame']:.1f} | "
            + " | ".join(f"{scale[f'scale_to_{s}_ms']:.1f} / {scale[f'scale_to_{s}_cpu_ms']:.1f}"
                         for s in SIDES) + " |")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=6.0, help="live decoding measured per run")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="seconds read before measuring (the open's probe burst)")
    p.add_argument("--crf", type=int, nargs="+", default=[23],
                   help="the clips' x264 constant quality, one clip each (23: the tests' "
                        "clips; lower: more bits, as a camera that sends more detail)")
    p.add_argument("--cameras", nargs="+", choices=list(CAMERAS), default=list(CAMERAS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "decode_cost.json")
    args = p.parse_args()

    loadavg_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="decode-cost-") as tmp:
        results = {}
        for name in args.cameras:
            for crf in args.crf:
                print(f"{name} crf {crf}: making the clip and measuring", file=sys.stderr)
                results[f"{name}-crf{crf}"] = measure(name, crf, Path(tmp), args)
    report = {
        "config": {"runs": args.runs, "seconds": args.seconds, "warmup": args.warmup,
                   "preset": "superfast", "cpus": os.cpu_count(),
                   "loadavg_before": loadavg_before, "loadavg_after": os.getloadavg(), "opencv": cv2.__version__,
                   "opencv_threads": cv2.getNumThreads()},
        "cameras": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
