// The websocket (/ws of the camera shown): live state, visits and gallery changes pushed by
// the server; reconnects with backoff, and catches up on everything after an outage.

import { $ } from "./dom.js";
import { cameraPath, shown } from "./state.js";
import { hasSignal, restartStream, updateLive } from "./live.js";
import { addEvent, loadEvents, relabelEvents } from "./events.js";
import { refreshGallery, seenAt } from "./gallery.js";
import { loadVisits, reloadHistory, visitSeen } from "./history.js";
import { loadUnknowns, scheduleUnknowns } from "./unknowns.js";

let wsRetry = 1000;
let wsWasDown = false;
let socket = null;

export function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${cameraPath("ws")}`);
  socket = ws;
  ws.addEventListener("open", () => {
    $("conn").textContent = "live";
    $("conn").className = "pill live";
    wsRetry = 1000;
    if (wsWasDown) {  // the server may have restarted: catch up on everything
      wsWasDown = false;
      restartStream();
      refreshGallery();
      loadEvents();
      loadUnknowns();
      if (shown.view === "history") loadVisits();
    }
  });
  ws.addEventListener("message", (ev) => handleMessage(JSON.parse(ev.data)));
  ws.addEventListener("close", () => {
    if (ws !== socket) return;  // replaced on purpose: another camera was chosen
    wsWasDown = true;
    $("conn").textContent = "disconnected; retrying…";
    $("conn").className = "pill down";
    setTimeout(connect, wsRetry);
    wsRetry = Math.min(wsRetry * 2, 10000);
  });
}

/** Connect again, to the camera shown now; the old socket's close is not a failure. */
export function reconnect() {
  if (socket) socket.close();
  connect();
}

function handleMessage(msg) {
  switch (msg.type) {
    case "snapshot":
    case "hash":
    case "faces":
      updateLive(msg.faces || [], "signal" in msg ? msg.signal : hasSignal());
      break;
    case "gallery":
      relabelEvents(msg);
      refreshGallery();
      scheduleUnknowns();
      if (shown.view === "history") reloadHistory();
      break;
    case "event":
      addEvent(msg);
      seenAt(msg);
      visitSeen(msg);
      if (!msg.known) scheduleUnknowns();
      break;
    default:
      break;
  }
}
