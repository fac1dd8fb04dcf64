// A visit's snapshot (the frame of its best view) in the viewer dialog, its face boxed, with
// the visit's corrections: from a row of the history or the review, or from the event log,
// which has only the visit's id.

import { $, h, faceLabel } from "./dom.js";
import { api } from "./api.js";
import { notify } from "./ui.js";
import { formatDuration, formatFull } from "./time.js";
import { newPerson, notThem, thisIs } from "./review.js";

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
  const snap = h("span", { class: "snap" }, img, snapshotBox(v));
  img.addEventListener("error", () => snap.replaceWith(h("p", { class: "empty" }, "No snapshot is stored for this visit.")), { once: true });
  $("viewer-picture").replaceChildren(snap);
  $("viewer-actions").replaceChildren(...viewerActions(v));
  $("viewer").showModal();
}

/** The visit's face in the snapshot, where GET /visits says (fractions of the frame). */
function snapshotBox(v) {
  if (!v.box) return null;
  const [x, y, w, h] = v.box.map((f) => `${(f * 100).toFixed(2)}%`);
  const box = document.createElement("span");
  box.className = `snap-box ${v.known ? "known" : "unknown"}`;
  box.dataset.testid = "snapshot-box";
  Object.assign(box.style, { left: x, top: y, width: w, height: h });
  return box;
}

/** Name, say who, or "not X": each closes the viewer and asks in its own dialog. */
function viewerActions(v) {
  const then = (fn) => (ev) => { $("viewer").close(); fn(ev.currentTarget); };
  return [
    v.known ? null : h("button", { type: "button", testid: "viewer-new", onclick: then((b) => newPerson([v], b)) }, "Name…"),
    h("button", { type: "button", testid: "viewer-is", onclick: then((b) => thisIs([v], b)) }, "This is…"),
    v.known ? h("button", { type: "button", testid: "viewer-not", onclick: then((b) => notThem(v, b)) }, `Not ${v.name}`) : null,
  ].filter(Boolean);
}

/** From the event log: the visit as stored now. */
export async function openVisit(id) {
  try {
    showSnapshot(await api("GET", `/visits/${id}`));
  } catch (err) {
    notify(`Could not show that visit: ${err.message}`, "error");
  }
}
