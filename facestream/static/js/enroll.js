// Add face: from the live view (pick which unknown face) or from a photo. enrollRequest()
// is also how the history enrolls a stranger.

import { $, h, shortHash } from "./dom.js";
import { api, ApiError } from "./api.js";
import { act, notify } from "./ui.js";
import { shown } from "./state.js";
import { facesInView } from "./live.js";
import { refreshGallery, revealCard, showCard } from "./gallery.js";
import { withSameName } from "./samename.js";

const enrollForm = $("enroll");

function enrollSource() {
  return enrollForm.querySelector('input[name="source"]:checked').value;
}

/** Offer the unknown faces in view, keeping the one chosen while it stays. */
export function renderEnrollChoices() {
  const select = $("enroll-face");
  const chosen = select.value;
  const unknown = facesInView().filter((f) => !f.known);
  if (!unknown.length) {
    select.replaceChildren(h("option", { value: "" }, "no unknown face in view"));
    return;
  }
  select.replaceChildren(...unknown.map((f, i) =>
    h("option", { value: f.hash }, `${unknown.length > 1 ? `#${i + 1} ` : ""}unknown ${shortHash(f.hash)}${i === 0 && unknown.length > 1 ? " (largest)" : ""}`)));
  if (unknown.some((f) => f.hash === chosen)) select.value = chosen;
}

/** Start adding the unknown face with this hash (the Add… button of a face in view). */
export function chooseForEnrollment(hash) {
  enrollForm.querySelector('input[value="live"]').checked = true;
  updateEnrollSource();
  $("enroll-face").value = hash;
  $("enroll-name").focus();
}

function updateEnrollSource() {
  const photo = enrollSource() === "photo";
  $("enroll-live").hidden = photo;
  $("enroll-photo").hidden = !photo;
}

for (const radio of enrollForm.querySelectorAll('input[name="source"]')) {
  radio.addEventListener("change", updateEnrollSource);
}

enrollForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const name = $("enroll-name").value.trim();
  const email = $("enroll-email").value.trim();
  if (!name) {
    notify("Add face: enter a name first.", "error");
    $("enroll-name").focus();
    return;
  }
  const button = enrollForm.querySelector('button[type="submit"]');
  await act(`Could not add ${name}`, button, async () => {
    let result;
    if (enrollSource() === "photo") {
      const file = $("enroll-file").files[0];
      if (!file) throw new ApiError(0, "choose a photo first");
      const form = new FormData();
      form.append("image", file);
      form.append("name", name);
      if (email) form.append("email", email);
      result = await enrollRequest(form);
      $("enroll-file").value = "";
    } else {
      const body = { from_live: true, name };
      if (shown.camera) body.camera = shown.camera;
      if (email) body.email = email;
      if ($("enroll-face").value) body.hash = $("enroll-face").value;
      result = await enrollRequest(body);
    }
    if (!result) return null;  // asked whether it was somebody of that name, and cancelled
    $("enroll-name").value = "";
    $("enroll-email").value = "";
    await refreshGallery();
    showCard(result.hash);
    // One face makes one sample: more, and it joined the person of that name.
    return result.samples > 1 ? `Added this face to ${result.name} (${shortHash(result.hash)}), who has ${result.samples} samples now.`
      : `Added ${result.name}.`;
  });
});

/** POST /faces, asking whether it is the same person when the name is taken (null when the
 * user cancels); a 409 (the face is enrolled already) offers to show who it is. */
export async function enrollRequest(body) {
  try {
    return await withSameName((sameName) => {
      if (sameName === undefined) return api("POST", "/faces", body);
      if (body instanceof FormData) body.set("same_name", sameName);
      return api("POST", "/faces", body instanceof FormData ? body : { ...body, same_name: sameName });
    });
  } catch (err) {
    if (err.status === 409 && err.body.hash) {
      const hash = err.body.hash;
      err.action = { label: `Show ${err.body.name || "them"}`, run: () => revealCard(hash) };
    }
    throw err;
  }
}
