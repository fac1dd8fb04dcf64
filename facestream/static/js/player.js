// The H.264 live view (the default; ?video=mjpeg asks for MJPEG): the camera's video from
// the /video websocket into Media Source Extensions, with the boxes and names drawn by the
// page over the very frame they belong to (each frame's faces come with its timestamp).
// The player stays at the live edge (a viewer never falls further and further behind): it
// acknowledges what it receives, so the server sends nothing new while its link (or a buffer
// on the way) has not delivered what went before, and moves it to the low tier when the full
// one does not fit (a new init segment: the player starts over with it). A hidden tab
// closes the socket, so it receives nothing. live.js falls back to MJPEG when this is off or
// cannot play.

import { $ } from "./dom.js";
import { cameraPath } from "./state.js";

/** How far behind the newest frame the player may fall before it jumps to it (s). */
const MAX_LAG_S = 0.8;
/** Closer than this to the newest frame (s), the player plays a little slower until it is
 *  not: a frame decoded a little late (a busy phone, a busy machine) is then still shown,
 *  not dropped. Frames come the moment they are encoded, so without it the player ran on
 *  the edge: 18-23 of 25 frames a second presented at 1080p here, where it showed all. */
const MIN_LAG_S = 0.15;
const SLOWER = 0.95;
/** Video kept behind the playing position (s): the rest is freed. */
const KEEP_S = 10;
/** Box colours, as the MJPEG overlay has them (overlay.py). */
const KNOWN = "rgb(60 200 80)";
const UNKNOWN = "rgb(255 165 0)";

/** Where the choice of view is remembered in this browser ("h264" or "mjpeg"). */
const VIEW_KEY = "facestream.view";

/** Whether this browser can play the H.264 view (Media Source Extensions). */
export const videoPlayable = () => "MediaSource" in window;

/** Whether the H.264 view is wanted: ?video=mjpeg|h264, else the choice remembered here
 *  (H.264 by default), where this browser can play it. */
export function videoWanted() {
  const asked = new URLSearchParams(location.search).get("video")
    || localStorage.getItem(VIEW_KEY);
  return asked !== "mjpeg" && videoPlayable();
}

/** Remember the view chosen; it replaces the page's ?video= parameter, if any. */
export function chooseView(h264) {
  localStorage.setItem(VIEW_KEY, h264 ? "h264" : "mjpeg");
  const url = new URL(location.href);
  if (url.searchParams.has("video")) {
    url.searchParams.delete("video");
    history.replaceState(history.state, "", url);
  }
}

/**
 * A camera's video (`path`: its /video websocket) in a <video> with its <canvas> overlay.
 * `failed()` is called when it cannot play (the caller falls back to MJPEG).
 */
export function play(video, canvas, path, failed) {
  const query = `?ack=1${slowLink() ? "&tier=low" : ""}`;
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}${query}`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const opened = performance.now();
  const s = { video, canvas, ws, source: null, buffer: null, queue: [], frames: [], started: false,
              failed, timer: null, on: true, received: 0, opened };
  ws.addEventListener("message", (ev) => received(s, ev.data));
  ws.addEventListener("close", () => {
    if (s.on && !s.started) failed();
  });
  s.timer = setInterval(() => keepLive(s), 250);
  video.onerror = () => { if (s.on) failed(); };
  video.hidden = false;
  canvas.hidden = false;
  video.dataset.frames = "0";
  video.dataset.path = path;
  video.requestVideoFrameCallback((now, meta) => presented(s, meta));
  return s;
}

/** Stop a player (`play()`'s answer): the socket closes, the element lets go. */
export function stop(s) {
  if (!s || !s.on) return;
  s.on = false;
  clearInterval(s.timer);
  s.ws.close();
  s.video.removeAttribute("src");
  if (s.objectUrl) URL.revokeObjectURL(s.objectUrl);
  s.video.load();
  s.video.hidden = true;
  s.canvas.hidden = true;
}

// -- the live view's player (live.js) -------------------------------------------------------

let session = null;

/** Start (or restart) the video of the camera shown; `failed()` is called if it cannot play. */
export function startVideo(failed) {
  stopVideo();
  session = play($("video"), $("overlay"), cameraPath("video"), failed);
}

export function stopVideo() {
  stop(session);
  session = null;
}

/** Whether the browser says its link is slow (or saving data): start on the low tier. */
function slowLink() {
  const c = navigator.connection;
  return Boolean(c && (c.saveData || ["slow-2g", "2g", "3g"].includes(c.effectiveType)));
}

function received(s, data) {
  if (typeof data === "string") {
    const msg = JSON.parse(data);
    if (msg.type === "init") {
      s.video.dataset.tier = msg.tier || "full";
      s.video.dispatchEvent(new CustomEvent("tier", { detail: s.video.dataset.tier }));
      open(s, msg.codec);
      s.lastFaces = [];
      s.toLive = Boolean(msg.passthrough);
      s.video.dataset.passthrough = s.toLive ? "1" : "0";
    }
    else if (msg.type === "frame") {
      // Without faces: those of the frame before (they change only as recognition looks).
      if (msg.faces === undefined) msg.faces = s.lastFaces || [];
      s.lastFaces = msg.faces;
      s.burst = Boolean(msg.burst);
      s.frames.push(msg);
      if (s.frames.length > 100) s.frames.splice(0, s.frames.length - 100);
    }
    return;
  }
  s.received += data.byteLength;
  if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: "ack", bytes: s.received }));
  s.queue.push(data);
  append(s);
}

function open(s, codec) {
  const mime = `video/mp4; codecs="${codec}"`;
  if (!MediaSource.isTypeSupported(mime)) {
    s.failed();
    return;
  }
  // A new init segment (the other tier, a new picture size): a new timeline from here.
  const source = new MediaSource();
  s.source = source;
  s.buffer = null;
  s.queue = [];
  s.frames = [];
  s.started = false;
  source.addEventListener("sourceopen", () => {
    s.buffer = source.addSourceBuffer(mime);
    s.buffer.addEventListener("updateend", () => append(s));
    append(s);
  }, { once: true });
  if (s.objectUrl) URL.revokeObjectURL(s.objectUrl);
  s.objectUrl = URL.createObjectURL(source);
  s.video.src = s.objectUrl;
}

/** Append what arrived, one buffer at a time (a SourceBuffer takes one append at once). */
function append(s) {
  const b = s.buffer;
  if (!b || b.updating || !s.on) return;
  if (!s.queue.length) {
    toLiveEdge(s, b);
    return;
  }
  try {
    b.appendBuffer(s.queue.shift());
  } catch {
    s.failed();
    return;
  }
  if (!s.started && b.buffered.length) {
    s.started = true;
    s.video.currentTime = b.buffered.start(0);
    s.video.play().catch(() => { /* muted autoplay; a refusal leaves the first frame */ });
  }
}

/**
 * A passed-through camera's stream starts with the frames since the camera's last keyframe
 * (the server cannot ask the camera for one; their messages say `burst`), a second or so:
 * once they are in and a live one too, play from the newest, not that far behind (keepLive
 * only jumps beyond MAX_LAG_S).
 */
function toLiveEdge(s, b) {
  if (!s.toLive || s.burst || !s.started || !b.buffered.length) return;
  s.toLive = false;
  const end = b.buffered.end(b.buffered.length - 1);
  if (end - s.video.currentTime > 0.1) s.video.currentTime = end - 0.05;
}

/** Stay at the live edge, and free what was played. */
function keepLive(s) {
  const b = s.buffer;
  if (!b || !b.buffered.length || b.updating) return;
  const video = s.video;
  const end = b.buffered.end(b.buffered.length - 1);
  const lag = end - video.currentTime;
  if (lag > MAX_LAG_S) video.currentTime = end - 0.05;
  video.playbackRate = lag < MIN_LAG_S ? SLOWER : 1;
  const start = b.buffered.start(0);
  if (video.currentTime - start > KEEP_S * 2) b.remove(start, video.currentTime - KEEP_S);
  if (video.paused && s.started) video.play().catch(() => {});
}

/** Each frame shown: draw its faces (those sent with the frame's own timestamp). */
function presented(s, meta) {
  if (!s.on) return;
  const video = s.video;
  video.dataset.frames = String(Number(video.dataset.frames) + 1);
  // From asking for the video to its first picture on the screen (ms), for tests.
  if (video.dataset.frames === "1") video.dataset.startMs = (performance.now() - s.opened).toFixed(0);
  const t = meta.mediaTime;
  let best = null;
  for (const f of s.frames) if (Math.abs(f.t - t) < 0.021 || (f.t <= t && (!best || f.t > best.t))) best = f;
  draw(s, best && t - best.t < 0.2 ? best : null);
  if (best && Math.abs(best.t - t) < 0.021) measure(s, Date.now() / 1000 - best.at);
  video.requestVideoFrameCallback((now, m) => presented(s, m));
}

/** From capture to this frame on the screen (s): the median of the latest 50, on the
 *  element for tests and benchmarks (data-latency). */
function measure(s, latency) {
  s.latencies = (s.latencies || []).concat(latency).slice(-50);
  const sorted = [...s.latencies].sort((a, b) => a - b);
  s.video.dataset.latency = sorted[Math.floor(sorted.length / 2)].toFixed(3);
  s.video.dataset.last = latency.toFixed(3);
}

function draw(s, frame) {
  const { video, canvas } = s;
  const rect = video.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  canvas.style.height = `${rect.height}px`;
  canvas.width = Math.round(rect.width * ratio);
  canvas.height = Math.round(rect.height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!frame || !frame.faces.length) {
    canvas.dataset.faces = "[]";
    return;
  }
  // The picture is letterboxed in the element (object-fit: contain).
  const [w, h] = frame.size;
  const scale = Math.min(canvas.width / w, canvas.height / h);
  const ox = (canvas.width - w * scale) / 2;
  const oy = (canvas.height - h * scale) / 2;
  ctx.lineWidth = Math.max(2, 2 * ratio);
  ctx.font = `${Math.round(14 * ratio)}px sans-serif`;
  ctx.textBaseline = "bottom";
  const drawn = [];
  for (const f of frame.faces) {
    const [x, y, bw, bh] = f.box;
    const color = f.known ? KNOWN : UNKNOWN;
    const label = f.known && f.name ? f.name : "unknown";
    const px = ox + x * scale;
    const py = oy + y * scale;
    ctx.strokeStyle = color;
    ctx.strokeRect(px, py, bw * scale, bh * scale);
    const tw = ctx.measureText(label).width + 8 * ratio;
    const th = 18 * ratio;
    ctx.fillStyle = color;
    ctx.fillRect(px, Math.max(0, py - th), tw, th);
    ctx.fillStyle = "#000";
    ctx.fillText(label, px + 4 * ratio, Math.max(th, py) - 3 * ratio);
    drawn.push({ label, box: [px / canvas.width, py / canvas.height, (bw * scale) / canvas.width, (bh * scale) / canvas.height] });
  }
  canvas.dataset.faces = JSON.stringify(drawn);
}

/** Whether the video is playing or being started. */
export const videoOn = () => session !== null;
