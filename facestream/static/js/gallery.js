// The gallery: a page of cards (GET /faces?limit&offset, with q= while a name is searched or
// email= for an email's owners), keyed by hash and updated in place so open editors and
// panels survive updates; each card renames, merges and deletes its person. The samples
// panel of a card is samples.js.

import { $, h, PAGE_SIZE, coalesced, monogram, pageCount, pager, plural, shortHash } from "./dom.js";
import { api } from "./api.js";
import { act, confirmDialog, notify } from "./ui.js";
import { agoElement, formatDate } from "./time.js";
import { TYPING_PAUSE_MS, firstMatches, forgetFaces, personField } from "./people.js";
import { knownInView } from "./live.js";
import { renderSamples } from "./samples.js";
import { openTimeline } from "./history.js";
import { showView } from "./views.js";
import { withSameName } from "./samename.js";

const gallery = {
  faces: [],          // the page shown
  total: 0,           // how many there are to page through (everybody, or the search's matches)
  page: 0,
  cards: new Map(),   // hash -> card, for the page shown
  expanded: new Set(),
  filter: null,       // {text}: names containing it; {text, email: true}: the owners of an email
};

/** The query of GET /faces for a page of the gallery as filtered now, plus `extra`. */
function galleryQuery(extra) {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE), ...extra });
  if (gallery.filter) query.set(gallery.filter.email ? "email" : "q", gallery.filter.text);
  return query;
}

const galleryPage = (page) => api("GET", `/faces?${galleryQuery({ offset: String(page * PAGE_SIZE) })}`);

const loadGallery = coalesced(async () => {
  const { filter, page } = gallery;
  try {
    // Filtered, the total is the matches': how many are enrolled is asked apart.
    const [shown, everybody] = await Promise.all([galleryPage(page), filter ? api("GET", "/faces?limit=1") : null]);
    if (filter !== gallery.filter || page !== gallery.page) return;  // changed: loading again
    let body = shown;
    if (!body.faces.length && body.total && page > 0) {  // the page emptied: the last one
      gallery.page = pageCount(body.total) - 1;
      body = await galleryPage(gallery.page);
    }
    gallery.total = body.total;
    gallery.faces = body.faces;
    renderGallery((everybody || body).total);
  } catch (err) {
    notify(`Could not load the gallery: ${err.message}`, "error");
  }
});

/** Re-fetch the page shown; `changed` (the default): the gallery changed, so forget the
 *  people looked up one by one. */
export function refreshGallery(changed = true) {
  if (changed) forgetFaces();
  return loadGallery();
}

const showGalleryPage = pager("gallery", (page) => {
  gallery.page = page;
  refreshGallery(false);
});

function renderGallery(enrolled) {
  const list = $("gallery");
  const wanted = new Set(gallery.faces.map((f) => f.hash));
  for (const [hash, card] of gallery.cards) {
    if (!wanted.has(hash)) { card.el.remove(); gallery.cards.delete(hash); }
  }
  const order = gallery.faces.map((f) => {
    let card = gallery.cards.get(f.hash);
    if (!card) { card = createCard(f.hash); gallery.cards.set(f.hash, card); }
    updateCard(card, f);
    return card.el;
  });
  // Move nodes only when the order changed, so focus inside a card is not lost.
  const current = [...list.children].filter((el) => el.classList.contains("card"));
  if (current.length !== order.length || current.some((el, i) => el !== order[i])) list.replaceChildren(...order);
  list.querySelector(".empty")?.remove();
  if (!enrolled) list.append(h("li", { class: "empty" }, "Nobody is enrolled yet: use Add face while someone is in view, or with a photo."));
  $("gallery-count").textContent = `(${enrolled})`;
  showGalleryPage(gallery.page, pageCount(gallery.total));
  const filter = gallery.filter;
  $("search-clear").hidden = !filter;
  if (filter && !filter.email) {
    $("search-result").textContent = gallery.total ? `${plural(gallery.total, "name")} containing “${filter.text}”` : `No name contains “${filter.text}”.`;
  }
}

function createCard(hash) {
  const el = h("li", { class: "card", testid: "face-card", "data-hash": hash });
  const card = { el, hash, face: null, editing: false, thumbKey: null };
  card.thumbBox = h("div", { class: "thumb-box" });
  card.title = h("h3", { testid: "face-name" });
  card.meta = h("p", { class: "meta", testid: "face-meta" });
  card.seen = h("p", { class: "seen", testid: "face-seen" });
  card.renameForm = buildRenameForm(card);
  card.samplesButton = h("button", { type: "button", testid: "samples-toggle", "aria-expanded": "false",
                                     onclick: () => toggleSamples(card) }, "Samples");
  card.actions = h("div", { class: "actions" },
    h("button", { type: "button", class: "admin-only", testid: "rename", onclick: () => startRename(card) }, "Rename"),
    card.samplesButton,
    h("button", { type: "button", testid: "face-history", onclick: () => openTimeline(card.hash) }, "History"),
    h("button", { type: "button", class: "admin-only", testid: "merge", onclick: (ev) => mergeInto(card, ev.currentTarget) }, "Merge…"),
    h("button", { type: "button", class: "admin-only danger wide", testid: "delete", onclick: (ev) => deleteFace(card, ev.currentTarget) }, "Delete"));
  card.samples = h("div", { class: "samples", testid: "samples", hidden: true });
  el.append(card.thumbBox, h("div", { class: "body" }, card.title, card.renameForm, card.meta, card.seen, card.actions), card.samples);
  return card;
}

function updateCard(card, face) {
  card.face = face;
  if (!card.editing) card.title.textContent = face.name;
  const bits = [plural(face.samples.length, "sample")];
  if (face.has_email) bits.push("email on file");
  bits.push(`since ${formatDate(face.created_at)}`);
  card.meta.replaceChildren(h("span", { class: "mono", title: face.hash }, shortHash(face.hash)), ` · ${bits.join(" · ")}`);
  renderSeen(card);
  card.samplesButton.textContent = `Samples (${face.samples.length})`;
  // The thumbnail is the first sample's crop; a changed first sample means a new image.
  const thumbKey = face.samples.length ? face.samples[0].id : "";
  if (card.thumbKey !== thumbKey) {
    card.thumbKey = thumbKey;
    const img = h("img", { class: "thumb", alt: `Face of ${face.name}`, loading: "lazy", testid: "face-thumb",
                           src: thumbnailUrl(face) });
    img.addEventListener("error", () => img.replaceWith(monogram(face.name)), { once: true });
    card.thumbBox.replaceChildren(img);
  } else {
    const img = card.thumbBox.querySelector("img");
    if (img) img.alt = `Face of ${face.name}`;
  }
  const expanded = gallery.expanded.has(face.hash);
  card.el.classList.toggle("expanded", expanded);
  card.samples.hidden = !expanded;
  card.samplesButton.setAttribute("aria-expanded", String(expanded));
  if (expanded) renderSamples(card);
}

export function thumbnailUrl(face) {
  const url = face.thumbnail || `/faces/${face.hash}/thumbnail`;
  return face.samples.length ? `${url}?v=${face.samples[0].id}` : url;
}

/** "in view now" (on the camera shown, or on any when the card was loaded), "last seen 3
 * minutes ago" (when their latest visit ended) or "never seen". */
function renderSeen(card) {
  const face = card.face;
  const now = knownInView(face.hash) || face.in_view === true;
  card.seen.classList.toggle("now", now);
  if (now) card.seen.replaceChildren("in view now");
  else if (face.last_seen !== null && face.last_seen !== undefined) card.seen.replaceChildren("last seen ", agoElement(face.last_seen));
  else card.seen.replaceChildren("never seen");
}

/** Who is in view changed: say so on the cards of the page. */
export function renderSeenCards() {
  for (const card of gallery.cards.values()) renderSeen(card);
}

/** An arrival or departure of somebody on the page: in view from the one, seen last at
 * the other. */
export function seenAt(ev) {
  const card = ev.known ? gallery.cards.get(ev.hash) : null;
  if (!card) return;
  card.face.in_view = ev.event === "arrived";
  if (ev.event === "left" && (card.face.last_seen ?? 0) < ev.at) card.face.last_seen = ev.at;
  renderSeen(card);
}

/** Show somebody's card: on the page it is on (leaving a search it is not part of). */
export async function showCard(hash, scroll = false) {
  if (!gallery.cards.has(hash)) {
    let offset;
    try {
      offset = await pageOf(hash);
    } catch (err) {
      notify(`Could not load the gallery: ${err.message}`, "error");
      return;
    }
    if (offset === null) return;
    gallery.page = Math.floor(offset / PAGE_SIZE);
    await refreshGallery(false);
  }
  const card = gallery.cards.get(hash);
  if (!card) return;
  if (scroll) card.el.scrollIntoView({ behavior: "smooth", block: "center" });
  card.el.classList.remove("flash");
  void card.el.offsetWidth;  // restart the animation
  card.el.classList.add("flash");
}

/** Where the page (of PAGE_SIZE) holding `hash` starts (GET /faces?page_of=): among the
 *  search's matches if it is one, else, the search cleared, among everybody; null when
 *  nobody enrolled has that hash. */
async function pageOf(hash) {
  const ask = () => api("GET", `/faces?${galleryQuery({ page_of: hash })}`).then(
    (body) => body.offset,
    (err) => { if (err.status === 404) return null; throw err; });
  const offset = await ask();
  if (offset !== null || !gallery.filter) return offset;
  clearSearch(false);
  return ask();
}

/** Switch to the gallery and show the card. */
export function revealCard(hash) {
  showView("gallery");
  return showCard(hash, true);
}

// -- rename ---------------------------------------------------------------------------

function buildRenameForm(card) {
  const input = h("input", { maxlength: "200", autocomplete: "off", testid: "rename-input", "aria-label": "New name" });
  const form = h("form", { class: "rename", hidden: true, testid: "rename-form" },
    input,
    h("button", { type: "submit", class: "primary", testid: "rename-save" }, "Save"),
    h("button", { type: "button", testid: "rename-cancel", onclick: () => stopRename(card) }, "Cancel"));
  input.addEventListener("keydown", (ev) => { if (ev.key === "Escape") stopRename(card); });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const old = card.face.name;
    const name = input.value.trim();
    if (!name || name === old) { stopRename(card); return; }
    await act(`Could not rename ${old}`, form.querySelector('button[type="submit"]'), async () => {
      const person = await withSameName((same) => api("PATCH", `/faces/${card.hash}`,
        same === undefined ? { name } : { name, same_name: same }));
      if (!person) return null;
      stopRename(card);
      await refreshGallery();
      if (person.hash !== card.hash) return `Merged ${old} (${shortHash(card.hash)}) into ${person.name} (${shortHash(person.hash)}).`;
      return `Renamed ${old} to ${person.name}.`;
    });
  });
  card.renameInput = input;
  return form;
}

function startRename(card) {
  card.editing = true;
  card.title.hidden = true;
  card.renameForm.hidden = false;
  card.renameInput.value = card.face.name;
  card.renameInput.setAttribute("aria-label", `New name for ${card.face.name}`);
  card.renameInput.focus();
  card.renameInput.select();
}

function stopRename(card) {
  card.editing = false;
  card.renameForm.hidden = true;
  card.title.hidden = false;
  card.title.textContent = card.face.name;
}

// -- delete and merge -----------------------------------------------------------------

async function deleteFace(card, button) {
  const face = card.face;
  const yes = await confirmDialog({
    title: `Delete ${face.name}?`,
    body: [`${face.name} and its ${plural(face.samples.length, "sample")} will be removed from the gallery, with every visit of ${face.name}. This cannot be undone.`],
    confirm: "Delete",
    danger: true,
  });
  if (!yes) return;
  await act(`Could not delete ${face.name}`, button, async () => {
    await api("DELETE", `/faces/${face.hash}`);
    await refreshGallery();
    return `Deleted ${face.name}.`;
  });
}

async function mergeInto(card, button) {
  const face = card.face;
  const picker = personField("merge-target", "The same person as", { exclude: face.hash, hashes: true });
  const first = await firstMatches(picker);
  if (!first) return;
  if (first.total <= 1) {
    notify(`Merge: there is nobody else in the gallery to merge ${face.name} into.`, "error");
    return;
  }
  const yes = await confirmDialog({
    title: `Merge ${face.name} into another person`,
    body: [
      picker.field,
      `${face.name}'s samples move to the person you pick, who keeps their name; ${face.name} is then deleted.`,
    ],
    confirm: "Merge",
    danger: true,
    ready: () => picker.select.value !== "",
    focus: picker.input,
  });
  const target = picker.face();
  if (!yes || !target) return;
  await act(`Could not merge ${face.name}`, button, async () => {
    const merged = await api("POST", `/faces/${target.hash}/merge`, { from: face.hash });
    await refreshGallery();
    showCard(merged.hash);
    const into = merged.name || target.name;
    return into === face.name ? `Merged ${face.name} (${shortHash(face.hash)}) into ${into} (${shortHash(merged.hash)}).`
      : `Merged ${face.name} into ${into}.`;
  });
}

// -- samples: the panel is samples.js; which cards have it open is kept here -------------

function toggleSamples(card) {
  if (gallery.expanded.has(card.hash)) gallery.expanded.delete(card.hash);
  else gallery.expanded.add(card.hash);
  updateCard(card, card.face);
}

// -- search: names filter as you type (GET /faces?q=, once the typing pauses); an email is
// looked up on Find --------------------------------------------------------------------

let searchTimer = null;

function clearSearch(reload = true) {
  clearTimeout(searchTimer);
  gallery.filter = null;
  gallery.page = 0;
  $("search-input").value = "";
  $("search-result").textContent = "";
  $("search-clear").hidden = true;
  if (reload) refreshGallery(false);
}

/** Show the names containing what is typed (an email waits for Find). */
function searchNames() {
  clearTimeout(searchTimer);
  const text = $("search-input").value.trim().toLowerCase();
  if (text.includes("@")) return;
  gallery.filter = text ? { text } : null;
  gallery.page = 0;
  if (!text) $("search-result").textContent = "";
  refreshGallery(false);
}

$("search-input").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(searchNames, TYPING_PAUSE_MS);
});

$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const text = $("search-input").value.trim();
  if (!text.includes("@")) {
    searchNames();
    return;
  }
  clearTimeout(searchTimer);
  await act("Could not search", $("search").querySelector('button[type="submit"]'), async () => {
    const body = await api("GET", `/faces?${new URLSearchParams({ email: text, limit: String(PAGE_SIZE) })}`);
    gallery.filter = { text, email: true };
    gallery.page = 0;
    const others = body.total - body.faces.length;
    $("search-result").textContent = body.faces.length
      ? `${text} belongs to ${body.faces.map((f) => f.name).join(", ")}${others > 0 ? ` and ${plural(others, "other")}` : ""}.`
      : `Nobody in the gallery has the email ${text}.`;
    await refreshGallery(false);
    if (body.faces.length) showCard(body.faces[0].hash, true);
  });
});

$("search-clear").addEventListener("click", () => clearSearch());
