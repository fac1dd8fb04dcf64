// Cameras: a picker when there are several, and a grid of all of them. Choosing one writes
// shown.camera (state.js) and points the stream, who is in view and the websocket at it.

import { $, h } from "./dom.js";
import { api } from "./api.js";
import { shown } from "./state.js";
import { restartStream, updateLive } from "./live.js";
import { reconnect } from "./socket.js";
import { play, stop, videoWanted } from "./player.js";

let cameraNames = [];

/** GET /cameras: offer the cameras there are now (they may be added and removed). */
export async function loadCameras() {
  let body;
  try {
    body = await api("GET", "/cameras");
  } catch {
    return;
  }
  const names = body.cameras.map((c) => c.name);
  if (names.join("\n") !== cameraNames.join("\n")) {
    cameraNames = names;
    const select = $("camera");
    select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    select.value = shown.camera && names.includes(shown.camera) ? shown.camera : names[0];
    $("camera-pick").hidden = names.length < 2;
    $("grid-toggle").hidden = names.length < 2;
    if (shown.camera && !names.includes(shown.camera)) chooseCamera(null);  // it was removed
    if (!$("grid").hidden) fillGrid();
  }
}

function chooseCamera(name) {
  shown.camera = name === cameraNames[0] ? null : name;
  const url = new URL(location.href);
  if (shown.camera) url.searchParams.set("camera", shown.camera); else url.searchParams.delete("camera");
  history.replaceState(null, "", url);
  $("camera").value = name || cameraNames[0] || "";
  updateLive([], true);
  restartStream();
  reconnect();
}

/** The grid's players (H.264), one per camera shown in it. */
let gridPlayers = [];

function fillGrid() {
  stopGrid();
  $("grid").replaceChildren(...cameraNames.map((name) => {
    const path = `/cameras/${encodeURIComponent(name)}`;
    const mjpeg = () => h("img", { src: `${path}/streaming`, alt: `Live stream of camera ${name}`,
                                   testid: "grid-stream" });
    let picture = mjpeg();
    if (videoWanted()) {
      const video = h("video", { muted: true, playsinline: true, testid: "grid-stream",
                                 "aria-label": `Live video of camera ${name}` });
      video.muted = true;
      const canvas = h("canvas", { class: "overlay" });
      picture = h("span", { class: "grid-video" }, video, canvas);
      const player = play(video, canvas, `${path}/video`, () => {
        stop(player);
        picture.replaceWith(mjpeg());  // this browser cannot play it: MJPEG
      });
      gridPlayers.push(player);
    }
    return h("button", { type: "button", class: "grid-cell", title: `Show ${name}`,
                         onclick: () => { showGrid(false); chooseCamera(name); } },
             picture, h("span", {}, name));
  }));
}

function stopGrid() {
  for (const player of gridPlayers) stop(player);
  gridPlayers = [];
}

function showGrid(on) {
  $("grid").hidden = !on;
  $("grid-toggle").setAttribute("aria-pressed", String(on));
  if (on) fillGrid(); else { stopGrid(); $("grid").replaceChildren(); }  // closes the streams
}

// A hidden tab receives no video: the grid's sockets close, and open again when it is shown.
document.addEventListener("visibilitychange", () => {
  if ($("grid").hidden || !videoWanted()) return;
  if (document.hidden) stopGrid(); else fillGrid();
});

$("camera").addEventListener("change", (ev) => chooseCamera(ev.target.value));
document.addEventListener("viewchange", () => { if (!$("grid").hidden) fillGrid(); });
$("grid-toggle").addEventListener("click", () => showGrid($("grid").hidden));
