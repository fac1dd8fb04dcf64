// Search by photo: drop a photo (or pick one) and see who is in it. POST /process-frame
// answers each face found with its name, or, for a face nobody enrolled is, the stranger it
// was seen as before ("unknown"); each face then shows its latest visits (GET /visits), and
// all of them are the History tab filtered to that person. Viewers may use all of it: it
// only reads.

import { $, h, monogram, shortHash } from "./dom.js";
import { api, ApiError } from "./api.js";
import { notify } from "./ui.js";
import { agoElement, formatDuration, formatFull } from "./time.js";
import { showSnapshot } from "./snapshot.js";
import { openTimeline } from "./history.js";
import { revealCard } from "./gallery.js";

/** Visits shown per face; the rest are one click away in the History tab. */
const VISITS_SHOWN = 3;
/** The crop shows this much of the photo around the face's box, on each side. */
const CROP_MARGIN = 0.25;

const drop = $("photo-drop");
const search = { seq: 0 };  // the latest search; answers to older ones are dropped

function setStatus(text, kind = "") {
  const status = $("photo-status");
  status.textContent = text;
  status.className = `status-line ${kind}`;
}

/** What to tell the user when the search failed, by the server's status. */
function failure(err) {
  if (!(err instanceof ApiError)) return err.message;
  const retry = err.body.retry_after ? ` (try again in ${Math.ceil(err.body.retry_after)} s)` : "";
  if (err.status === 422) return `${err.message}: try a photo where the face is larger and turned to the camera`;
  if (err.status === 413) return `the photo is too large: ${err.message}`;
  if (err.status === 429 || err.status === 503) return `${err.message}${retry}`;
  return err.message;
}

async function searchPhoto(file) {
  const seq = ++search.seq;
  $("photo-faces").replaceChildren();
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(`${file.name} is not an image.`, "error");
    return;
  }
  setStatus(`Looking for faces in ${file.name || "the photo"}…`);
  drop.setAttribute("aria-busy", "true");
  const form = new FormData();
  form.append("frame", file);
  let answer;
  try {
    answer = await api("POST", "/process-frame", form);
  } catch (err) {
    if (seq !== search.seq) return;
    const text = failure(err);
    setStatus(`No result: ${text}.`, "error");
    notify(`Search by photo: ${text}`, "error");
    return;
  } finally {
    if (seq === search.seq) drop.setAttribute("aria-busy", "false");
  }
  if (seq !== search.seq) return;
  const faces = [...answer.faces].sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
  setStatus(faces.length > 1 ? `${faces.length} faces found, largest first.` : "One face found.");
  const bitmap = await decoded(file);
  if (seq !== search.seq) return;
  $("photo-faces").replaceChildren(...faces.map((f) => faceRow(f, bitmap)));
}

/** The photo as the server saw it (EXIF orientation applied), or null if the browser
 *  cannot decode it (then the faces have no crop). */
async function decoded(file) {
  try {
    return await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return null;
  }
}

function faceCrop(bitmap, [x, y, w, hgt], label) {
  if (!bitmap) return monogram("?");
  // A square around the face, moved inside the photo where the face is near its edge.
  const side = Math.min(Math.max(w, hgt) * (1 + 2 * CROP_MARGIN), bitmap.width, bitmap.height);
  const within = (start, size) => Math.min(Math.max(start, 0), size - side);
  const canvas = h("canvas", { class: "photo-crop", width: 160, height: 160, role: "img",
                               "aria-label": `Face of ${label} in the photo`, testid: "photo-face-crop" });
  canvas.getContext("2d").drawImage(bitmap, within(x + w / 2 - side / 2, bitmap.width),
                                    within(y + hgt / 2 - side / 2, bitmap.height), side, side, 0, 0, 160, 160);
  return canvas;
}

/** One face of the photo: its crop, who it is, and their latest visits. */
function faceRow(f, bitmap) {
  const group = f.unknown;
  const person = f.known ? f.hash : group ? group.hash : null;
  const label = f.known ? f.name : group ? `unknown ${shortHash(group.hash)}` : "unknown";
  const similarity = f.known ? f.similarity : group ? group.similarity : null;
  const times = group && (group.visits === 1 ? "once" : `${group.visits} times`);
  const about = f.known ? ["enrolled"]
    : group ? [`not enrolled; seen ${times} before, `, ...(group.in_view ? ["in view now"] : ["last ", agoElement(group.last_seen)])]
      : ["not enrolled, and not seen before"];
  const visits = h("ol", { class: "photo-visits", testid: "photo-visits" });
  const actions = h("div", { class: "photo-actions" },
    f.known ? h("button", { type: "button", testid: "photo-show", onclick: () => revealCard(f.hash) }, "Show in gallery") : null);
  const row = h("li", { class: `photo-face ${f.known ? "known" : "unknown"}`, testid: "photo-face",
                        "data-hash": person || "", "data-known": String(f.known) },
    faceCrop(bitmap, f.box, label),
    h("div", { class: "photo-who" },
      h("span", { class: "photo-name", testid: "photo-name" }, label),
      h("span", { class: "sub", testid: "photo-about" },
        about, similarity === null ? "" : ` · similarity ${similarity.toFixed(2)}`),
      visits,
      actions));
  if (person) loadVisits(person, label, visits, actions);
  return row;
}

async function loadVisits(person, label, list, actions) {
  let body;
  try {
    body = await api("GET", `/visits?${new URLSearchParams({ person, limit: String(VISITS_SHOWN) })}`);
  } catch (err) {
    list.replaceChildren(h("li", { class: "sub" }, `Could not load the visits: ${err.message}`));
    return;
  }
  if (!body.visits.length) {
    list.replaceChildren(h("li", { class: "sub", testid: "photo-no-visits" }, "No visits recorded."));
    return;
  }
  list.replaceChildren(...body.visits.map(visitItem));
  actions.append(h("button", { type: "button", testid: "photo-all-visits",
                               title: `The History tab, showing only ${label}`,
                               onclick: () => openTimeline(person) },
    body.next ? "More visits ›" : "In the history ›"));
}

function visitItem(v) {
  const open = v.left_at === null;
  const crop = h("img", { src: v.crop, alt: "" });
  crop.addEventListener("error", () => crop.replaceWith(h("span", { class: "nocrop" })), { once: true });
  return h("li", { testid: "photo-visit", "data-id": v.id },
    h("button", { type: "button", class: "link", title: `${formatFull(v.arrived_at)}: show the snapshot`,
                  onclick: () => showSnapshot(v) },
      crop,
      h("span", {}, agoElement(v.arrived_at),
        ` · ${open ? "in view now" : formatDuration(v.left_at - v.arrived_at)}`,
        v.camera ? ` · camera ${v.camera}` : "")));
}

// -- the drop zone: a dropped file, or one picked with the file input inside it

$("photo-file").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  if (file) searchPhoto(file);
  ev.target.value = "";  // the same photo again searches again
});
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (ev) => {
    ev.preventDefault();
    drop.classList.add("dragging");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("dragging");
  const file = ev.dataTransfer && ev.dataTransfer.files[0];
  if (file) searchPhoto(file);
  else setStatus("Drop a photo file (from your files, not from a web page).", "error");
});
