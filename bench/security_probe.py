#!/usr/bin/env python3
"""Probe a live facestream as an attacker on the same network would, and print the table.

Starts ``python -m facestream`` (accounts on, as by default) on loopback with a fresh data dir,
a real clip as its camera and a camera URL full of credentials in its config, then:

1. **Authentication**: every request that changes the gallery, sent without credentials, with a
   viewer token and with a viewer's session cookie. None may succeed; the gallery must be as it
   was.
2. **Cross-site**: the same writes with an admin's session cookie but another site's Origin
   (or Sec-Fetch-Site: cross-site), JSON sent as text/plain or as a form, and a websocket from
   another origin. None may succeed.
3. **Bad input**: malformed multipart, JSON nested 100,000 deep, surrogates, non-UTF-8 names,
   sample ids >= 2^63, invisible and control-character names, bad numbers, with an admin
   token. Each must be a 4xx, and change nothing.
4. **Slow clients**, all at once: 300 connections that never finish their headers and 300
   stream viewers that never read (each group spread over loopback addresses, 30 per address,
   under the per-client cap, so every one is held until a timeout drops it), 40 uploads whose
   body never arrives, and 300 unfinished connections from one address (beyond the cap of 64
   the rest are refused at once). All must be dropped within 30 s while GET /hash (polled
   every 20 ms by a viewer from 127.0.0.1) keeps answering, p99 under 20 ms.
5. **Kill mid-write**: enrollments through the API, the server SIGKILLed in the middle, and
   restarted: every enrollment it acknowledged (201) must be there.
6. **Credentials**: nothing any endpoint answers, nor the server's log, may contain the
   camera's password, the tokens or the session cookies.
7. **Disks**: a read-only data dir, a damaged, truncated or empty gallery, an unwritable
   ``-shm`` file and a nearly full disk (24 KiB left on a small ext4, SIGBUS before) must stop
   start-up with one line (exit 2); a full disk (a 4 MiB tmpfs) must answer 507.
8. **Worker restart**: the recognition worker SIGKILLed; until the pool is back, /hash and
   /healthz must say the recognizer is restarting, then ok again.

Every response status is counted: the probe fails if any is a 5xx other than the 503/507 the
disk cases expect. Writes results to bench/results/security.json.

    python bench/security_probe.py
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LFW = DATA / "faces" / "lfw"
CLIP = DATA / "video" / "sadtalker" / "WDA_AlexandriaOcasioCortez_000.mp4"
RESULTS = REPO / "bench" / "results"
CAMERA_PASSWORD = "p#ss/w?rd@secret"
CAMERA_TOKEN = "camtok3n9876"
EVIL = "http://evil.example"
SLOW = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, root: Path, source: str, extra: tuple[str, ...] = ()) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / f"server-{self.port}.log"
        (root / "config.toml").write_text(f'[camera]\nsource = "{source}"\n')
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "facestream", "--port", str(self.port), "--data-dir",
                 str(root / "data"), "--workers", "1", *extra],
                cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(self.log.read_text()[-3000:])
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.2)
        raise RuntimeError("server not ready")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def cli(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "facestream", *args[:1], "--data-dir",
                           str(root / "data"), *args[1:]], cwd=root, input=stdin,
                          capture_output=True, text=True, timeout=120, check=False)


def photo(i: int) -> bytes:
    return sorted(LFW.glob("*/*_0001.jpg"))[i].read_bytes()


def form(**fields: Any) -> aiohttp.FormData:
    f = aiohttp.FormData()
    for key, value in fields.items():
        if isinstance(value, bytes):
            f.add_field(key, value, filename="f.jpg", content_type="image/jpeg")
        else:
            f.add_field(key, value)
    return f


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.rows: dict[str, dict[str, Any]] = {}

    def add(self, group: str, status: int, ok: bool, expected_5xx: bool = False) -> None:
        """One check; ``status`` 0 when it was not an HTTP answer. A 5xx is a violation
        unless the case expects it (503/507 for a full or broken disk)."""
        self.statuses[status] += 1
        row = self.rows.setdefault(group, {"checks": 0, "violations": 0, "5xx": 0})
        row["checks"] += 1
        unexpected = status >= 500 and not expected_5xx
        row["violations"] += 0 if ok and not unexpected else 1
        row["5xx"] += unexpected


def writes(face: str, sample: int, visit: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every kind of request that changes something."""
    return [
        ("POST", "/faces", {"data": form(image=photo(3), name="Intruder")}),
        ("POST", "/faces", {"json": {"from_live": True, "name": "Intruder"}}),
        ("POST", "/faces", {"json": {"from_unknown": "ab" * 32, "name": "Intruder"}}),
        ("PATCH", f"/faces/{face}", {"json": {"name": "Renamed"}}),
        ("DELETE", f"/faces/{face}", {}),
        ("POST", f"/faces/{face}/samples", {"data": form(image=photo(4))}),
        ("DELETE", f"/faces/{face}/samples/{sample}", {}),
        ("POST", f"/faces/{face}/merge", {"json": {"from": face}}),
        ("POST", "/live/not", {"json": {"hash": face}}),
        ("DELETE", f"/visits/{visit}", {}),
        ("DELETE", f"/people/{face}/visits", {}),
        ("DELETE", f"/unknowns/{'ab' * 32}", {}),
    ]


async def state(s: aiohttp.ClientSession, url: str, admin: dict[str, str]) -> Any:
    async with s.get(url + "/faces", headers=admin) as r:
        faces = (await r.json())["faces"]
    async with s.get(url + "/visits", headers=admin) as r:
        visits = (await r.json())["visits"]
    return ([(f["hash"], f["name"], [x["id"] for x in f["samples"]]) for f in faces],
            sorted(v["id"] for v in visits))


async def probe_access(srv: Server, tally: Tally, admin: dict[str, str],
                       viewer: dict[str, str], viewer_cookie: str, admin_cookie: str,
                       face: str, sample: int, visit: str) -> None:
    async with aiohttp.ClientSession() as s:
        before = await state(s, srv.url, admin)
        for who, headers in (("none", {}), ("viewer token", viewer),
                             ("viewer session", {"Cookie": f"facestream_session="
                                                           f"{viewer_cookie}"})):
            for method, path, kwargs in writes(face, sample, visit):
                async with s.request(method, srv.url + path, headers=headers, **kwargs) as r:
                    tally.add("1 writes without an admin credential", r.status, r.status in
                              (401, 403))
            # Is this address enrolled, and what does the person look like? Admins only.
            async with s.get(srv.url + "/faces", params={"email": "ada@example.org"},
                             headers=headers) as r:
                tally.add("1 writes without an admin credential", r.status, r.status in
                          (401, 403))
        assert await state(s, srv.url, admin) == before, "the gallery changed"
        cookie = {"Cookie": f"facestream_session={admin_cookie}"}
        for extra in ({"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"}):
            for method, path, kwargs in writes(face, sample, visit):
                async with s.request(method, srv.url + path, headers={**cookie, **extra},
                                     **kwargs) as r:
                    tally.add("2 cross-site writes", r.status, r.status == 403)
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            for method, path in (("PATCH", f"/faces/{face}"), ("POST", f"/faces/{face}/merge"),
                                 ("POST", "/live/not")):
                async with s.request(method, srv.url + path, data='{"name": "x", "from": "y"}',
                                     headers={**cookie, "Content-Type": ctype}) as r:
                    tally.add("2 cross-site writes", r.status, r.status in (400, 415))
        try:
            ws = await s.ws_connect(srv.url.replace("http", "ws") + "/ws",
                                    headers={**cookie, "Origin": EVIL})
            await ws.close()
            tally.add("2 cross-site writes", 101, False)
        except aiohttp.WSServerHandshakeError as exc:
            tally.add("2 cross-site writes", exc.status, exc.status == 403)
        assert await state(s, srv.url, admin) == before, "the gallery changed"


def bad_inputs(face: str) -> list[tuple[str, str, dict[str, Any]]]:
    b = "probeboundary"
    mp = f"multipart/form-data; boundary={b}"
    part = f'--{b}\r\nContent-Disposition: form-data; name="name"\r\n\r\n'.encode()
    out: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/faces", {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}),
        ("POST", "/process-frame", {"data": part + b"Ada", "headers": {"Content-Type": mp}}),
        ("POST", "/faces", {"data": f"--{b}\r\nthis is not a header\r\n\r\nx\r\n--{b}--\r\n"
                            .encode(), "headers": {"Content-Type": mp}}),
        ("POST", "/faces", {"data": part + b"\xff\xfe\r\n" + f"--{b}--\r\n".encode(),
                            "headers": {"Content-Type": mp}}),
        ("PATCH", f"/faces/{face}", {"data": '{"name": "\\ud800"}',
                                     "headers": {"Content-Type": "application/json"}}),
        ("GET", f"/faces/{face}/samples/{2**63}/crop", {}),
        ("DELETE", f"/faces/{face}/samples/{2**64}", {}),
        ("PATCH", f"/faces/{face}", {"json": {"name": "\u200b\u200c\u2060"}}),
        ("PATCH", f"/faces/{face}", {"json": {"name": "Ada\x00\x1b[31m"}}),
        ("GET", "/faces?limit=" + "9" * 5000, {}),
        ("GET", "/unknowns?offset=-3", {}),
        ("GET", "/visits?cursor=nan_x", {}),
        ("GET", "/visits?known=maybe", {}),
        ("POST", "/faces", {"json": {"from_visit": ["x"], "name": "x"}}),
        ("POST", "/faces", {"json": {"from_live": True, "name": "x", "hash": "zz"}}),
    ]
    for method, path in (("POST", "/faces"), ("PATCH", f"/faces/{face}"),
                         ("POST", f"/faces/{face}/merge"), ("POST", "/live/not"),
                         ("POST", f"/faces/{face}/samples")):
        out.append((method, path, {"data": "[" * 100_000,
                                   "headers": {"Content-Type": "application/json"}}))
    return out


async def probe_inputs(srv: Server, tally: Tally, admin: dict[str, str], face: str) -> None:
    async with aiohttp.ClientSession() as s:
        before = await state(s, srv.url, admin)
        for method, path, kwargs in bad_inputs(face):
            headers = {**admin, **kwargs.pop("headers", {})}
            async with s.request(method, srv.url + path, headers=headers, **kwargs) as r:
                tally.add("3 bad input", r.status, 400 <= r.status < 500)
        assert await state(s, srv.url, admin) == before, "a bad input changed the gallery"


async def slow_connection(source: str, port: int, payload: bytes, read: bool
                          ) -> tuple[float | None, bytes]:
    """Open a connection from ``source``, send ``payload`` and never finish: the seconds
    until the server drops it (None: still open after 45 s), and the first bytes it sent."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    first = b""
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, payload)
        while time.monotonic() - t0 < 45:
            if read:
                try:
                    data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 1.0)
                except TimeoutError:
                    continue
                if not data:
                    return time.monotonic() - t0, first
                first = first or data[:16]
            else:
                # Never read: only notice the close (a refused write or an error).
                await asyncio.sleep(1.0)
                try:
                    sock.send(b"x")
                except OSError:
                    return time.monotonic() - t0, first
                # A closed connection with unread data is reset: recv says so.
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return time.monotonic() - t0, first
                except BlockingIOError:
                    pass
                except OSError:
                    return time.monotonic() - t0, first
        return None, first
    except OSError:
        return time.monotonic() - t0, first
    finally:
        sock.close()


def spread(group: int, n: int, per_address: int) -> list[str]:
    """``n`` loopback source addresses for one attacker group, ``per_address`` each (under
    the per-client cap, so every connection is really held until its timeout drops it)."""
    return [f"127.0.{group}.{1 + i // per_address}" for i in range(n)]


async def probe_slow(srv: Server, tally: Tally, admin: dict[str, str],
                     viewer: dict[str, str]) -> dict[str, Any]:
    port = srv.port
    token = admin["Authorization"]
    headers = b"GET /hash HTTP/1.1\r\nHost: x\r\n"  # never the final blank line
    stream = (f"GET /streaming HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n"
              .encode())
    body = (f"PATCH /faces/{'0' * 64} HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"na").encode()
    # The viewer polls from its own process, so the probe's 940 sockets do not delay it.
    poller = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--poll-hash", srv.url, viewer["Authorization"],
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    # All at once: 300 + 300 + 300 + 40 connections, held by separate attackers.
    plan = {
        "unfinished headers": [(a, headers, True) for a in spread(2, SLOW, 30)],
        "stream viewers that never read": [(a, stream, False) for a in spread(3, SLOW, 30)],
        "bodies that never arrive": [(a, body, True) for a in spread(4, 40, 20)],
        "one address opening 300": [("127.0.5.1", headers, True)] * SLOW,
    }
    tasks = {name: [asyncio.create_task(slow_connection(a, port, data, read))
                    for a, data, read in conns] for name, conns in plan.items()}
    results = {name: await asyncio.gather(*group) for name, group in tasks.items()}
    assert poller.stdin is not None
    poller.stdin.close()  # stop polling
    reads = json.loads((await poller.communicate())[0])
    for _, _, status in reads:
        tally.add("4 /hash while slow clients", status, status == 200)
    latencies = [latency for _, latency, _ in reads]
    when = [t for t, _, _ in reads]
    out: dict[str, Any] = {"elapsed_s": time.monotonic() - t0}
    for name, answers in results.items():
        times = [t for t, _ in answers]
        dropped = [t for t in times if t is not None]
        for t in times:
            tally.add("4 slow clients dropped within 30 s", 0, t is not None and t <= 30)
        out[name] = {"clients": len(times), "dropped": len(dropped),
                     "refused_at_once": sum(first.startswith(b"HTTP/1.1 503")
                                            for _, first in answers),
                     "last_dropped_s": round(max(dropped), 1) if dropped else None}
    lat = np.array(latencies)
    out["hash_p50_ms"] = float(np.percentile(lat, 50))
    out["hash_p99_ms"] = float(np.percentile(lat, 99))
    out["hash_reads"] = len(lat)
    slowest = np.argsort(lat)[-5:][::-1]
    out["hash_slowest"] = [(round(when[i] - t0, 2), round(float(lat[i]), 1)) for i in slowest]
    tally.add("4 /hash p99 under 20 ms meanwhile", 0, out["hash_p99_ms"] < 20)
    return out


async def probe_kill(root: Path, srv: Server, tally: Tally, admin: dict[str, str]
                     ) -> tuple[Server, dict[str, Any]]:
    acknowledged: list[str] = []
    answers: Counter[int] = Counter()
    limit = asyncio.Semaphore(4)  # as a well-behaved client would (8 pending uploads get 503)
    async with aiohttp.ClientSession() as s:
        async def enroll(i: int) -> None:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with limit, s.post(srv.url + "/faces", headers=admin,
                                  data=form(image=photo(10 + i), name=f"Kill test {i}")) as r:
                    answers[r.status] += 1
                    if r.status == 201:
                        acknowledged.append((await r.json())["hash"])

        tasks = [asyncio.create_task(enroll(i)) for i in range(60)]
        while len(acknowledged) < 12:
            if all(t.done() for t in tasks):
                raise RuntimeError(f"enrollments did not succeed: {dict(answers)}")
            await asyncio.sleep(0.01)
        srv.stop(signal.SIGKILL)  # mid-write: enrollments are in flight
        await asyncio.gather(*tasks, return_exceptions=True)
    restarted = Server(root, str(CLIP))
    await restarted.ready()
    async with aiohttp.ClientSession() as s, s.get(restarted.url + "/faces",
                                                  headers=admin) as r:
        present = {f["hash"] for f in (await r.json())["faces"]}
    lost = [h for h in acknowledged if h not in present]
    for h in acknowledged:
        tally.add("5 acknowledged writes lost after SIGKILL", 0, h in present)
    return restarted, {"acknowledged": len(acknowledged), "lost": len(lost)}


async def probe_restart(srv: Server, tally: Tally, admin: dict[str, str]) -> dict[str, Any]:
    """SIGKILL the recognition worker: until the pool is back, /hash and /healthz must say the
    recognizer is restarting (not "nobody in view, ok"); then both say ok again."""
    children = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True,
                              text=True, check=False).stdout.split()
    workers = [pid for pid in children  # not multiprocessing's resource tracker
               if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    os.kill(int(workers[0]), signal.SIGKILL)
    seen: Counter[tuple[str, str]] = Counter()
    t0 = time.monotonic()
    recovered = None
    async with aiohttp.ClientSession() as s:
        while time.monotonic() - t0 < 30:
            async with s.get(srv.url + "/healthz") as r:
                health = await r.json()
                tally.add("8 worker restart", r.status, r.status == 200)
            async with s.get(srv.url + "/hash", headers=admin) as r:
                now = await r.json()
                tally.add("8 worker restart", r.status, r.status == 200)
            seen[(health["status"], now["recognizer"])] += 1
            if ("degraded", "restarting") in seen and health["recognizer"] == "ok":
                recovered = time.monotonic() - t0
                break
            await asyncio.sleep(0.02)
    said = ("degraded", "restarting") in seen
    tally.add("8 worker restart", 0, said and recovered is not None)
    return {"answers": {f"{k[0]}/{k[1]}": v for k, v in seen.items()},
            "recovered_s": None if recovered is None else round(recovered, 1),
            "worker_restarts": health.get("worker_restarts")}


async def probe_leaks(srv: Server, tally: Tally, admin: dict[str, str],
                      secrets_: list[str]) -> dict[str, Any]:
    seen: list[str] = []
    async with aiohttp.ClientSession() as s:
        for path in ("/healthz", "/metrics", "/hash", "/faces", "/events", "/visits",
                     "/unknowns", "/audit", "/me", "/", "/login"):
            async with s.get(srv.url + path, headers=admin) as r:
                text = await r.text()
                tally.add("6 credentials in any output", r.status, True)
                seen += [f"{path}: {x}" for x in secrets_ if x in text]
    log = srv.log.read_text(errors="replace")
    seen += [f"log: {x}" for x in secrets_ if x in log]
    tally.add("6 credentials in any output", 0, not seen)
    return {"found": seen}


def probe_disks(tally: Tally, tmp: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    good = tmp / "good"
    subprocess.run([sys.executable, "-m", "facestream", "faces", "--data-dir",
                    str(good / "data"), "add", "Ada", str(LFW / "Aaron_Peirsol" /
                                                         "Aaron_Peirsol_0001.jpg")],
                   capture_output=True, check=False, timeout=120)
    gallery = (good / "data" / "gallery.sqlite3").read_bytes()

    def start(name: str, prepare: Any) -> None:
        root = tmp / name
        (root / "data").mkdir(parents=True)
        prepare(root / "data")
        proc = subprocess.run([sys.executable, "-m", "facestream", "--data-dir",
                               str(root / "data"), "--port", "0", "--source", str(CLIP)],
                              capture_output=True, text=True, timeout=120, check=False,
                              cwd=root)
        lines = proc.stderr.strip().splitlines()
        ok = proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr
        tally.add("7 disks", 0, ok)
        out[name] = lines[-1] if lines else f"exit {proc.returncode}, no output"

    start("damaged gallery", lambda d: (d / "gallery.sqlite3").write_bytes(
        os.urandom(len(gallery))))
    start("truncated gallery", lambda d: (d / "gallery.sqlite3").write_bytes(
        gallery[: len(gallery) // 2]))
    start("empty gallery", lambda d: (d / "gallery.sqlite3").write_bytes(b""))

    def read_only(d: Path) -> None:
        subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(d)], check=True)

    try:
        start("read-only data dir", read_only)
    except subprocess.CalledProcessError:
        out["read-only data dir"] = "not measured: mounting is not permitted here"
    finally:
        subprocess.run(["umount", str(tmp / "read-only data dir" / "data")],
                       capture_output=True, check=False)

    def unwritable_shm(d: Path) -> None:
        # What a killed server leaves (-wal, -shm), then the -shm made immutable (root too).
        db = d / "gallery.sqlite3"
        db.write_bytes(gallery)
        subprocess.run([sys.executable, "-c", (
            "import os, sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n"
            "c.execute('PRAGMA journal_mode=WAL')\n"
            "c.execute(\"UPDATE identities SET name = name || ''\"); c.commit()\nos._exit(0)\n"),
            str(db)], check=True)
        subprocess.run(["chattr", "+i", f"{db}-shm"], check=True)

    shm = tmp / "unwritable -shm file" / "data" / "gallery.sqlite3-shm"
    try:
        start("unwritable -shm file", unwritable_shm)
    except (subprocess.CalledProcessError, FileNotFoundError):
        out["unwritable -shm file"] = "not measured: chattr is not permitted here"
    finally:
        subprocess.run(["chattr", "-i", str(shm)], capture_output=True, check=False)

    def nearly_full(d: Path) -> None:
        # 4 MiB of ext4 with 1 KiB blocks, filled to 24 KiB free: SQLite's first writes into
        # the -shm it maps used to die of SIGBUS here.
        image = tmp / "small.img"
        with image.open("wb") as f:
            f.truncate(4 << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", str(image)], check=True,
                       capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(d)], check=True)
        (d / "gallery.sqlite3").write_bytes(gallery)
        with contextlib.suppress(OSError), (d / "filler").open("wb") as f:
            while os.statvfs(d).f_bavail * os.statvfs(d).f_frsize > 24 * 1024:
                f.write(b"\0" * 1024)
                f.flush()

    try:
        start("nearly full disk (SIGBUS before)", nearly_full)
    except (subprocess.CalledProcessError, FileNotFoundError):
        out["nearly full disk (SIGBUS before)"] = "not measured: mounting is not permitted here"
    finally:
        subprocess.run(["umount", str(tmp / "nearly full disk (SIGBUS before)" / "data")],
                       capture_output=True, check=False)
    return out


async def probe_full_disk(tally: Tally, tmp: Path, admin_token: str) -> str:
    """A 4 MiB tmpfs as the data dir, filled while the server runs: 507, then nothing lost."""
    root = tmp / "full"
    data = root / "data"
    data.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(data)],
                      capture_output=True, check=False).returncode:
        return "not measured: mounting a tmpfs is not permitted here"
    srv = None
    try:
        srv = Server(root, str(CLIP), ("--no-auth",))
        await srv.ready()
        filler = data / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
        statuses = []
        async with aiohttp.ClientSession() as s:
            for i in range(3):
                async with s.post(srv.url + "/faces",
                                  data=form(image=photo(80 + i), name=f"Full {i}")) as r:
                    statuses.append(r.status)
                    tally.add("7 disks", r.status, r.status == 507, expected_5xx=True)
        return f"enrollments on a full disk answered {statuses}"
    finally:
        if srv is not None:
            srv.stop()
        subprocess.run(["umount", str(data)], capture_output=True, check=False)


async def main_async(tmp: Path) -> dict[str, Any]:
    tally = Tally()
    root = tmp / "server"
    root.mkdir()
    source = (f"rtsp://admin:{CAMERA_PASSWORD}@127.0.0.1:9/live?user=admin&password="
              f"hunter2x&token={CAMERA_TOKEN}&channel=1")
    # The camera: a real clip; the credentials-laden URL is checked by its own server below.
    srv = Server(root, str(CLIP))
    await srv.ready()
    first = re.search(r"user 'admin', password (\S+)", srv.log.read_text())
    assert first is not None, "the first start printed no admin password"
    admin_token = cli(root, "tokens", "create", "--role", "admin").stdout.strip()
    viewer_token = cli(root, "tokens", "create", "--role", "viewer").stdout.strip()
    cli(root, "users", "add", "vera", "--role", "viewer", "--password-stdin",
        stdin="viewer-password\n")
    admin = {"Authorization": f"Bearer {admin_token}"}
    viewer = {"Authorization": f"Bearer {viewer_token}"}
    cookies = {}
    async with aiohttp.ClientSession() as s:
        for user, password in (("vera", "viewer-password"), ("admin", first.group(1))):
            async with s.post(srv.url + "/login", json={"username": user,
                                                         "password": password}) as r:
                assert r.status == 200, await r.text()
                cookies[user] = r.cookies["facestream_session"].value
        async with s.post(srv.url + "/faces", headers=admin,
                          data=form(image=photo(0), name="Ada")) as r:
            face = (await r.json())["hash"]
        async with s.post(srv.url + f"/faces/{face}/samples", headers=admin,
                          data=form(image=photo(1))) as r:
            sample = (await r.json())["id"]
        await asyncio.sleep(4)  # the clip's stranger makes a visit
        async with s.get(srv.url + "/visits", headers=admin) as r:
            visits = (await r.json())["visits"]
    visit = visits[0]["id"] if visits else "0" * 32
    report: dict[str, Any] = {}
    say("1-2 authentication and cross-site writes")
    await probe_access(srv, tally, admin, viewer, cookies["vera"], cookies["admin"], face,
                       sample, visit)
    say("3 bad input")
    await probe_inputs(srv, tally, admin, face)
    say("4 slow clients")
    report["slow clients"] = await probe_slow(srv, tally, admin, viewer)
    say("5 SIGKILL mid-write")
    srv, report["kill"] = await probe_kill(root, srv, tally, admin)
    say("8 worker restart")
    report["worker restart"] = await probe_restart(srv, tally, admin)
    srv.stop()
    say("6 credentials")
    leaky = tmp / "leaky"
    leaky.mkdir()
    cli(leaky, "tokens", "create", "--role", "admin")  # creates the accounts first
    leaky_srv = Server(leaky, source)
    await leaky_srv.ready()
    await asyncio.sleep(3)  # a few failed camera connections, logged
    report["credentials"] = await probe_leaks(
        leaky_srv, tally, admin_headers(leaky), [CAMERA_PASSWORD, "hunter2x", CAMERA_TOKEN,
                                                  "p#ss", admin_token, viewer_token,
                                                  cookies["admin"], cookies["vera"]])
    leaky_srv.stop()
    say("7 disks")
    report["disks"] = probe_disks(tally, tmp / "disks")
    report["full disk"] = await probe_full_disk(tally, tmp, admin_token)
    report["table"] = tally.rows
    report["statuses"] = dict(sorted(tally.statuses.items()))
    return report


def say(what: str) -> None:
    print(f"probing {what} ...", file=sys.stderr, flush=True)


def admin_headers(root: Path) -> dict[str, str]:
    return {"Authorization": "Bearer " + cli(root, "tokens", "create", "--role", "admin")
            .stdout.strip()}


async def poll_hash(url: str, authorization: str) -> None:
    """``--poll-hash``: GET /hash every 20 ms until stdin closes; print [[t, ms, status]]."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    closed = asyncio.create_task(reader.read())
    reads: list[tuple[float, float, int]] = []
    async with aiohttp.ClientSession() as s:
        while not closed.done():
            t0 = time.perf_counter()
            async with s.get(url + "/hash", headers={"Authorization": authorization}) as r:
                await r.read()
            reads.append((time.monotonic(), (time.perf_counter() - t0) * 1000, r.status))
            await asyncio.sleep(0.02)
    print(json.dumps(reads))


def main() -> int:
    if sys.argv[1:2] == ["--poll-hash"]:
        asyncio.run(poll_hash(sys.argv[2], sys.argv[3]))
        return 0
    with tempfile.TemporaryDirectory(prefix="facestream-probe-") as tmp:
        report = asyncio.run(main_async(Path(tmp)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "security.json").write_text(json.dumps(report, indent=2))
    print(f"{'case':<44}{'checks':>7}{'5xx':>6}{'violations':>12}")
    failed = 0
    for name, row in sorted(report["table"].items()):
        print(f"{name:<44}{row['checks']:>7}{row['5xx']:>6}{row['violations']:>12}")
        failed += row["violations"]
    slow = report["slow clients"]
    for name in ("unfinished headers", "stream viewers that never read",
                 "bodies that never arrive", "one address opening 300"):
        r = slow[name]
        print(f"  {name}: {r['dropped']}/{r['clients']} dropped ({r['refused_at_once']} "
              f"refused at once), the last after {r['last_dropped_s']} s")
    print(f"  GET /hash meanwhile: p50 {slow['hash_p50_ms']:.1f} ms, p99 "
          f"{slow['hash_p99_ms']:.1f} ms over {slow['hash_reads']} reads")
    print(f"  SIGKILL mid-write: {report['kill']['acknowledged']} enrollments acknowledged, "
          f"{report['kill']['lost']} lost")
    print(f"  credentials found in outputs: {report['credentials']['found'] or 'none'}")
    r = report["worker restart"]
    print(f"  worker killed: answers while recovering {r['answers']}, back to ok after "
          f"{r['recovered_s']} s")
    for name, line in report["disks"].items():
        print(f"  {name}: {line}")
    print(f"  full disk: {report['full disk']}")
    print(f"  every HTTP status seen: "
          f"{ {k: v for k, v in report['statuses'].items() if k} }")
    print(f"wrote {RESULTS / 'security.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
