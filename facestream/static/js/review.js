// Review: what the system decided, visit by visit (GET /visits with their decisions), and
// the corrections (POST /visits/review): this is X, not X, a new person, ignore (right as it
// is), and, for a stranger's group, split off. Each row shows the name given, the score
// against the threshold and the runner-up; rows can be picked to correct several at once.
// "To review" leaves out the visits somebody already confirmed or corrected.

import { $, h, coalesced, faceLabel, plural, shortHash } from "./dom.js";
import { api } from "./api.js";
import { act, confirmDialog, notify } from "./ui.js";
import { formatDay, formatFull, formatTime, isoTime } from "./time.js";
import { faceOf, personField, personPicker, firstMatches } from "./people.js";
import { showSnapshot } from "./snapshot.js";
import { withSameName } from "./samename.js";
import { refreshGallery } from "./gallery.js";
import { historyChanged, visitsQuery } from "./history.js";
import { askNotPerson } from "./samples.js";

const REVIEW_PAGE = 20;
const review = {
  filter: { show: "todo", person: "", camera: "", from: "", to: "" },
  cursors: [null],
  list: [],
  next: null,
  picked: new Set(),
};

/** The query of each "Show" choice (besides the person, camera and dates). */
const SHOW = {
  todo: { reviewed: "false" },
  low: { low_margin: "true", reviewed: "false" },
  unknown: { known: "false" },
  known: { known: "true" },
  all: {},
};

function reviewQuery(cursor) {
  const { show, ...filter } = review.filter;
  return visitsQuery(REVIEW_PAGE, { ...filter, ...SHOW[show] }, cursor);
}

export const loadReview = coalesced(async () => {
  $("review-list").setAttribute("aria-busy", "true");
  try {
    const body = await api("GET", `/visits?${reviewQuery(review.cursors.at(-1))}`);
    review.list = body.visits;
    review.next = body.next;
    const shownIds = new Set(review.list.map((v) => v.id));
    for (const id of review.picked) if (!shownIds.has(id)) review.picked.delete(id);
    renderReview();
  } catch (err) {
    notify(`Could not load the visits to review: ${err.message}`, "error");
  } finally {
    $("review-list").setAttribute("aria-busy", "false");
  }
});

/** The review as it is now: the filters' choices, then the visits. */
export function reloadReview() {
  fillCameras();
  personFilter.refresh().catch((err) => notify(`Could not load the gallery: ${err.message}`, "error"));
  loadReview();
}

// -- rendering -----------------------------------------------------------------------------

const score = (x) => (x === null || x === undefined ? "–" : x.toFixed(2));

/** Why the visit got its name: its score against the threshold, and who came next. */
function why(v) {
  const d = v.decision;
  if (!d) return "decision not kept (an older visit)";
  const runner = d.runner ? `next ${d.runner.name || `${shortHash(d.runner.hash)} (deleted)`} ${score(d.runner.score)}` : "nobody else close";
  return v.known && d.score !== null
    ? `score ${score(d.score)} · needs ${score(d.threshold)} · ${runner}`
    : `unknown · ${d.runner ? `nearest ${d.runner.name || shortHash(d.runner.hash)} ${score(d.runner.score)}` : "nobody enrolled"} · needs ${score(d.threshold)}`;
}

function renderReview() {
  const rows = review.list.map(reviewRow);
  const days = [];
  review.list.forEach((v, i) => {
    const day = new Date(v.arrived_at * 1000).toDateString();
    if (!days.length || days.at(-1).day !== day) days.push({ day, at: v.arrived_at, rows: [] });
    days.at(-1).rows.push(rows[i]);
  });
  $("review-list").replaceChildren(...days.map((d) => h("li", { class: "day-group" },
    h("h3", { class: "day" }, formatDay(d.at)), h("ol", {}, d.rows))));
  const first = (review.cursors.length - 1) * REVIEW_PAGE;
  $("review-status").textContent = review.list.length ? ""
    : review.filter.show === "todo" ? "Nothing to review: every visit here was confirmed or corrected."
      : "No visits match these filters.";
  $("review-page").textContent = review.list.length ? `visits ${first + 1}–${first + review.list.length}` : "";
  $("review-older").disabled = !review.next;
  $("review-newest").disabled = review.cursors.length === 1;
  renderPicked();
}

function reviewRow(v) {
  const who = faceLabel(v);
  const crop = h("img", { src: v.crop, alt: `Face of ${who}`, testid: "review-crop" });
  crop.addEventListener("error", () => crop.replaceWith(h("span", { class: "nocrop" }, "no picture")), { once: true });
  const pick = h("input", { type: "checkbox", class: "admin-only", testid: "review-pick",
                            "aria-label": `Pick the visit of ${who} at ${formatFull(v.arrived_at)}` });
  pick.checked = review.picked.has(v.id);
  pick.addEventListener("change", () => {
    if (pick.checked) review.picked.add(v.id); else review.picked.delete(v.id);
    renderPicked();
  });
  const strangerShown = review.filter.person && !v.known && review.filter.person === v.hash;
  const d = v.decision;
  const low = d && d.margin !== null && d.margin < 0.05;
  return h("li", { class: `visit review-row ${v.known ? "known" : "unknown"}`, testid: "review-row", "data-id": v.id,
                   "data-hash": v.hash, "data-reviewed": v.reviewed_at ? "true" : "false" },
    pick,
    h("button", { type: "button", class: "visit-open", title: "Show the snapshot", onclick: () => showSnapshot(v) },
      crop,
      h("span", { class: "visit-text" },
        h("span", { class: "visit-who", testid: "review-name" }, who),
        h("span", { class: `review-why${low ? " low" : ""}`, testid: "review-why" }, why(v)),
        h("span", { class: "visit-when" },
          h("time", { datetime: isoTime(v.arrived_at), title: formatFull(v.arrived_at) }, formatTime(v.arrived_at)),
          v.camera ? ` · camera ${v.camera}` : null,
          v.reviewed_at ? " · reviewed" : null))),
    h("div", { class: "visit-actions admin-only" },
      h("button", { type: "button", testid: "review-is", title: "Say who this is: the face becomes their sample",
                    onclick: (ev) => thisIs([v], ev.currentTarget) }, "This is…"),
      v.known ? h("button", { type: "button", testid: "review-not", title: `This face is not ${v.name}`,
                              onclick: (ev) => notThem(v, ev.currentTarget) }, `Not ${v.name}`) : null,
      h("button", { type: "button", testid: "review-new", title: "Enroll this face as a new person",
                    onclick: (ev) => newPerson([v], ev.currentTarget) }, "New person…"),
      strangerShown ? h("button", { type: "button", testid: "review-split", title: "This visit is somebody else: a stranger's group of its own",
                                    onclick: (ev) => run("split", [v], {}, ev.currentTarget) }, "Split off") : null,
      v.reviewed_at ? null : h("button", { type: "button", testid: "review-ignore", title: "Right as it is: leave it out of the visits to review",
                                           onclick: (ev) => run("ignore", [v], {}, ev.currentTarget) }, "Ignore")));
}

function renderPicked() {
  const n = review.picked.size;
  $("review-bulk").hidden = n === 0;
  $("review-picked").textContent = `${plural(n, "visit")} picked`;
  const all = $("review-all");
  all.checked = n > 0 && n === review.list.length;
  all.indeterminate = n > 0 && n < review.list.length;
}

const pickedVisits = () => review.list.filter((v) => review.picked.has(v.id));

// -- actions -------------------------------------------------------------------------------

/** POST /visits/review for `visits`; says what was done, and why any visit could not be. */
async function run(action, visits, extra, button) {
  const label = visits.length === 1 ? faceLabel(visits[0]) : plural(visits.length, "visit");
  return act(`Could not correct ${label}`, button, async () => {
    const result = await withSameName((sameName) => api("POST", "/visits/review", {
      action, visits: visits.map((v) => v.id), ...extra, ...(sameName ? { same_name: sameName } : {}),
    }));
    if (!result) return null;
    for (const v of visits) review.picked.delete(v.id);
    refreshGallery(false);
    historyChanged();
    loadReview();
    const failed = result.results.filter((r) => r.error);
    const done = result.results.filter((r) => !r.error).map((r) => r.done);
    const summary = visits.length === 1 ? (done.length ? `The visit of ${label} at ${formatTime(visits[0].arrived_at)}: ${done[0]}` : "")
      : `${plural(result.done, "visit")}: ${[...new Set(done)].join(", ")}`;
    if (failed.length) throw new Error(`${summary ? `${summary}; ` : ""}${failed.map((r) => r.error).join("; ")}`);
    return `${summary}.`;
  });
}

/** "This is…": the runner-up as a one-click choice, or anybody enrolled from the picker. */
export async function thisIs(visits, button) {
  const runner = visits.length === 1 && visits[0].decision && visits[0].decision.runner;
  const quick = runner && runner.name && runner.hash !== visits[0].hash ? runner : null;
  const picker = personField("review-target", "Enrolled person", { hashes: true });
  const first = await firstMatches(picker);
  if (!first) return;
  if (!first.total) {
    notify("This is: nobody is enrolled yet; use New person… to enroll this face.", "error");
    return;
  }
  let chosen = null;
  const quickButton = quick ? h("button", { type: "button", class: "primary", testid: "review-runner",
                                            onclick: () => { chosen = quick; $("dialog").close("ok"); } },
                                `${quick.name} (${score(quick.score)})`) : null;
  const who = visits.length === 1 ? faceLabel(visits[0]) : plural(visits.length, "visit");
  const yes = await confirmDialog({
    title: `Who is ${who}?`,
    body: [
      quickButton ? h("p", {}, "The runner-up: ", quickButton) : null,
      picker.field,
      `The face becomes one more sample of the person you pick, and the visit theirs${visits.some((v) => v.known) ? "; the name it had will not be given to this face again" : ""}.`,
    ].filter(Boolean),
    confirm: "This is them",
    ready: () => picker.select.value !== "",
  });
  const target = chosen || (yes ? picker.face() : null);
  if (!target) return;
  await run("is", visits, { hash: target.hash }, button);
}

/** "Not X": shows which of X's samples made the match, and removes it only if asked. */
export async function notThem(v, button) {
  let preview;
  try {
    preview = await api("POST", `/visits/${v.id}/not`, { dry_run: true });
  } catch (err) {
    notify(`Could not correct ${v.name}: ${err.message}`, "error");
    return;
  }
  const extra = await askNotPerson(v.name, preview, ", and the visit becomes a stranger's");
  if (extra) await run("not", [v], extra, button);
}

export async function newPerson(visits, button) {
  const name = h("input", { maxlength: "200", autocomplete: "off", testid: "name-input" });
  const who = visits.length === 1 ? faceLabel(visits[0]) : plural(visits.length, "visit");
  const yes = await confirmDialog({
    title: `${who}: a new person`,
    body: [`The face of ${visits.length === 1 ? "this visit" : "each visit"} becomes a sample of a new person, and only ${visits.length === 1 ? "this visit" : "these visits"} become theirs.`,
           h("label", { class: "field" }, h("span", {}, "Name"), name)],
    confirm: "Add to the gallery",
    ready: () => name.value.trim() !== "",
    focus: name,
  });
  if (!yes) return;
  await run("new", visits, { name: name.value.trim() }, button);
}

// -- filters, paging and the picked visits ---------------------------------------------------

const personFilter = personPicker($("review-person-search"), $("review-person"), { blank: "Everybody" });

async function fillCameras() {
  let body;
  try {
    body = await api("GET", "/cameras");
  } catch {
    return;  // the filter keeps the cameras it had
  }
  const select = $("review-camera");
  const names = body.cameras.map((c) => c.name);
  select.replaceChildren(h("option", { value: "" }, "Every camera"),
    ...names.map((n) => h("option", { value: n }, n)));
  select.value = names.includes(review.filter.camera) ? review.filter.camera : "";
}

function readFilters() {
  review.filter = {
    show: $("review-show").value,
    person: $("review-person").value,
    camera: $("review-camera").value,
    from: $("review-from").value,
    to: $("review-to").value,
  };
  review.cursors = [null];
  review.picked.clear();
  loadReview();
}

/** A stranger's group, to split: the review of their visits (from an unknown card). */
export async function reviewGroup(hash) {
  $("review-show").value = "all";
  personFilter.choose(hash, await faceOf(hash).catch(() => null));
  readFilters();
}

$("review-filters").addEventListener("change", readFilters);
$("review-filters").addEventListener("submit", (ev) => ev.preventDefault());
$("review-older").addEventListener("click", () => {
  if (!review.next) return;
  review.cursors.push(review.next);
  loadReview();
});
$("review-newest").addEventListener("click", () => {
  review.cursors = [null];
  loadReview();
});
$("review-all").addEventListener("change", (ev) => {
  for (const v of review.list) if (ev.target.checked) review.picked.add(v.id); else review.picked.delete(v.id);
  renderReview();
});
$("review-bulk-is").addEventListener("click", (ev) => thisIs(pickedVisits(), ev.currentTarget));
$("review-bulk-new").addEventListener("click", (ev) => newPerson(pickedVisits(), ev.currentTarget));
$("review-bulk-ignore").addEventListener("click", (ev) => run("ignore", pickedVisits(), {}, ev.currentTarget));
$("review-bulk-not").addEventListener("click", (ev) => {
  const named = pickedVisits().filter((v) => v.known);
  if (!named.length) notify("Not: none of the visits picked is named.", "error");
  else run("not", named, {}, ev.currentTarget);
});
$("review-bulk-split").addEventListener("click", (ev) => run("split", pickedVisits(), {}, ev.currentTarget));
