// The history: visits newest first (GET /visits, keyset-paged), filtered by person, known or
// unknown, and dates; with a person chosen it is their timeline. Each visit shows its face,
// opens its snapshot, and can be named, added to someone as a sample, or deleted.

import { $, h, coalesced, faceLabel, monogram, plural, shortHash } from "./dom.js";
import { api } from "./api.js";
import { act, askName, confirmDialog, notify } from "./ui.js";
import { dayStart, formatDay, formatDuration, formatFull, formatTime, isoTime } from "./time.js";
import { faceOf, firstMatches, personField, personPicker } from "./people.js";
import { shown } from "./state.js";
import { showSnapshot } from "./snapshot.js";
import { enrollRequest } from "./enroll.js";
import { refreshGallery, revealCard, thumbnailUrl } from "./gallery.js";
import { explainConflict } from "./samples.js";
import { loadUnknowns } from "./unknowns.js";
import { showView } from "./views.js";

const VISITS_PAGE = 20;
/** A stranger's visits shown when naming them, to keep or split off (more: named whole). */
const MEMBERS_SHOWN = 50;
const visits = {
  filter: { person: "", known: "", from: "", to: "" },
  cursors: [null],  // the cursor of every page from the newest to the one shown
  list: [],
  next: null,
  fresh: 0,         // arrivals that match the filters since the newest page was loaded
};

/** GET /visits's query (the history's and the review's): `limit`, the filter's fields
 *  that are set (person, known, camera, ...), its dates `from` and `to` as whole days, and
 *  the page's `cursor`. */
export function visitsQuery(limit, { from, to, ...fields }, cursor) {
  const q = new URLSearchParams({ limit: String(limit) });
  for (const [key, value] of Object.entries(fields)) if (value) q.set(key, value);
  const since = dayStart(from);
  const until = dayStart(to, 1);
  if (since !== null) q.set("since", String(since));
  if (until !== null) q.set("until", String(until));
  if (cursor) q.set("cursor", cursor);
  return q;
}

export const loadVisits = coalesced(async () => {
  $("visits").setAttribute("aria-busy", "true");
  try {
    const body = await api("GET", `/visits?${visitsQuery(VISITS_PAGE, visits.filter, visits.cursors.at(-1))}`);
    visits.list = body.visits;
    visits.next = body.next;
    if (visits.cursors.length === 1) visits.fresh = 0;
    renderVisits();
  } catch (err) {
    notify(`Could not load the history: ${err.message}`, "error");
  } finally {
    $("visits").setAttribute("aria-busy", "false");
  }
});

function filtersSet() {
  const f = visits.filter;
  return Boolean(f.person || f.known || f.from || f.to);
}

function renderVisits() {
  const days = [];
  for (const v of visits.list) {
    const day = new Date(v.arrived_at * 1000).toDateString();
    if (!days.length || days.at(-1).day !== day) days.push({ day, at: v.arrived_at, rows: [] });
    days.at(-1).rows.push(visitRow(v));
  }
  $("visits").replaceChildren(...days.map((d) => h("li", { class: "day-group" },
    h("h3", { class: "day", testid: "visits-day" }, formatDay(d.at)),
    h("ol", {}, d.rows))));
  const first = (visits.cursors.length - 1) * VISITS_PAGE;
  $("visits-status").textContent = visits.list.length ? ""
    : visits.cursors.length > 1 ? "No older visits."
      : filtersSet() ? "No visits match these filters." : "No visits yet.";
  $("visits-page").textContent = visits.list.length ? `visits ${first + 1}–${first + visits.list.length}` : "";
  $("visits-older").disabled = !visits.next;
  $("visits-newest").disabled = visits.cursors.length === 1;
  renderFresh();
}

function renderFresh() {
  const button = $("visits-fresh");
  button.hidden = !visits.fresh;
  button.textContent = `Show ${plural(visits.fresh, "new visit")}`;
}

function visitRow(v) {
  const who = faceLabel(v);
  const open = v.left_at === null;
  const crop = h("img", { src: v.crop, alt: `Face of ${who}`, testid: "visit-crop" });
  crop.addEventListener("error", () => crop.replaceWith(h("span", { class: "nocrop" }, "no picture")), { once: true });
  return h("li", { class: `visit ${v.known ? "known" : "unknown"}`, testid: "visit", "data-id": v.id, "data-hash": v.hash,
                   "data-known": String(v.known), "data-arrived": v.arrived_at, "data-left": open ? "" : v.left_at },
    h("button", { type: "button", class: "visit-open", testid: "visit-open", title: "Show the snapshot",
                  onclick: () => showSnapshot(v) },
      crop,
      h("span", { class: "visit-text" },
        h("span", { class: "visit-who", testid: "visit-name" }, who),
        h("span", { class: "visit-when" },
          h("time", { datetime: isoTime(v.arrived_at), title: formatFull(v.arrived_at), testid: "visit-arrived" },
            formatTime(v.arrived_at)),
          " · ",
          h("span", { class: open ? "now" : null, testid: "visit-duration" },
            open ? "in view now" : formatDuration(v.left_at - v.arrived_at)),
          v.camera ? ` · camera ${v.camera}` : null))),
    h("div", { class: "visit-actions" },
      v.known ? null : h("button", { type: "button", class: "admin-only", testid: "visit-enroll", title: "Enroll this face under a name",
                                     onclick: (ev) => nameFromVisit(v, ev.currentTarget) }, "Name…"),
      h("button", { type: "button", class: "admin-only", testid: "visit-add-sample", title: "Add this face to an enrolled person",
                    onclick: (ev) => addVisitAsSample(v, ev.currentTarget) }, "Add to…"),
      h("button", { type: "button", class: "admin-only danger", testid: "visit-delete",
                    "aria-label": `Delete the visit of ${who} at ${formatFull(v.arrived_at)}`,
                    onclick: (ev) => deleteVisit(v, ev.currentTarget) }, "Delete")));
}

/** A live arrival or departure: count new visits, finish the row of one that ended. */
export function visitSeen(ev) {
  if (ev.event === "left") {  // in place: a button in the row may have the focus
    const v = visits.list.find((x) => x.id === ev.visit);
    const row = v && $("visits").querySelector(`[data-testid=visit][data-id="${ev.visit}"]`);
    if (row) {
      v.left_at = ev.at;
      row.dataset.left = ev.at;
      const duration = row.querySelector("[data-testid=visit-duration]");
      duration.className = "";
      duration.textContent = formatDuration(v.left_at - v.arrived_at);
    }
    return;
  }
  const f = visits.filter;
  const until = dayStart(f.to, 1);
  if (visits.cursors.length > 1 || (f.person && f.person !== ev.hash) || (f.known && f.known !== String(ev.known))
      || (until !== null && ev.at >= until)) return;
  visits.fresh += 1;
  renderFresh();
}

/** Read the filter controls; any change starts again from the newest visits. */
function readFilters() {
  visits.filter = {
    person: $("history-person").value,
    known: $("history-filters").querySelector('input[name="known"]:checked').value,
    from: $("history-from").value,
    to: $("history-to").value,
  };
  visits.cursors = [null];
  renderPersonHead();
  loadVisits();
}

function setFilters(filter) {
  visits.filter = { person: "", known: "", from: "", to: "", ...filter };
  visits.cursors = [null];
  $("history-filters").querySelector(`input[name="known"][value="${visits.filter.known}"]`).checked = true;
  $("history-from").value = visits.filter.from;
  $("history-to").value = visits.filter.to;
  personFilter.clear();
  return fillPersonFilter();
}

$("history-filters").addEventListener("change", readFilters);
$("history-filters").addEventListener("submit", (ev) => ev.preventDefault());
$("history-filters").addEventListener("reset", (ev) => {
  ev.preventDefault();
  setFilters({});
  renderPersonHead();
  loadVisits();
});
$("visits-older").addEventListener("click", () => {
  if (!visits.next) return;
  visits.cursors.push(visits.next);
  loadVisits();
});
$("visits-newest").addEventListener("click", () => {
  visits.cursors = [null];
  loadVisits();
});
$("visits-fresh").addEventListener("click", () => {
  visits.cursors = [null];
  loadVisits();
});

/** The person filter: a search of the names, and the person (or stranger) chosen. */
const personFilter = personPicker($("history-person-search"), $("history-person"), { blank: "Everybody" });

/** The history as it is now: the person filter, the person chosen and the visits. */
export function reloadHistory() {
  fillPersonFilter();
  renderPersonHead();
  loadVisits();
}

/** Show the person chosen in the filter, and the names matching its search as they are now. */
async function fillPersonFilter() {
  personFilter.choose(visits.filter.person);
  try {
    await personFilter.refresh();
  } catch (err) {
    notify(`Could not load the gallery: ${err.message}`, "error");
  }
}

/** With a person chosen: who, with "Forget history" (and "Name this person" for a stranger). */
async function renderPersonHead() {
  const box = $("person-head");
  const hash = visits.filter.person;
  if (!hash) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  let face;
  try {
    face = await faceOf(hash);
  } catch (err) {
    notify(`Could not show who ${shortHash(hash)} is: ${err.message}`, "error");
    return;
  }
  if (visits.filter.person !== hash) return;  // changed meanwhile
  const name = face ? face.name : `unknown ${shortHash(hash)}`;
  const img = h("img", { src: face ? thumbnailUrl(face) : `/unknowns/${hash}/crop`, alt: `Face of ${name}` });
  img.addEventListener("error", () => img.replaceWith(monogram(face ? name : "?")), { once: true });
  box.replaceChildren(
    img,
    h("h3", { testid: "person-name" }, `${name}: every visit`),
    face
      ? h("button", { type: "button", testid: "person-show", onclick: () => revealCard(hash) }, "Show in gallery")
      : h("button", { type: "button", class: "admin-only primary", testid: "person-enroll",
                      onclick: (ev) => nameUnknown(hash, ev.currentTarget) }, "Name this person"),
    h("button", { type: "button", class: "admin-only danger", testid: "forget-history",
                  onclick: (ev) => forgetHistory(hash, name, Boolean(face), ev.currentTarget) }, "Forget history"));
  box.hidden = false;
}

/** A person's timeline: the history of one person (from a gallery or an unknown card). */
export async function openTimeline(hash) {
  await setFilters({ person: hash });
  if (shown.view === "history") {
    renderPersonHead();
    loadVisits();
  } else {
    showView("history");
  }
  $("view-history").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function forgetHistory(hash, name, enrolled, button) {
  const yes = await confirmDialog({
    title: `Forget ${name}'s history?`,
    body: [`Every visit of ${name}, with its pictures, will be deleted.${enrolled ? ` ${name} stays in the gallery.` : ""} This cannot be undone.`],
    confirm: "Forget history",
    danger: true,
  });
  if (!yes) return;
  await act(`Could not forget ${name}'s history`, button, async () => {
    const result = await api("DELETE", `/people/${hash}/visits`);
    historyChanged();
    return `Forgot ${plural(result.deleted_visits, "visit")} of ${name}.`;
  });
}

/** Visits were deleted or changed hands: last-seen times, strangers and the list follow. */
export function historyChanged() {
  refreshGallery(false);
  loadUnknowns();
  if (shown.view === "history") loadVisits();
}

async function deleteVisit(v, button) {
  const who = faceLabel(v);
  const yes = await confirmDialog({
    title: `Delete this visit of ${who}?`,
    body: [`The visit of ${who} on ${formatFull(v.arrived_at)}, with its face and snapshot, will be deleted. This cannot be undone.`],
    confirm: "Delete visit",
    danger: true,
  });
  if (!yes) return;
  await act(`Could not delete the visit of ${who}`, button, async () => {
    await api("DELETE", `/visits/${v.id}`);
    historyChanged();
    return `Deleted the visit of ${who} at ${formatTime(v.arrived_at)}.`;
  });
}

/** Enroll a stranger from history: `body` has from_unknown or from_visit; `source` says
 *  where the samples come from ("unknown 1a2b3c4d's visits"). */
async function enrollFromHistory(body, who, source, button) {
  await act(`Could not add ${who}`, button, async () => {
    const result = await enrollRequest(body);
    if (!result) return null;
    refreshGallery();
    historyChanged();
    return {
      text: `Added ${result.name} to the gallery (${plural(result.samples, "sample")} from ${source}).`,
      action: { label: `Show ${result.name}`, run: () => revealCard(result.hash) },
    };
  });
}

/** Name a stranger's group: their visits are shown, and only those the user keeps (each a
 *  face of theirs) become the person's; the others are split off, each a stranger of its own. */
export async function nameUnknown(hash, button) {
  const who = `unknown ${shortHash(hash)}`;
  let members = [];
  try {
    const body = await api("GET", `/visits?person=${hash}&known=false&limit=${MEMBERS_SHOWN}`);
    if (!body.next) members = body.visits;  // a larger group is named whole
  } catch (err) {
    notify(`Could not load ${who}'s visits: ${err.message}`, "error");
    return;
  }
  const boxes = members.map((v) => h("input", { type: "checkbox", checked: true, value: v.id, testid: "member-keep" }));
  const list = members.length > 1 ? h("fieldset", { class: "members", testid: "members" },
    h("legend", {}, `Untick the visits that are somebody else (${plural(members.length, "visit")})`),
    ...members.map((v, i) => h("label", { class: "member" }, boxes[i],
      h("img", { class: "thumb small", src: v.crop, alt: `Face of the visit at ${formatFull(v.arrived_at)}` }),
      h("span", {}, formatFull(v.arrived_at))))) : null;
  const answer = await askName(`Name ${who}`,
    [`${who} is enrolled with the best faces of the visits kept, and keeps their hash: those visits become the person's.`, list],
    () => !list || boxes.some((b) => b.checked));
  if (!answer) return;
  const body = { from_unknown: hash, name: answer.name };
  if (answer.email) body.email = answer.email;
  if (list) body.visits = boxes.filter((b) => b.checked).map((b) => b.value);
  await enrollFromHistory(body, who, `${who}'s visits`, button);
}

async function nameFromVisit(v, button) {
  const who = faceLabel(v);
  const answer = await askName(`Name ${who}`,
    `${who} is enrolled with the face of this visit (${formatFull(v.arrived_at)}), and keeps their hash: their visits become the person's.`);
  if (!answer) return;
  const body = { from_visit: v.id, name: answer.name };
  if (answer.email) body.email = answer.email;
  await enrollFromHistory(body, who, "this visit", button);
}

async function addVisitAsSample(v, button) {
  const picker = personField("sample-target", "Enrolled person", { hashes: true });
  // A known visitor comes chosen, if they are still enrolled.
  const [first, own] = await Promise.all([firstMatches(picker), v.known ? faceOf(v.hash).catch(() => null) : null]);
  if (!first) return;
  if (!first.total) {
    notify("Add to: nobody is enrolled yet; use Name… to enroll this face.", "error");
    return;
  }
  if (own) picker.choose(own.hash, own);
  const who = faceLabel(v);
  const yes = await confirmDialog({
    title: `Add this face of ${who} to…`,
    body: [
      picker.field,
      `The face of this visit (${formatFull(v.arrived_at)}) becomes one more sample of the person you pick.`,
    ],
    confirm: "Add sample",
    ready: () => picker.select.value !== "",
  });
  const target = picker.face();
  if (!yes || !target) return;
  await act(`Could not add the face to ${target.name}`, button, async () => {
    try {
      await api("POST", `/faces/${target.hash}/samples`, { from_visit: v.id });
    } catch (err) {
      throw explainConflict(err);
    }
    await refreshGallery();
    historyChanged();
    return `Added the face of this visit to ${target.name}; the visit is ${target.name}'s.`;
  });
}
