// A visit's snapshot (the frame of its best view) in the viewer dialog: from a row of the
// history, or from the event log, which has only the visit's id.

import { $, h, faceLabel } from "./dom.js";
import { api } from "./api.js";
import { notify } from "./ui.js";
import { formatDuration, formatFull } from "./time.js";

/** Show a visit (as GET /visits gives it) in the viewer. */
export function showSnapshot(v) {
  const who = faceLabel(v);
  $("viewer-title").textContent = who;
  $("viewer-meta").textContent = [
    formatFull(v.arrived_at),
    v.left_at === null ? "in view now" : `stayed ${formatDuration(v.left_at - v.arrived_at)}`,
    v.camera ? `camera ${v.camera}` : null,
  ].filter(Boolean).join(" · ");
  const img = h("img", { src: v.snapshot, alt: `The camera's view of ${who} during this visit`, testid: "visit-snapshot" });
  img.addEventListener("error", () => img.replaceWith(h("p", { class: "empty" }, "No snapshot is stored for this visit.")), { once: true });
  $("viewer-picture").replaceChildren(img);
  $("viewer").showModal();
}

/** From the event log: the visit as stored now. */
export async function openVisit(id) {
  try {
    showSnapshot(await api("GET", `/visits/${id}`));
  } catch (err) {
    notify(`Could not show that visit: ${err.message}`, "error");
  }
}
