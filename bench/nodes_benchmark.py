#!/usr/bin/env python3
"""Two facestream nodes on one PostgreSQL: how soon does a change on one reach the other.

Method: a throwaway PostgreSQL cluster (tests/pg.py: the binaries Debian installs, a temporary
data dir, a free loopback port) and two real ``python -m facestream`` processes, node A and
node B, each with its own data dir, weights folder, camera (``--source``, by default a
different looping clip each, so both nodes do the work a node does) and ``config.toml`` with
the same ``storage.url`` and ``storage.secret``; accounts off on loopback.

* Enrollments: N people of the shared LFW subset with two photos or more (in name order) are
  enrolled one at a time on A with ``POST /faces`` (multipart ``image`` + ``name``) from their
  first photo; a person whose photo A refuses (422: several faces of similar size; 409) is
  passed over for the next. For each, from the moment A's 201 has arrived, B's
  ``GET /faces/{hash}`` is polled every ``--poll-ms`` (2 ms): the delay is when B's first 200
  arrived. B's websocket ``/ws`` is open meanwhile, and the time its ``gallery`` ``added``
  message for that hash arrived is the push delay (it needs no polling; negative when B's
  message came before A's answer, which waits for one more transaction, A's audit entry).
* Recognition: for every ``--check-every``-th (10th) person, once B knows them, B's
  ``POST /process-frame`` gets the person's *second* photo, which no node has seen: correct
  when B names it with that hash.
* Rename and delete: for ``--changes`` (10) of the enrolled, ``PATCH /faces/{hash}`` on A,
  then B polled until it shows the new name; then ``DELETE /faces/{hash}`` on A, B polled
  until it answers 404.

Reported: p50, p95, p99 and max of each delay (nearest-rank percentiles), and B's correct
names; beside them, the round trip of each of B's answers while it was polled, and the
machine's load average: a delay as long as B's round trip is a busy node, not a slow
change. Nothing is asserted: the numbers are for the README.

    python bench/nodes_benchmark.py --enrollments 100
    python bench/nodes_benchmark.py --source none --json   # nodes without a camera
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout, FormData, WSMsgType

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LFW = DATA / "faces" / "lfw"
#: Each node's camera: a different talking head each, looping.
CLIPS = (DATA / "video" / "sadtalker" / "WDA_AlexandriaOcasioCortez_000.mp4",
         DATA / "video" / "video_retalking" / "2.mp4")
#: Polling B gives up on one change after this long (counted as never seen).
GIVE_UP_S = 10.0

sys.path.insert(0, str(REPO))
from tests.pg import PgCluster, pg_cluster  # the tests' throwaway cluster

sys.path.insert(0, str(Path(__file__).resolve().parent))
from live_benchmark import serving  # the sibling script, imported as a module


@dataclass
class Person:
    name: str
    enroll: Path  # the photo enrolled on A
    probe: Path  # another photo of them, shown to B


def people() -> list[Person]:
    """LFW people with two photos or more, in name order."""
    found = []
    for folder in sorted(d for d in LFW.iterdir() if d.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if len(photos) >= 2:
            found.append(Person(folder.name.replace("_", " "), photos[0], photos[1]))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    """One ``python -m facestream`` process with its own folder."""

    name: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.asynccontextmanager
async def facestream_node(name: str, root: Path, db_url: str, secret: str, source: str,
                          workers: int, timeout: float) -> AsyncIterator[Node]:
    """Node ``name`` on a free port, ready (``/healthz`` 200, and its camera live when it
    has one); terminated (then killed, workers included) on exit."""
    home = root / name
    home.mkdir()
    config = home / "config.toml"
    config.write_text(f'[storage]\nurl = "{db_url}"\nsecret = "{secret}"\n')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = home / "server.log"
    cmd = [sys.executable, "-m", "facestream", "--config", str(config), "--port", str(port),
           "--data-dir", str(home / "data"), "--workers", str(workers), "--no-auth",
           "--source", source]
    async with serving(cmd, base, log, timeout, home,
                       {**os.environ, "DEEPFACE_HOME": str(home)},
                       camera_live=source != os.devnull) as proc:
        yield Node(name, base, proc, log)


class GalleryEvents:
    """Node B's websocket: when each ``gallery`` message arrived, by (event, hash)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.task: asyncio.Task[None] | None = None

    async def follow(self, session: ClientSession, base: str) -> None:
        async with session.ws_connect(base.replace("http", "ws", 1) + "/ws",
                                      heartbeat=None) as ws:
            async for msg in ws:
                at = time.perf_counter()
                if msg.type != WSMsgType.TEXT:
                    break
                body = json.loads(msg.data)
                if body.get("type") == "gallery" and body.get("face"):
                    self.seen.setdefault((body["event"], body["face"]["hash"]), at)


async def post_photo(session: ClientSession, url: str, field: str, photo: Path,
                     **fields: str) -> tuple[int, Any]:
    form = FormData(fields)
    form.add_field(field, photo.read_bytes(), filename=photo.name, content_type="image/jpeg")
    async with session.post(url, data=form) as r:
        return r.status, await r.json()


async def poll_until(session: ClientSession, url: str, done: Any, poll_s: float,
                     since: float, round_trips: list[float]) -> float:
    """Seconds from ``since`` (perf_counter) to the first answer of ``GET url`` for which
    ``done(status, body)`` holds; inf after :data:`GIVE_UP_S`. Each request's round trip is
    appended to ``round_trips`` (a slow answer is a busy node, not a slow change)."""
    while True:
        asked = time.perf_counter()
        async with session.get(url) as r:
            status, body = r.status, await r.json()
        now = time.perf_counter()
        round_trips.append(now - asked)
        if done(status, body):
            return now - since
        if now - since > GIVE_UP_S:
            return math.inf
        await asyncio.sleep(poll_s)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least ``p``% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    """In milliseconds; ``missed`` counts changes never seen."""
    seen = [v for v in values if math.isfinite(v)]
    out: dict[str, Any] = {"n": len(values), "missed": len(values) - len(seen)}
    if seen:
        out |= {k: round(percentile(seen, p) * 1000, 2)
                for k, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))}
    return out


@dataclass
class Results:
    enrolled: list[tuple[Person, str]] = field(default_factory=list)
    passed_over: list[tuple[str, int, str]] = field(default_factory=list)
    answered_at: list[float] = field(default_factory=list)  # perf_counter of each 201
    enroll_request: list[float] = field(default_factory=list)  # A's POST /faces itself
    enroll_poll: list[float] = field(default_factory=list)
    enroll_push: list[float] = field(default_factory=list)
    recognised: list[dict[str, Any]] = field(default_factory=list)
    rename: list[float] = field(default_factory=list)
    delete: list[float] = field(default_factory=list)
    poll_round_trip: list[float] = field(default_factory=list)  # each GET on B


async def enroll_all(session: ClientSession, a: Node, b: Node, args: argparse.Namespace,
                     res: Results) -> None:
    poll_s = args.poll_ms / 1000
    candidates = people()
    for person in candidates:
        if len(res.enrolled) == args.enrollments:
            return
        sent = time.perf_counter()
        status, body = await post_photo(session, a.base + "/faces", "image", person.enroll,
                                        name=person.name)
        answered = time.perf_counter()
        if status != 201:
            res.passed_over.append((person.name, status, body.get("error", "")))
            continue
        face = body["hash"]
        res.enrolled.append((person, face))
        res.answered_at.append(answered)
        res.enroll_request.append(answered - sent)
        res.enroll_poll.append(await poll_until(
            session, f"{b.base}/faces/{face}", lambda s, _: s == 200, poll_s, answered,
            res.poll_round_trip))
        if len(res.enrolled) % args.check_every == 0:
            status, seen = await post_photo(session, b.base + "/process-frame", "frame",
                                            person.probe)
            res.recognised.append({
                "person": person.name, "probe": person.probe.name, "status": status,
                "correct": status == 200 and seen["known"] and seen["hash"] == face,
                "named": seen.get("name"), "similarity": seen.get("similarity")})
    raise RuntimeError(f"only {len(res.enrolled)} of {len(candidates)} people could be "
                       f"enrolled; passed over: {res.passed_over}")


async def change_some(session: ClientSession, a: Node, b: Node, args: argparse.Namespace,
                      res: Results) -> None:
    """Rename, then delete, ``--changes`` of the enrolled on A; B polled for each."""
    poll_s = args.poll_ms / 1000
    changed = res.enrolled[: args.changes]
    for i, (person, face) in enumerate(changed):
        new_name = f"{person.name} (renamed {i})"
        async with session.patch(f"{a.base}/faces/{face}", json={"name": new_name}) as r:
            if r.status != 200:
                raise RuntimeError(f"rename on A: HTTP {r.status} {await r.text()}")
        answered = time.perf_counter()
        res.rename.append(await poll_until(
            session, f"{b.base}/faces/{face}",
            lambda s, body, n=new_name: s == 200 and body["name"] == n, poll_s, answered,
            res.poll_round_trip))
    for _, face in changed:
        async with session.delete(f"{a.base}/faces/{face}") as r:
            if r.status != 200:
                raise RuntimeError(f"delete on A: HTTP {r.status} {await r.text()}")
        answered = time.perf_counter()
        res.delete.append(await poll_until(
            session, f"{b.base}/faces/{face}", lambda s, _: s == 404, poll_s, answered,
            res.poll_round_trip))


async def measure(session: ClientSession, a: Node, b: Node, args: argparse.Namespace
                  ) -> Results:
    res = Results()
    async with session.get(b.base + "/faces") as r:
        before = (await r.json())["total"]
    if before != 0:
        raise RuntimeError(f"node B starts with {before} people, not an empty gallery")
    events = GalleryEvents()
    follower = asyncio.create_task(events.follow(session, b.base))
    try:
        await asyncio.sleep(0.5)  # the websocket is open and has sent its snapshot
        await enroll_all(session, a, b, args, res)
        await asyncio.sleep(0.5)  # the last websocket messages
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    # Against each 201's arrival, like the poll; negative: B's message came first.
    for (_, face), answered in zip(res.enrolled, res.answered_at, strict=True):
        at = events.seen.get(("added", face))
        res.enroll_push.append(math.inf if at is None else at - answered)
    await change_some(session, a, b, args, res)
    async with session.get(a.base + "/faces?limit=200") as ra, \
            session.get(b.base + "/faces?limit=200") as rb:
        on_a, on_b = (await ra.json())["faces"], (await rb.json())["faces"]
    if [(f["hash"], f["name"]) for f in on_a] != [(f["hash"], f["name"]) for f in on_b]:
        raise RuntimeError("after the run, node A's and node B's galleries differ")
    return res


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sources = ((os.devnull, os.devnull) if args.source == "none" else
               (args.source, args.source) if args.source else tuple(map(str, CLIPS)))
    secret = secrets.token_hex(32)
    async with contextlib.AsyncExitStack() as stack:
        cluster: PgCluster = stack.enter_context(pg_cluster())
        db_url = cluster.create_database("facestream_nodes")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fs-nodes-")))
        # Both at once, as a deployment restarts: both create the schema on an empty database.
        started = await asyncio.gather(*(
            stack.enter_async_context(facestream_node(
                name, root, db_url, secret, source, args.workers, args.startup_timeout))
            for name, source in zip(("A", "B"), sources, strict=True)),
            return_exceptions=True)
        for failed in started:
            if isinstance(failed, BaseException):
                raise failed
        a, b = started
        session = await stack.enter_async_context(
            ClientSession(timeout=ClientTimeout(total=30)))
        started = time.perf_counter()
        res = await measure(session, a, b, args)
        took = time.perf_counter() - started
        logs = {n.name: n.log.read_text(errors="replace") for n in (a, b)}
        load = os.getloadavg()[0]  # with both nodes still running
    return {
        "enrollments": len(res.enrolled),
        "sources": list(sources),
        "workers_per_node": args.workers,
        "poll_ms": args.poll_ms,
        "passed_over": [{"person": p, "status": s, "error": e} for p, s, e in res.passed_over],
        "enroll_request_ms": summary(res.enroll_request),
        "enrolled_on_a_known_to_b_ms": summary(res.enroll_poll),
        "enrolled_on_a_pushed_to_b_ms": summary(res.enroll_push),
        "recognised_on_b": {"checked": len(res.recognised),
                            "correct": sum(r["correct"] for r in res.recognised),
                            "probes": res.recognised},
        "renamed_on_a_shown_by_b_ms": summary(res.rename),
        "deleted_on_a_gone_from_b_ms": summary(res.delete),
        "b_get_round_trip_ms": summary(res.poll_round_trip),
        "seconds": round(took, 1),
        "load_average_1min": round(load, 2),
        "cpus": os.cpu_count(),
        "log_warnings": {n: [line for line in text.splitlines()
                             if " WARNING " in line or " ERROR " in line or "Traceback" in line]
                         for n, text in logs.items()},
    }


def table(report: dict[str, Any]) -> str:
    rows = [("enrollment on A -> B's GET /faces/{hash} 200", "enrolled_on_a_known_to_b_ms"),
            ("enrollment on A -> B's websocket 'added'", "enrolled_on_a_pushed_to_b_ms"),
            ("rename on A -> B shows the new name", "renamed_on_a_shown_by_b_ms"),
            ("delete on A -> B answers 404", "deleted_on_a_gone_from_b_ms"),
            ("(A's POST /faces itself)", "enroll_request_ms"),
            ("(one GET on B while polling, round trip)", "b_get_round_trip_ms")]
    lines = [(f"{'delay after A answered (ms)':<48} {'n':>4} {'p50':>7} {'p95':>7} "
              f"{'p99':>7} {'max':>7} {'missed':>6}")]
    for label, key in rows:
        s = report[key]
        lines.append(f"{label:<48} {s['n']:>4} " + " ".join(
            f"{s.get(k, float('nan')):>7.1f}" for k in ("p50", "p95", "p99", "max"))
            + f" {s['missed']:>6}")
    rec = report["recognised_on_b"]
    lines.append(f"recognised on B from another photo: {rec['correct']} of {rec['checked']}")
    wrong = [f"{r['person']} ({r['probe']}): named {r['named']!r}, similarity "
             f"{r['similarity']}" for r in rec["probes"] if not r["correct"]]
    lines += [f"  not recognised: {w}" for w in wrong]
    if report["passed_over"]:
        lines.append("passed over (A refused the photo): " + ", ".join(
            f"{p['person']} ({p['status']})" for p in report["passed_over"]))
    lines.append(f"{report['enrollments']} enrollments, cameras {report['sources']}, "
                 f"{report['workers_per_node']} worker(s) per node, B polled every "
                 f"{report['poll_ms']} ms; {report['seconds']} s, load average "
                 f"{report['load_average_1min']} on {report['cpus']} CPUs")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--enrollments", type=int, default=100, help="people enrolled on A")
    p.add_argument("--check-every", type=int, default=10,
                   help="B must recognise every k-th person from another photo")
    p.add_argument("--changes", type=int, default=10, help="people renamed, then deleted")
    p.add_argument("--poll-ms", type=float, default=2.0, help="how often B is polled")
    p.add_argument("--source", default="",
                   help="both nodes' camera (default: a different clip each; 'none': none)")
    p.add_argument("--workers", type=int, default=1, help="worker processes per node")
    p.add_argument("--startup-timeout", type=float, default=180.0)
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = p.parse_args()
    if not 0 < args.changes <= args.enrollments or args.check_every < 1:
        p.error("--changes must be 1..--enrollments, --check-every 1 or more")
    try:
        report = asyncio.run(run(args))
    except pytest.fail.Exception as exc:  # tests/pg.py: PostgreSQL is not installed
        print(f"nodes_benchmark: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
