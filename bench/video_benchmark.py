#!/usr/bin/env python3
"""H.264 against MJPEG for the live view: what each viewer receives and what the server
spends, with 0, 1 and 10 viewers, for a 640x480 and a 1080p camera (issue 20).

A real server (``python -m facestream``, accounts off, 2 workers) plays a clip made from
the shared 1080p crowd video (``video/facenet_pytorch/video.mp4``: many faces walking
toward the camera), scaled to each size, looping at 25 fps, with the default config: a
1080p camera's stream is scaled to 1280x720 (``camera.max_side``, ``video.max_side``), for
MJPEG and H.264 alike, as the issue measured it. For each mode, N viewers
in this process read for ``--seconds``:

* MJPEG: N readers of ``GET /streaming``, counting bytes and frames (multipart parts);
* H.264: N clients of the ``GET /video`` websocket, counting bytes (binary and text: the
  init segment, the fragments and each frame's faces) and fragments.

Reported per mode: Mbit/s received per viewer (median), frames received per second per
viewer (median), and the server process's CPU (user + system, from /proc) in cores over
the same window, with the idle server (0 viewers: no H.264 encoding at all) beside it.
Then, with ``--browser``, Debian's Chromium (headless, as the tests drive it) opens the
dashboard once per size, alone, then again on an emulated 1 Mbit/s link: the frames it
presents a second (``requestVideoFrameCallback``), the latency from capture to the presented
frame (the page's latest, sampled every 0.5 s: the frame's wall-clock capture time, sent with
it, against the page's clock on the same machine; median and worst), everything the page
received (all HTTP and websocket traffic, Mbit/s) and the video tier it ended on.

``--rtsp`` adds a 1280x720 H.264 RTSP camera (GStreamer's RTSP server, as the tests run it):
its own H.264 passed through to the video viewers (and 10 MJPEG viewers beside it), then
decoded and encoded again (``video.passthrough = false``), with 0, 1 and 10 viewers.

    python bench/video_benchmark.py [--seconds 15] [--sizes 640x480 1920x1080] [--browser]
                                    [--rtsp]

Writes bench/results/video.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import Server  # noqa: E402

#: A part's capture time, in the MJPEG stream.
STAMP = re.compile(rb"X-Timestamp: ([0-9.]+)")
CROWD = REPO.parent / "shared" / "data" / "video" / "facenet_pytorch" / "video.mp4"
TICKS = os.sysconf("SC_CLK_TCK")


def make_clip(size: tuple[int, int], out: Path) -> Path:
    """The crowd clip scaled to ``size`` (MJPEG in AVI: decoded cheaply, like a camera)."""
    cap = cv2.VideoCapture(str(CROWD))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, size)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    cap.release()
    writer.release()
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def mjpeg_viewer(session: aiohttp.ClientSession, url: str, stop: float
                       ) -> tuple[int, int, list[float]]:
    """Bytes and frames received, and each frame's latency from capture to here (its
    part's X-Timestamp)."""
    received, frames, latencies = 0, 0, []
    async with session.get(url + "/streaming") as resp:
        while time.monotonic() < stop:
            chunk = await resp.content.readany()
            if not chunk:
                break
            received += len(chunk)
            frames += chunk.count(b"--facestreamframe")
            now = time.time()
            latencies += [now - float(at) for at in STAMP.findall(chunk)]
    return received, frames, latencies


async def video_viewer(session: aiohttp.ClientSession, url: str, stop: float
                       ) -> tuple[int, int, list[float]]:
    """Bytes and fragments received, and each fragment's latency from capture to here (its
    frame message's ``at``)."""
    received, fragments, latencies = 0, 0, []
    async with session.ws_connect(url.replace("http", "ws") + "/video", compress=15) as ws:
        binary, at = 0, None
        while time.monotonic() < stop:
            try:
                msg = await asyncio.wait_for(ws.receive(), max(0.1, stop - time.monotonic()))
            except TimeoutError:
                break
            if msg.type == aiohttp.WSMsgType.BINARY:
                received += len(msg.data)
                binary += 1
                fragments = binary - 1  # the first is the init segment
                if at is not None:
                    latencies.append(time.time() - at)
                    at = None
            elif msg.type == aiohttp.WSMsgType.TEXT:
                received += len(msg.data)
                message = json.loads(msg.data)
                at = message.get("at") if message.get("type") == "frame" else None
            else:
                break
    return received, fragments, latencies


async def measure(server: Server, session: aiohttp.ClientSession, mode: str, viewers: int,
                  seconds: float) -> dict[str, Any]:
    warm = 3.0
    stop = time.monotonic() + warm + seconds
    viewer = mjpeg_viewer if mode == "mjpeg" else video_viewer
    tasks = [asyncio.create_task(viewer(session, server.url, stop)) for _ in range(viewers)]
    await asyncio.sleep(warm)
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    results = await asyncio.gather(*tasks) if tasks else []
    if not tasks:
        await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(server.proc.pid) - cpu0) / elapsed
    span = warm + seconds
    # Over the whole span, warm-up included (a viewer's start is part of what it receives).
    mbit = [8 * b / span / 1e6 for b, _, _ in results]
    fps = [f / span for _, f, _ in results]
    latencies = [s for _, _, lat in results for s in lat]
    return {"mode": mode, "viewers": viewers, "cpu_cores": round(cpu, 3),
            "mbit_per_viewer": round(statistics.median(mbit), 2) if mbit else 0.0,
            "fps_per_viewer": round(statistics.median(fps), 1) if fps else 0.0,
            "latency_s": round(statistics.median(latencies), 3) if latencies else None}


async def in_browser(server: Server, seconds: float, throttle_kbps: int = 0
                     ) -> dict[str, Any]:
    """One dashboard in headless Chromium: frames presented a second, latency (the median,
    and the worst of the page's latest frame sampled every 0.5 s), everything the page
    received (Mbit/s: HTTP bodies and every websocket's frames, from Chromium's DevTools
    events) and the tier it ended on; ``throttle_kbps``: on a link that slow (Chromium's
    network emulation, 100 ms each way)."""
    from playwright.async_api import async_playwright

    from tests.browser_helpers import launch_chromium

    received = [0]

    def http(event: dict[str, Any]) -> None:
        received[0] += int(event.get("encodedDataLength") or 0)

    def frame(event: dict[str, Any]) -> None:
        response = event["response"]
        data = response.get("payloadData", "")
        # Binary frames come base64-encoded (opcode 2).
        received[0] += len(data) * 3 // 4 if response.get("opcode") == 2 else len(data)

    async with async_playwright() as playwright:
        browser = await launch_chromium(playwright)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            cdp = await page.context.new_cdp_session(page)
            await cdp.send("Network.enable")
            cdp.on("Network.dataReceived", http)
            cdp.on("Network.webSocketFrameReceived", frame)
            if throttle_kbps:
                await cdp.send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": 100,
                    "downloadThroughput": throttle_kbps * 1000 / 8,
                    "uploadThroughput": throttle_kbps * 1000 / 8})
            await page.goto(server.url + "/")
            await page.wait_for_function(
                "() => Number(document.getElementById('video').dataset.frames) > 10",
                timeout=30_000)
            read = ("() => { const v = document.getElementById('video');"
                    " return [Number(v.dataset.frames), Number(v.dataset.last), v.dataset.tier];"
                    " }")
            n0, _, _ = await page.evaluate(read)
            cpu0, t0, bytes0 = cpu_seconds(server.proc.pid), time.monotonic(), received[0]
            lags = []
            while time.monotonic() - t0 < seconds:
                await asyncio.sleep(0.5)
                lags.append((await page.evaluate(read))[1])
            n1, _, tier = await page.evaluate(read)
            elapsed = time.monotonic() - t0
            return {"mode": f"browser {throttle_kbps} kbit/s" if throttle_kbps else "browser",
                    "viewers": 1, "presented_fps": round((n1 - n0) / elapsed, 1),
                    "latency_s": round(statistics.median(lags), 3),
                    "latency_max_s": round(max(lags), 3), "tier": tier,
                    "page_mbit": round(8 * (received[0] - bytes0) / elapsed / 1e6, 2),
                    "cpu_cores": round((cpu_seconds(server.proc.pid) - cpu0) / elapsed, 3)}
        finally:
            await browser.close()


#: The modes measured on each camera: (mode, viewers).
MODES = (("idle", 0), ("mjpeg", 1), ("h264", 1), ("mjpeg", 10), ("h264", 10))


async def run_camera(name: str, source: Path | str, config: str, seconds: float, cwd: Path,
                     browser: bool, modes: tuple[tuple[str, int], ...] = MODES
                     ) -> list[dict[str, Any]]:
    """A real server on ``source`` with ``config`` (config.toml), each mode measured."""
    cwd.mkdir()
    (cwd / "config.toml").write_text(config)
    server = Server(source, cwd / "data", cwd)  # type: ignore[arg-type]
    rows = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as s:
            await server.wait_ready(s)
            await asyncio.sleep(3.0)
            for mode, viewers in modes:
                row = await measure(server, s, mode, viewers, seconds)
                row["camera"] = name
                rows.append(row)
                latency = (f"  {row['latency_s'] * 1000:4.0f} ms capture to here"
                           if row["latency_s"] is not None else "")
                print(f"  {name:>9} {mode:>5} x{viewers:<2}  {row['mbit_per_viewer']:7.2f} "
                      f"Mbit/s  {row['fps_per_viewer']:5.1f} fps  {row['cpu_cores']:.2f} "
                      f"cores{latency}", flush=True)
                await asyncio.sleep(2.0)
            for throttle in ((0, 1000) if browser else ()):
                row = await in_browser(server, seconds, throttle)
                row["camera"] = name
                rows.append(row)
                print(f"  {name:>9} Chromium{f' at {throttle} kbit/s' if throttle else ''}: "
                      f"{row['presented_fps']:5.1f} frames presented a second, "
                      f"{row['latency_s'] * 1000:.0f} ms from capture to screen (worst "
                      f"{row['latency_max_s'] * 1000:.0f}), {row['page_mbit']:.2f} Mbit/s "
                      f"received in all, {row['tier']} tier, server {row['cpu_cores']:.2f} "
                      "cores", flush=True)
    finally:
        server.stop()
    return rows


async def run_rtsp(seconds: float, tmp: Path, browser: bool) -> list[dict[str, Any]]:
    """A 1280x720 H.264 RTSP camera (GStreamer's RTSP server, as the tests run it; the
    talking head drifting over a backdrop, a keyframe a second): its own H.264 passed
    through, then (``video.passthrough = false``) decoded and encoded again."""
    from tests.rtsp_camera import make_clip, rtsp_camera

    clip = make_clip(tmp / "rtsp-1280x720.mp4", 1280, 720, 160, seconds=5.0)
    rows = []
    with rtsp_camera(clip) as camera:
        for passthrough in (True, False):
            name = "rtsp pass" if passthrough else "rtsp enc"
            config = (f"[camera]\nmax_side = 1280\n[video]\n"
                      f"passthrough = {str(passthrough).lower()}\n")
            modes = (("idle", 0), ("h264", 1), ("h264", 10))
            rows += await run_camera(name, camera.url, config, seconds, tmp / name, browser,
                                     modes + ((("mjpeg", 10),) if passthrough else ()))
    return rows


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="facestream-video-") as tmp:
        print("camera     mode viewers  per viewer          server")
        for width, height in sizes:
            name = f"{width}x{height}"
            clip = make_clip((width, height), Path(tmp) / f"crowd-{name}.avi")
            rows += await run_camera(name, clip, "", args.seconds, Path(tmp) / name,
                                     args.browser)
        if args.rtsp:
            rows += await run_rtsp(args.seconds, Path(tmp), args.browser)
    return {"seconds": args.seconds, "rows": rows, "loadavg": os.getloadavg()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--sizes", nargs="*", default=["640x480", "1920x1080"],
                   help="the crowd clip at these sizes (none: only --rtsp)")
    p.add_argument("--browser", action="store_true",
                   help="also play it in headless Chromium: frames presented, latency")
    p.add_argument("--rtsp", action="store_true",
                   help="also a 1280x720 H.264 RTSP camera: passed through, then encoded")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "video.json")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
