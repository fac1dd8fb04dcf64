// The live view: the camera's stream (reconnecting with backoff when it fails) and who is in
// view. Who is in view is rebuilt when who changes; boxes (re-sent as they move) only redraw
// the crops. This module owns that state; the others read it through facesInView(),
// knownInView() and hasSignal().

import { $, h, shortHash, faceLabel } from "./dom.js";
import { api } from "./api.js";
import { act, notify } from "./ui.js";
import { cameraPath, shown } from "./state.js";
import { chooseForEnrollment, renderEnrollChoices } from "./enroll.js";
import { refreshGallery, renderSeenCards } from "./gallery.js";
import { askNotPerson } from "./samples.js";
import { chooseView, startVideo, stopVideo, videoOn, videoPlayable, videoWanted } from "./player.js";

// -- the stream ---------------------------------------------------------------------------

const stream = $("stream");
let streamRetry = 1000;
let streamTimer = null;
/** The H.264 view could not play here: MJPEG for the rest of this page's life. */
let videoBroken = false;

/** Load the stream of the camera shown again, after `delay` ms: H.264 when wanted and
 *  playable (player.js), else MJPEG. */
export function restartStream(delay = 0) {
  clearTimeout(streamTimer);
  showViewMode();
  if (videoWanted() && !videoBroken) {
    stream.hidden = true;
    stream.removeAttribute("src");  // no MJPEG download beside the video
    streamTimer = setTimeout(() => startVideo(videoFailed), delay);
    return;
  }
  stream.hidden = false;
  streamTimer = setTimeout(() => { stream.src = `${cameraPath("streaming")}?t=${Date.now()}`; }, delay);
}

/** The line under the picture: which view plays, the video's tier, and the other view. */
function showViewMode() {
  const line = $("video-mode");
  line.hidden = !videoPlayable() || videoBroken;
  const h264 = videoWanted() && !videoBroken;
  const tier = $("video").dataset.tier;
  $("video-mode-text").textContent = !h264 ? "MJPEG"
    : tier === "low" ? "H.264, lower quality: the link is slow" : "H.264";
  $("video-mode-switch").textContent = h264 ? "Use MJPEG" : "Use H.264";
}

$("video-mode-switch").addEventListener("click", () => {
  stopVideo();
  delete $("video").dataset.tier;
  chooseView(!(videoWanted() && !videoBroken));
  restartStream();
  document.dispatchEvent(new CustomEvent("viewchange"));
});
$("video").addEventListener("tier", showViewMode);

function videoFailed() {
  stopVideo();
  videoBroken = true;
  restartStream();
}

// A hidden tab receives no video: the socket closes, and opens again when it is shown.
document.addEventListener("visibilitychange", () => {
  if (!videoWanted() || videoBroken) return;
  if (document.hidden) stopVideo();
  else if (!videoOn()) restartStream();
});

function streamFailed() {
  if (stream.hidden) return;  // the H.264 view is shown
  $("stream-status").hidden = false;
  $("stream-status").textContent = `Stream interrupted; reconnecting in ${Math.round(streamRetry / 1000)} s…`;
  restartStream(streamRetry);
  streamRetry = Math.min(streamRetry * 2, 10000);
}

stream.addEventListener("error", streamFailed);
stream.addEventListener("load", () => {
  $("stream-status").hidden = true;
  streamRetry = 1000;
});


// -- who is in view ----------------------------------------------------------------------

const live = { faces: [], signal: true, who: null, known: new Set() };

/** The faces in view, largest first, as the server last sent them. */
export const facesInView = () => live.faces;
/** Whether somebody enrolled with this hash is in view. */
export const knownInView = (hash) => live.known.has(hash);
/** Whether the camera sent a picture lately. */
export const hasSignal = () => live.signal;

/** Who is in view now (from the websocket; empty when the camera changes). */
export function updateLive(faces, signal) {
  live.faces = faces;
  live.signal = signal;
  const who = JSON.stringify([signal, faces.map((f) => [f.hash, f.known, f.name])]);
  if (who !== live.who) {
    live.who = who;
    live.known = new Set(faces.filter((f) => f.known).map((f) => f.hash));
    renderInView();
    renderEnrollChoices();
    renderSeenCards();
  } else {
    for (const [i, f] of faces.entries()) {
      const details = $("inview").querySelector(`[data-index="${i}"] .sub`);
      if (details) details.textContent = faceDetails(f);
    }
  }
}

const faceDetails = (f) => (f.known ? `similarity ${Number(f.similarity).toFixed(2)}` : `not enrolled · ${shortHash(f.hash)}`);

/** How often a face's crop in the "In view" list is fetched again (ms). */
const CROP_REFRESH_MS = 10_000;
/** hash -> { img, path, at }: each face's crop element, kept across renders, so a list redrawn
 *  at every change of who is in view (a crowd: many a second) fetches each crop once. */
const crops = new Map();

/** The face as the worker cut it from the camera's frame (the stream has boxes drawn). */
function cropOf(hash) {
  const now = Date.now();
  const path = cameraPath(`hash/${encodeURIComponent(hash)}/crop`);
  const kept = crops.get(hash);
  if (kept && kept.path === path && now - kept.at < CROP_REFRESH_MS) return kept.img;
  const img = h("img", { class: "crop", testid: "inview-crop", alt: "", loading: "lazy",
                         src: `${path}?t=${now}` });
  crops.set(hash, { img, path, at: now });
  return img;
}

export function renderInView() {
  const list = $("inview");
  const faces = live.faces;
  const inView = new Set(faces.map((f) => f.hash));
  for (const hash of crops.keys()) if (!inView.has(hash)) crops.delete(hash);
  $("inview-count").textContent = faces.length ? `(${faces.length})` : "";
  if (!faces.length) {
    list.replaceChildren(h("li", { class: "empty" }, live.signal ? "Nobody in view" : "No camera signal"));
    return;
  }
  list.replaceChildren(...faces.map((f, i) => {
    const button = f.known
      ? h("button", { type: "button", class: "admin-only danger", testid: "not-button",
                      title: `Tell facestream this is not ${f.name}`,
                      onclick: (ev) => notThisPerson(f, ev.currentTarget) }, `Not ${f.name}`)
      : h("button", { type: "button", class: "admin-only", testid: "enroll-this",
                      onclick: () => chooseForEnrollment(f.hash) }, "Add…");
    return h("li", { class: f.known ? "known" : "unknown", testid: "inview-face", "data-hash": f.hash, "data-index": i },
      cropOf(f.hash),
      h("div", { class: "who" },
        h("span", { class: "face-name", testid: "inview-name" }, faceLabel(f)),
        h("span", { class: "sub" }, faceDetails(f))),
      button);
  }));
}


/** "Not X" of a face in view: says which of X's samples made the match, and removes it
 * only if asked; the face is kept as X's negative either way, so it is not named X again. */
async function notThisPerson(face, button) {
  const camera = shown.camera ? { camera: shown.camera } : {};
  let preview;
  try {
    preview = await api("POST", "/live/not", { hash: face.hash, dry_run: true, ...camera });
  } catch (err) {
    notify(`Could not correct ${face.name}: ${err.message}`, "error");
    return;
  }
  const extra = await askNotPerson(face.name, preview, "");
  if (!extra) return;
  await act(`Could not correct ${face.name}`, button, async () => {
    const body = { hash: face.hash, ...camera, ...extra };
    const result = await api("POST", "/live/not", body);
    refreshGallery();
    return result.removed_sample !== null
      ? `This face is not ${face.name}: removed ${face.name}'s sample #${result.removed_sample}.`
      : `This face is not ${face.name}; ${face.name}'s samples are unchanged.`;
  });
}
