#!/usr/bin/env python3
"""MSE over a websocket against WebRTC for the live view, measured: why the dashboard plays
H.264 through Media Source Extensions (issue 20).

One H.264 stream, encoded once as facestream encodes a camera (libx264 with
``mp4.x264_options``, 2 Mbit/s, a keyframe every 2 s and one for each viewer that joins), from
the shared crowd clip scaled to ``--size`` and looping at 25 fps, goes to Debian's Chromium
(headless, as the tests drive it) two ways:

* **mse**: muxed into fragmented MP4 as facestream's passthrough muxes a camera's H.264
  (``mp4.Passthrough``), over a websocket, into a ``MediaSource``; the page keeps to the live
  edge (as the dashboard's player does, more simply);
* **webrtc**: the same packets to an ``RTCPeerConnection`` per page (aiortc: each packet cut
  into RTP packets and encrypted (SRTP) for each viewer; nothing encoded again), over UDP on
  this machine's addresses.

Each frame carries its capture time as a row of black and white blocks at the top of the
picture; each page reads them from the frame it presents (``requestVideoFrameCallback``,
drawn onto a canvas) against its own clock (the same machine): the latency from capture to
the presented frame. Reported per way, with 1 and then 10 pages open: frames presented a
second and latency (medians over the pages), the megabits a second each page received (its
transport's byte counters), and this process's CPU (the encoder, shared, plus what each viewer
costs) beside the same process with the encoder running and no viewer. Then one page each
way on an emulated slow link (``--throttle-kbps``): both ways send the one 2 Mbit/s
encoding as it is, with nothing of the dashboard's window and low tier (video.py), to show
what a shared encoding does to each on such a link.

    python bench/webrtc_compare.py [--seconds 12] [--size 1280x720] [--pages 1 10]
                                   [--throttle-kbps 1000]

Writes bench/results/webrtc.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

import av
import cv2
import numpy as np
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestream.mp4 import TIMEBASE, Passthrough, x264_options  # noqa: E402

CROWD = REPO.parent / "shared" / "data" / "video" / "facenet_pytorch" / "video.mp4"
TICKS = os.sysconf("SC_CLK_TCK")
FPS: Final = 25
#: The capture time (ms, modulo 2**32) as 32 blocks of BLOCK px along the top of each frame.
BLOCK: Final = 16
BITS: Final = 32
KEYFRAME_S: Final = 2.0
CHROMIUM_ARGS: Final = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update",
    # WebRTC between the page and this process on one machine: host candidates as they
    # are (not mDNS names aiortc would have to resolve), loopback included.
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Ten pages in one headless browser all play: none counts as hidden.
    "--disable-renderer-backgrounding", "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]


def cpu_seconds() -> float:
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load_clip(size: tuple[int, int], frames: int = 250) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CROWD))
    out = []
    while len(out) < frames:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    cap.release()
    return out


def stamp(image: np.ndarray, ms: int) -> np.ndarray:
    image = image.copy()
    for bit in range(BITS):
        on = (ms >> (BITS - 1 - bit)) & 1
        image[:BLOCK, bit * BLOCK:(bit + 1) * BLOCK] = 235 if on else 16
    return image


class Camera:
    """The clip at 25 fps, encoded once; each subscriber gets every packet (Annex B, 90 kHz
    pts) from a keyframe on, through a bounded queue (a full one drops)."""

    def __init__(self, frames: list[np.ndarray], bitrate_kbps: int = 2000) -> None:
        self.frames = frames
        height, width = frames[0].shape[:2]
        self.size = (width, height)
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height, self.codec.pix_fmt = width, height, "yuv420p"
        self.codec.time_base, self.codec.framerate = TIMEBASE, Fraction(FPS)  # rate control
        self.codec.bit_rate = bitrate_kbps * 1000
        self.codec.options = x264_options(bitrate_kbps, "ultrafast")
        self.queues: list[asyncio.Queue[av.Packet]] = []
        self.key_wanted = True
        self.encoded = 0

    def subscribe(self) -> asyncio.Queue[av.Packet]:
        queue: asyncio.Queue[av.Packet] = asyncio.Queue(maxsize=50)
        self.queues.append(queue)
        self.key_wanted = True
        return queue

    def unsubscribe(self, queue: asyncio.Queue[av.Packet]) -> None:
        self.queues.remove(queue)

    def _encode(self, n: int, keyframe: bool) -> list[av.Packet]:
        image = stamp(self.frames[n % len(self.frames)], int(time.time() * 1000) % 2**BITS)
        frame = av.VideoFrame.from_numpy_buffer(
            cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
        frame.pts, frame.time_base = round(n * 90_000 / FPS), TIMEBASE
        if keyframe:
            frame.pict_type = av.video.frame.PictureType.I
        return list(self.codec.encode(frame))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        start, last_key = time.monotonic(), -KEYFRAME_S
        n = 0
        while True:
            due = start + n / FPS
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            keyframe = self.key_wanted or n / FPS - last_key >= KEYFRAME_S
            if keyframe:
                self.key_wanted, last_key = False, n / FPS
            for packet in await loop.run_in_executor(None, self._encode, n, keyframe):
                packet.time_base = TIMEBASE
                for queue in self.queues:
                    if not queue.full():
                        queue.put_nowait(packet)
            self.encoded += 1
            n += 1


async def mse_socket(request: web.Request) -> web.WebSocketResponse:
    """The packets as fragmented MP4, as facestream's passthrough sends a camera's H.264."""
    camera: Camera = request.app["camera"]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    queue = camera.subscribe()
    muxer = Passthrough(*camera.size, b"", FPS)

    async def send() -> None:
        sent_init = False
        while True:
            packet = await queue.get()
            fragments = muxer.mux(bytes(packet), packet.pts, packet.is_keyframe)
            if muxer.init is not None and not sent_init:
                await ws.send_json({"codec": muxer.codec})
                await ws.send_bytes(muxer.init)
                sent_init = True
            for fragment in fragments:
                await ws.send_bytes(fragment.data)

    sender = asyncio.create_task(send())
    try:
        async for _ in ws:  # until the page closes
            pass
    finally:
        sender.cancel()
        camera.unsubscribe(queue)
        muxer.close()
    return ws


async def webrtc_offer(request: web.Request) -> web.Response:
    """An RTCPeerConnection answering the page's offer, sending it the packets as they are."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamTrack

    camera: Camera = request.app["camera"]

    class Packets(MediaStreamTrack):
        kind = "video"

        queue: asyncio.Queue[av.Packet] | None = None

        async def recv(self) -> av.Packet:  # type: ignore[override]
            if self.queue is None:  # the sender starts (connected): a keyframe, now
                self.queue = camera.subscribe()
            return await self.queue.get()

        def stop(self) -> None:
            if self.queue in camera.queues:
                camera.unsubscribe(self.queue)
            super().stop()

    offer = await request.json()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # this machine only: no STUN
    request.app["peers"].add(pc)
    await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
    transceiver = next(t for t in pc.getTransceivers() if t.kind == "video")
    track = Packets()
    transceiver.sender.replaceTrack(track)
    transceiver.direction = "sendonly"
    await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


PAGE = """<!doctype html><meta charset=utf-8><body style="margin:0;background:#000">
<video id=v autoplay muted playsinline></video><canvas id=c hidden></canvas>
<script type=module>
const BLOCK = %(block)d, BITS = %(bits)d;
const mode = new URLSearchParams(location.search).get("mode");
const v = document.getElementById("v"), c = document.getElementById("c");
const g = c.getContext("2d", {willReadFrequently: true});
window.stats = {presented: 0, latency: [], bytes: 0};
function onFrame(now, meta) {
  stats.presented++;
  if (stats.presented %% 5 === 0 && v.videoWidth) {
    c.width = BITS * BLOCK; c.height = BLOCK;
    g.drawImage(v, 0, 0, BITS * BLOCK, BLOCK, 0, 0, BITS * BLOCK, BLOCK);
    const d = g.getImageData(0, 0, BITS * BLOCK, BLOCK).data;
    let code = 0;
    for (let i = 0; i < BITS; i++) {
      const at = ((BLOCK >> 1) * BITS * BLOCK + i * BLOCK + (BLOCK >> 1)) * 4;
      code = code * 2 + (d[at] > 128 ? 1 : 0);
    }
    stats.latency.push(((Date.now() %% 2 ** BITS) - code + 2 ** BITS) %% 2 ** BITS);
  }
  v.requestVideoFrameCallback(onFrame);
}
v.requestVideoFrameCallback(onFrame);
if (mode === "webrtc") {
  const pc = new RTCPeerConnection();
  // H.264 only (the packets are H.264), packetization mode 1 as aiortc sends it.
  pc.addTransceiver("video", {direction: "recvonly"}).setCodecPreferences(
    RTCRtpReceiver.getCapabilities("video").codecs.filter((c) => c.mimeType === "video/H264"
      && /packetization-mode=1/.test(c.sdpFmtpLine) && /42e01f/.test(c.sdpFmtpLine)));
  pc.ontrack = (ev) => { v.srcObject = new MediaStream([ev.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((done) => {
    if (pc.iceGatheringState === "complete") done();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && done();
  });
  const answer = await (await fetch("/offer", {method: "POST",
    body: JSON.stringify(pc.localDescription)})).json();
  await pc.setRemoteDescription(answer);
  setInterval(async () => {
    for (const r of (await pc.getStats()).values()) {
      if (r.type === "transport") stats.bytes = r.bytesReceived;
    }
  }, 500);
} else {
  const ms = new MediaSource();
  v.src = URL.createObjectURL(ms);
  await new Promise((done) => ms.addEventListener("sourceopen", done, {once: true}));
  const ws = new WebSocket(`ws://${location.host}/mse`);
  ws.binaryType = "arraybuffer";
  let sb = null;
  const queue = [];
  const pump = () => {
    if (!sb || sb.updating || !queue.length) return;
    sb.appendBuffer(queue.shift());
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      sb = ms.addSourceBuffer(`video/mp4; codecs="${JSON.parse(ev.data).codec}"`);
      sb.addEventListener("updateend", () => {
        const b = v.buffered;
        if (b.length) {
          const end = b.end(b.length - 1);
          if (v.currentTime < b.start(b.length - 1) || end - v.currentTime > 0.3) {
            v.currentTime = Math.max(b.start(b.length - 1), end - 0.05);
          }
          v.play().catch(() => {});
        }
        pump();
      });
      return;
    }
    stats.bytes += ev.data.byteLength;
    queue.push(ev.data);
    pump();
  };
}
</script>""" % {"block": BLOCK, "bits": BITS}


async def page(_: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def measure(base: str, mode: str, pages: int, seconds: float, browser: Any,
                  throttle_kbps: int = 0) -> dict[str, Any]:
    # A context (a window) per page: a page behind another in one window presents nothing.
    contexts = [await browser.new_context(viewport={"width": 1300, "height": 760})
                for _ in range(pages)]
    try:
        opened = [await context.new_page() for context in contexts]
        for p in opened:
            if throttle_kbps:  # Chromium's emulation, as video_benchmark.py's slow link
                cdp = await p.context.new_cdp_session(p)
                await cdp.send("Network.enable")
                await cdp.send("Network.emulateNetworkConditions", {
                    "offline": False, "latency": 100,
                    "downloadThroughput": throttle_kbps * 1000 / 8,
                    "uploadThroughput": throttle_kbps * 1000 / 8})
            await p.goto(f"{base}/?mode={mode}")
        await asyncio.sleep(4.0)  # connected and playing
        before = [await p.evaluate("({...stats, latency: stats.latency.length})")
                  for p in opened]
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        after = [await p.evaluate("({...stats})") for p in opened]
        elapsed = time.monotonic() - t0
        cpu = (cpu_seconds() - cpu0) / elapsed
    finally:
        for context in contexts:
            await context.close()
    fps = [(a["presented"] - b["presented"]) / elapsed for a, b in zip(after, before)]
    mbit = [8 * (a["bytes"] - b["bytes"]) / elapsed / 1e6 for a, b in zip(after, before)]
    latency = [ms / 1000 for a, b in zip(after, before) for ms in a["latency"][b["latency"]:]
               if ms < 60_000]  # a misread stamp is off by hours
    return {"mode": mode, "pages": pages, "cpu_cores": round(cpu, 3),
            "presented_fps": round(statistics.median(fps), 1),
            "mbit_per_page": round(statistics.median(mbit), 2),
            "latency_s": round(statistics.median(latency), 3) if latency else None,
            "latency_p90_s": round(statistics.quantiles(latency, n=10)[-1], 3)
            if len(latency) > 10 else None}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    size = tuple(int(v) for v in args.size.split("x"))
    camera = Camera(load_clip(size))  # type: ignore[arg-type]
    app = web.Application()
    app["camera"], app["peers"] = camera, set()
    app.router.add_get("/", page)
    app.router.add_get("/mse", mse_socket)
    app.router.add_post("/offer", webrtc_offer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    encoder = asyncio.create_task(camera.run())
    rows: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(3.0)
        cpu0, t0 = cpu_seconds(), time.monotonic()
        await asyncio.sleep(args.seconds)
        idle = (cpu_seconds() - cpu0) / (time.monotonic() - t0)
        print(f"{args.size}: the encoder alone, no viewer: {idle:.2f} cores", flush=True)
        rows.append({"mode": "encoder only", "pages": 0, "cpu_cores": round(idle, 3)})
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                               headless=True, args=CHROMIUM_ARGS)
            runs = [(pages, 0) for pages in args.pages]
            if args.throttle_kbps:
                runs.append((1, args.throttle_kbps))
            for pages, throttle in runs:
                for mode in ("mse", "webrtc"):
                    row = await measure(base, mode, pages, args.seconds, browser, throttle)
                    for pc in list(app["peers"]):
                        await pc.close()
                    app["peers"].clear()
                    row["throttle_kbps"] = throttle
                    rows.append(row)
                    latency = (f"{row['latency_s']:.3f} s (p90 {row['latency_p90_s']:.3f})"
                               if row["latency_s"] is not None else "none read")
                    link = f" at {throttle} kbit/s" if throttle else ""
                    print(f"  {mode:>6} x{pages:<2}{link} {row['presented_fps']:5.1f} fps "
                          f"presented, capture to screen {latency}, "
                          f"{row['mbit_per_page']:.2f} Mbit/s per page, "
                          f"{row['cpu_cores']:.2f} cores", flush=True)
                    await asyncio.sleep(2.0)
            await browser.close()
    finally:
        encoder.cancel()
        await runner.cleanup()
    return {"size": args.size, "seconds": args.seconds, "rows": rows,
            "loadavg": os.getloadavg()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--pages", type=int, nargs="*", default=[1, 10])
    p.add_argument("--throttle-kbps", type=int, default=1000,
                   help="then one page each way on a link this slow (Chromium's emulation, "
                        "100 ms each way; it throttles WebRTC too); 0: not")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "webrtc.json")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
