// The event log: arrivals and departures, newest first, bounded; each opens its visit.

import { $, h, faceLabel } from "./dom.js";
import { api } from "./api.js";
import { notify } from "./ui.js";
import { formatFull, formatTime, isoTime } from "./time.js";
import { openVisit } from "./snapshot.js";

const MAX_EVENTS = 200;
const eventLog = { seen: new Set() };

/** Show an arrival or departure (live, or from GET /events) once, in time order. */
export function addEvent(ev) {
  const key = `${ev.visit}|${ev.event}`;
  if (eventLog.seen.has(key)) return;
  eventLog.seen.add(key);
  const item = h("li", { testid: "event", "data-event": ev.event, "data-hash": ev.hash, "data-visit": ev.visit,
                         "data-at": ev.at, "data-key": key },
    h("time", { datetime: isoTime(ev.at), title: formatFull(ev.at) }, formatTime(ev.at)),
    h("button", { type: "button", class: `link ${ev.event}`, testid: "event-visit", title: "Show this visit",
                  onclick: () => openVisit(ev.visit) },
      `${faceLabel(ev)} ${ev.event === "arrived" ? "arrived" : "left"}`),
    ev.camera ? h("span", { class: "where", testid: "event-camera" }, ev.camera) : null);
  const list = $("events");
  list.querySelector(".empty")?.remove();
  // Newest first, also when the history (GET /events) arrives after a live event.
  const older = [...list.children].find((li) => Number(li.dataset.at) < ev.at);
  list.insertBefore(item, older || null);
  while (list.children.length > MAX_EVENTS) {
    eventLog.seen.delete(list.lastElementChild.dataset.key);
    list.lastElementChild.remove();
  }
}

/** Somebody enrolled, renamed or merged (a stranger named, too): their arrivals and
 * departures in the log say who they are now. */
export function relabelEvents(msg) {
  const face = msg.face;
  if (!face || !["added", "renamed", "merged"].includes(msg.event)) return;
  const hashes = new Set(msg.hashes && msg.hashes.length ? msg.hashes : [face.hash]);
  for (const li of $("events").querySelectorAll('[data-testid="event"]')) {
    if (!hashes.has(li.dataset.hash)) continue;
    li.dataset.hash = face.hash;
    li.querySelector('[data-testid="event-visit"]').textContent =
      `${face.name} ${li.dataset.event === "arrived" ? "arrived" : "left"}`;
  }
}

export async function loadEvents() {
  try {
    const body = await api("GET", "/events");
    for (const ev of [...body.events].reverse()) addEvent(ev);  // oldest first: prepend
  } catch (err) {
    notify(`Could not load the arrivals and departures: ${err.message}`, "error");
  }
  if (!$("events").children.length) $("events").append(h("li", { class: "empty" }, "Nothing yet"));
}
