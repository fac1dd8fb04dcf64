#!/usr/bin/env python3
"""Visit history at scale: 10,000 stored visits, and how fast the history API answers.

1. Storage choice. A visit's images (face crop ~5 KB, context square ~12 KB, frame snapshot
   ~40 KB: real JPEGs made from a shared LFW photo) are written N times as SQLite blobs in
   the gallery database (one transaction per visit, synchronous=FULL, as facestream does) and
   as files under a data dir (write + fsync each, as a crash-safe file store would); then
   read back at random, and one person's share deleted. Times are medians/p99 per visit.
2. The API. A facestream app without a camera (``create_app(config, live=False)``) serves a
   gallery holding 10,000 visits of 250 people over 25 days (stored as blobs; a quarter of
   them of 50 strangers), and GET /visits is timed
   over HTTP on loopback: the newest page of 50, deep pages (following ``next`` cursors),
   one person's visits, unknown visitors only, and a day's window; the review page's lists
   (not reviewed yet, low margin, one camera); plus GET /unknowns and a
   visit's snapshot.

    python bench/history_benchmark.py [--visits 10000] [--requests 400]

Writes bench/results/history.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "faces" / "lfw"
RESULTS = REPO / "bench" / "results"
PEOPLE = 200


def images() -> tuple[bytes, bytes, bytes]:
    """A crop, a context square and a snapshot, encoded as facestream encodes them."""
    import cv2

    photo = cv2.imread(str(sorted(LFW.glob("*/*.jpg"))[0]))
    frame = cv2.resize(photo, (640, 480))
    crop = cv2.imencode(".jpg", cv2.resize(photo[60:190, 60:190], (160, 160)),
                        [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    context = cv2.imencode(".jpg", cv2.resize(photo, (224, 224)),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    snapshot = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 75])[1].tobytes()
    return crop, context, snapshot


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


async def storage_choice(n: int, tmp: Path) -> dict[str, Any]:
    from facestream.config import Config, StorageConfig
    from facestream.storage import Gallery

    crop, context, snapshot = images()
    out: dict[str, Any] = {"bytes_per_visit": len(crop) + len(context) + len(snapshot)}
    # Blobs in the gallery database.
    cfg = Config(storage=StorageConfig(data_dir=str(tmp / "blobs")))
    gallery = await Gallery.for_config(cfg)
    ids = [uuid.uuid4().hex for _ in range(n)]
    writes = []
    for i, vid in enumerate(ids):
        t0 = time.perf_counter()
        await gallery.db.write([
            (("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at, "
              "quality) VALUES (?, ?, 0, NULL, 'cam', ?, ?, 0.5)"),
             (vid, f"p{i % PEOPLE}", i, i + 1)),
            (("INSERT INTO visit_images (visit, crop, context, geometry, snapshot) VALUES "
              "(?, ?, ?, '{}', ?)"), (vid, crop, context, snapshot)),
        ])
        writes.append(time.perf_counter() - t0)
    reads = []
    for vid in random.sample(ids, min(500, n)):
        t0 = time.perf_counter()
        await gallery.db.query("SELECT snapshot FROM visit_images WHERE visit = ?", (vid,))
        reads.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    await gallery.db.forget([("DELETE FROM visits WHERE person = ?", ("p0",))])
    delete_s = time.perf_counter() - t0
    await gallery.close()
    size = sum(p.stat().st_size for p in (tmp / "blobs").iterdir())
    out["blobs"] = {"write_ms_median": pct(writes, 50), "write_ms_p99": pct(writes, 99),
                    "read_ms_median": pct(reads, 50), "read_ms_p99": pct(reads, 99),
                    "forget_one_person_s": delete_s, "disk_mb": size / 2**20}
    # Files under a data dir (fsync each, so a crash keeps what was acknowledged).
    root = tmp / "files"
    writes = []
    for i, vid in enumerate(ids):
        t0 = time.perf_counter()
        folder = root / f"p{i % PEOPLE}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in (("crop", crop), ("context", context), ("snapshot", snapshot)):
            path = folder / f"{vid}.{name}.jpg"
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        writes.append(time.perf_counter() - t0)
    reads = []
    for i in random.sample(range(n), min(500, n)):
        t0 = time.perf_counter()
        (root / f"p{i % PEOPLE}" / f"{ids[i]}.snapshot.jpg").read_bytes()
        reads.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    shutil.rmtree(root / "p0")
    delete_s = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    out["files"] = {"write_ms_median": pct(writes, 50), "write_ms_p99": pct(writes, 99),
                    "read_ms_median": pct(reads, 50), "read_ms_p99": pct(reads, 99),
                    "forget_one_person_s": delete_s, "disk_mb": size / 2**20}
    return out


async def api_latency(n: int, requests: int, tmp: Path) -> dict[str, Any]:
    from aiohttp import ClientSession, web

    from facestream.config import AuthConfig, Config, ServerConfig, StorageConfig
    from facestream.server import create_app
    from facestream.storage import Gallery

    crop, context, snapshot = images()
    # Accounts off: the loopback API as the tests use it (a login would time Argon2 too).
    cfg = Config(server=ServerConfig(port=0), auth=AuthConfig(enabled=False),
                 storage=StorageConfig(data_dir=str(tmp / "api")))
    gallery = await Gallery.for_config(cfg)
    # Spread over the last 25 days (the default retention keeps 30), up to now.
    step = 25 * 86400 / n
    t_start = time.time() - n * step
    rows = []
    for i in range(n):
        vid = uuid.uuid4().hex
        known = i % 4 != 0
        person = (f"{i % PEOPLE:064x}" if known else f"{PEOPLE + i % 50:064x}")
        rows.append(vid)
        arrived = t_start + i * step
        # Decisions as the review page sees them: 1 in 10 within the low margin, and 1 in
        # 20 not reviewed yet (the "to review" list is the sparse one).
        score = 0.5 + random.random() * 0.4 if known else None
        await gallery.db.write([
            (("INSERT INTO visits (id, person, known, name, camera, arrived_at, left_at, "
              "quality, score, runner, runner_score, threshold, margin, reviewed_at) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0.42, ?, ?)"),
             (vid, person, int(known), f"person {i % PEOPLE}" if known else None,
              "door" if i % 2 else "cam", arrived, arrived + 60, random.random(), score,
              f"{(i + 1) % PEOPLE:064x}", random.random() * 0.4, random.random() * 0.5,
              None if i % 20 == 0 else arrived + 120)),
            (("INSERT INTO visit_images (visit, crop, context, geometry, snapshot) VALUES "
              "(?, ?, ?, '{}', ?)"), (vid, crop, context, snapshot)),
        ])
    await gallery.close()
    app = create_app(cfg, live=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    results: dict[str, Any] = {"visits": n}
    try:
        async with ClientSession() as session:
            async def timed(path: str) -> tuple[float, Any]:
                t0 = time.perf_counter()
                async with session.get(base + path) as resp:
                    assert resp.status == 200, (path, resp.status, await resp.text())
                    body = await (resp.json() if resp.content_type == "application/json"
                                  else resp.read())
                return time.perf_counter() - t0, body

            # Deep pages: walk the whole history by cursors once, keep the cursors.
            cursors: list[str] = []
            cursor: str | None = None
            while True:
                _, body = await timed("/visits?limit=50" + (f"&cursor={cursor}" if cursor
                                                               else ""))
                cursor = body["next"]
                if cursor is None:
                    break
                cursors.append(cursor)
            results["pages_of_50"] = len(cursors) + 1
            day = time.time() - 86400
            cases = {
                "newest page": lambda: "/visits?limit=50",
                "deep page (random cursor)": lambda: f"/visits?limit=50&cursor="
                                                     f"{random.choice(cursors)}",
                "one person's visits": lambda: f"/visits?limit=50&person="
                                               f"{random.randrange(PEOPLE):064x}",
                "unknown visitors only": lambda: "/visits?limit=50&known=false",
                "last 24 hours": lambda: f"/visits?limit=50&since={day}",
                "review: to review (1 in 20)": lambda: "/visits?limit=20&reviewed=false",
                "review: low margin, to review": lambda: "/visits?limit=20&low_margin=true"
                                                         "&reviewed=false",
                "review: one camera": lambda: "/visits?limit=20&camera=door",
                "GET /unknowns": lambda: "/unknowns?limit=50",
                "a visit's snapshot": lambda: f"/visits/{random.choice(rows)}/snapshot",
            }
            for name, path in cases.items():
                times = [(await timed(path()))[0] for _ in range(requests)]
                results[name] = {"p50_ms": pct(times, 50), "p99_ms": pct(times, 99),
                                 "max_ms": max(times) * 1000}
    finally:
        await runner.cleanup()
    return results


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="facestream-history-") as tmp:
        os.environ["DEEPFACE_HOME"] = tmp  # the app's worker pool provisions weights here
        choice = await storage_choice(args.visits, Path(tmp))
        api = await api_latency(args.visits, args.requests, Path(tmp))
    return {"storage": choice, "api": api}


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--visits", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=400, help="per API case")
    p.add_argument("--out", type=Path, default=RESULTS / "history.json")
    args = p.parse_args()
    random.seed(0)
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    s = result["storage"]
    print(f"images per visit: {s['bytes_per_visit'] / 1024:.0f} KB")
    print(f"{'store':<8}{'write p50/p99 ms':>20}{'read p50/p99 ms':>20}{'forget 1 person s':>20}"
          f"{'disk MB':>10}")
    for kind in ("blobs", "files"):
        r = s[kind]
        print(f"{kind:<8}{r['write_ms_median']:>9.2f} / {r['write_ms_p99']:<8.2f}"
              f"{r['read_ms_median']:>9.2f} / {r['read_ms_p99']:<8.2f}"
              f"{r['forget_one_person_s']:>18.3f}{r['disk_mb']:>12.0f}")
    a = result["api"]
    print(f"\nGET over HTTP with {a['visits']} visits ({a['pages_of_50']} pages of 50):")
    for name, r in a.items():
        if isinstance(r, dict):
            print(f"  {name:<30} p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
                  f"max {r['max_ms']:6.1f} ms")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
