// The samples panel of a gallery card: each sample's crop with its source and date, delete
// one, upload a photo or add the face in view. A conflict names who the face belongs to.

import { h, faceLabel } from "./dom.js";
import { api } from "./api.js";
import { act, confirmDialog } from "./ui.js";
import { formatDate, formatShortDate, formatTime } from "./time.js";
import { shown } from "./state.js";
import { facesInView } from "./live.js";
import { refreshGallery, revealCard } from "./gallery.js";

/** Fill the panel of an open card (gallery.js's updateCard calls it). */
export function renderSamples(card) {
  const face = card.face;
  const upload = h("input", { type: "file", accept: "image/*", class: "visually-hidden", testid: "sample-upload" });
  upload.addEventListener("change", () => {
    if (upload.files[0]) addSample(card, upload.files[0], upload);
  });
  const add = h("div", { class: "sample-add admin-only" },
    h("label", { class: "button" }, "Upload a photo", upload),
    h("button", { type: "button", class: "admin-only", testid: "sample-live", onclick: (ev) => addLiveSample(card, ev.currentTarget) }, "Add the face in view"));
  const last = face.samples.length <= 1;
  const items = face.samples.map((s) => h("li", { class: "sample", testid: "sample", "data-id": s.id },
    s.has_crop === false
      ? h("div", { class: "nocrop" }, "no picture")
      : h("img", { src: `/faces/${face.hash}/samples/${s.id}/crop`, alt: `Sample ${s.id} of ${face.name}`, loading: "lazy" }),
    h("div", { class: "cap" },
      h("span", { title: `added ${formatTime(s.created_at)}` }, h("span", {}, s.source), h("span", {}, formatShortDate(s.created_at))),
      h("button", { type: "button", class: "admin-only danger", testid: "sample-delete", disabled: last,
                    title: last ? "The last sample: delete the person instead" : null,
                    "aria-label": `Delete sample ${s.id} of ${face.name}`,
                    onclick: (ev) => deleteSample(card, s, ev.currentTarget) }, "×"))));
  card.samples.replaceChildren(
    h("h4", {}, `Samples of ${face.name}`),
    items.length ? h("ul", { class: "sample-grid" }, items) : h("p", { class: "empty" }, "No samples."),
    add);
}

async function addSample(card, file, input) {
  const form = new FormData();
  form.append("image", file);
  await act(`Could not add a sample to ${card.face.name}`, null, async () => {
    try {
      await api("POST", `/faces/${card.hash}/samples`, form);
    } catch (err) {
      throw explainConflict(err);
    } finally {
      input.value = "";
    }
    await refreshGallery();
    return `Added a sample to ${card.face.name}.`;
  });
}

async function addLiveSample(card, button) {
  const faces = facesInView();
  let hash = null;
  if (faces.length > 1) {
    hash = await pickFaceInView(`Which face in view is ${card.face.name}?`);
    if (!hash) return;
  } else if (faces.length === 1) {
    hash = faces[0].hash;
  }
  await act(`Could not add the face in view to ${card.face.name}`, button, async () => {
    const body = { from_live: true };
    if (shown.camera) body.camera = shown.camera;
    if (hash) body.hash = hash;
    try {
      await api("POST", `/faces/${card.hash}/samples`, body);
    } catch (err) {
      throw explainConflict(err);
    }
    await refreshGallery();
    return `Added the face in view to ${card.face.name}.`;
  });
}

/** A 409 on adding a sample names the person the face already belongs to. */
export function explainConflict(err) {
  if (err.status === 409 && err.body.hash && err.body.name) {
    const { hash, name } = err.body;
    if (!err.message.includes(name)) err.message = `${err.message} (it matches ${name})`;
    err.action = { label: `Show ${name}`, run: () => revealCard(hash) };
  }
  return err;
}

async function pickFaceInView(title) {
  const select = h("select", { id: "pick-face", testid: "pick-face" },
    facesInView().map((f, i) => h("option", { value: f.hash }, `#${i + 1} ${faceLabel(f)}`)));
  const ok = await confirmDialog({
    title,
    body: [h("label", { class: "field", for: "pick-face" }, h("span", {}, "Face in view (largest first)"), select)],
    confirm: "Add",
  });
  return ok ? select.value : null;
}

async function deleteSample(card, sample, button) {
  const yes = await confirmDialog({
    title: `Delete this sample of ${card.face.name}?`,
    body: [`Sample #${sample.id} (${sample.source}, ${formatDate(sample.created_at)}) will no longer be used to recognise ${card.face.name}.`],
    confirm: "Delete sample",
    danger: true,
  });
  if (!yes) return;
  await act(`Could not delete the sample of ${card.face.name}`, button, async () => {
    await api("DELETE", `/faces/${card.hash}/samples/${sample.id}`);
    await refreshGallery();
    return `Deleted sample #${sample.id} of ${card.face.name}.`;
  });
}


/**
 * Ask "Not X?" of a face, showing the sample of X behind the match (`preview`, a dry run's
 * answer), which is removed only if ticked. `stays` says what else happens. Null when
 * cancelled, else the extra body to send ({remove_sample} when ticked).
 */
export async function askNotPerson(name, preview, stays) {
  const culprit = preview.culprit;
  const remove = culprit ? h("input", { type: "checkbox", testid: "not-remove" }) : null;
  const yes = await confirmDialog({
    title: `Not ${name}?`,
    body: [
      `This face will not be named ${name} again${stays}; ${name}'s samples stay.`,
      culprit ? h("div", { class: "culprit", testid: "not-culprit" },
        h("img", { class: "thumb small", src: culprit.crop, alt: `The sample of ${name} behind the match` }),
        h("label", {}, remove, ` Also remove this sample of ${name} (#${culprit.id}, similarity ${culprit.similarity.toFixed(2)}): it made the match`))
        : `None of ${name}'s samples alone is like this face.`,
    ],
    confirm: `Not ${name}`,
    danger: true,
  });
  if (!yes) return null;
  return remove && remove.checked ? { remove_sample: culprit.id } : {};
}
