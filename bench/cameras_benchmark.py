#!/usr/bin/env python3
"""Several cameras in one server: the live benchmark's program on N cameras at once.

Method (as ``live_benchmark.py``, whose pieces this reuses): this script is N network
cameras, 640x480 MJPEG at 25 fps on 127.0.0.1, all playing the same program at the same
time (person A ~6 s, empty ~2 s, person B, empty, stranger C, empty, repeated), so every
camera's faces appear together: the hardest case for the shared worker pool. One
``python -m facestream`` serves them from ``[[cameras]]`` in a config file. A and B are
enrolled through the API. Per camera: ``--viewers`` clients read
``/cameras/<name>/streaming`` and one poller reads ``/cameras/<name>/hash`` every 20 ms.
Reported per camera, and the worst over cameras: the slowest viewer's fps over the face
segments, the share of reads with the right identity (skipping each segment's first 0.3 s),
the delay from a face appearing to its first right read, and /hash latency.

    python bench/cameras_benchmark.py --cameras 4 --viewers 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_benchmark import (  # the sibling script, imported as a module
    FPS,
    REPO,
    TAIL_S,
    Read,
    Segment,
    analyze,
    build_program,
    camera_server,
    enroll_program,
    facestream_server,
    poller,
    viewer,
)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    prog = build_program(args.duration, args.seg, args.gap)
    names = [f"cam{i}" for i in range(args.cameras)]
    async with contextlib.AsyncExitStack() as stack:
        cams = [await stack.enter_async_context(camera_server(prog.empties[-1]))
                for _ in names]
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fs-cams-")))
        config = tmp / "cameras.toml"
        config.write_text("".join(f'[[cameras]]\nname = "{n}"\nsource = "{url}"\n'
                                  for n, (_, url) in zip(names, cams, strict=True)))
        extra = ("--config", str(config), "--workers", str(args.workers))
        log_path = args.out.with_name(f"{args.out.stem}.server.log")
        base = await stack.enter_async_context(
            facestream_server(None, log_path, args.startup_timeout, extra))
        session = await stack.enter_async_context(ClientSession())
        hashes = await enroll_program(session, base, prog)
        reads: dict[str, list[Read]] = {n: [] for n in names}
        arrivals = {n: [[] for _ in range(args.viewers)] for n in names}
        errors: list[str] = []
        tasks = []
        for n in names:
            tasks += [asyncio.create_task(viewer(session, f"{base}/cameras/{n}/streaming", a))
                      for a in arrivals[n]]
            tasks.append(asyncio.create_task(poller(
                session, f"{base}/cameras/{n}/hash", args.poll_ms / 1000, reads[n], errors)))
        try:
            await asyncio.sleep(2.0)  # everybody connected, identities back to null
            t0 = time.monotonic()
            sent = await asyncio.gather(*(cam.play(prog.frames) for cam, _ in cams))
            await asyncio.sleep(TAIL_S)
            secs = time.monotonic() - t0
            async with session.get(base + "/cameras") as resp:
                status = {c["name"]: c for c in (await resp.json())["cameras"]}
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    per_camera = {}
    for n, times in zip(names, sent, strict=True):
        segs = [Segment(s.label, s.first) for s in prog.segments]
        for s, nxt in zip(segs, [*segs[1:], None], strict=True):
            s.start = times[s.first]
            s.end = times[nxt.first] if nxt else times[-1] + 1 / FPS
        segs.append(Segment("", len(times), segs[-1].end, segs[-1].end + TAIL_S))
        summary, _ = analyze(segs, reads[n], arrivals[n], hashes)
        summary["camera_fps"] = (len(times) - 1) / (times[-1] - times[0])
        summary["analysed_per_s"] = status[n]["analysed"] / secs
        per_camera[n] = summary
    keys = ("viewer_fps_min", "right_identity_A", "right_identity_B", "right_identity_C")
    worst = {k: min(s[k] for s in per_camera.values()) for k in keys}
    worst |= {k: max(s[k] for s in per_camera.values())
              for k in ("appear_s_max", "hash_p99_ms", "stranger_reads_as_enrolled",
                        "enrolled_read_as_other")}
    return {"cameras": args.cameras, "viewers_per_camera": args.viewers,
            "workers": args.workers, "worst": worst, "per_camera": per_camera,
            "poll_errors": errors[:20]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--viewers", type=int, default=10, help="per camera")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=float, default=48.0)
    ap.add_argument("--seg", type=float, default=6.0)
    ap.add_argument("--gap", type=float, default=2.0)
    ap.add_argument("--poll-ms", type=float, default=20.0)
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "cameras.json")
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(run(args))
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"{args.cameras} cameras x {args.viewers} viewers, {args.workers} workers")
    print(f"{'camera':<8}{'viewer fps min':>16}{'right A/B/C':>22}{'first right max':>17}"
          f"{'analysed/s':>12}{'hash p99':>10}")
    for n, s in report["per_camera"].items():
        right = "/".join(f"{100 * s[f'right_identity_{k}']:.1f}" for k in "ABC")
        print(f"{n:<8}{s['viewer_fps_min']:>16.1f}{right:>22}{s['appear_s_max']:>16.2f}s"
              f"{s['analysed_per_s']:>12.1f}{s['hash_p99_ms']:>8.1f}ms")
    w = report["worst"]
    ok = (w["viewer_fps_min"] >= 24 and min(w[f"right_identity_{k}"] for k in "ABC") >= 0.99
          and w["appear_s_max"] <= 0.5 and not math.isinf(w["appear_s_max"]))
    print(f"worst: viewer {w['viewer_fps_min']:.1f} fps, right "
          f"{100 * min(w[f'right_identity_{k}'] for k in 'ABC'):.1f}%, first right "
          f"{w['appear_s_max']:.2f} s -> {'targets met' if ok else 'targets NOT met'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
