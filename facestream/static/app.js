// The facestream dashboard (index.html): the live view, adding faces, arrivals and
// departures, and three views below: the gallery (a page at a time), the visit history (a
// person's timeline when one is chosen) and the unknown visitors. Everything comes from the
// HTTP API and the /ws websocket (see README.md). A plain ES module: no build step.

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

/** Build an element: h("button", {class: "x", onclick: f}, "text", childNode, ...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "testid") el.dataset.testid = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

const shortHash = (hash) => (hash || "").slice(0, 8);
/** A face in view, a visit or an event: its name if known, else "unknown 1a2b3c4d". */
const faceLabel = (f) => (f.known && f.name ? f.name : `unknown ${shortHash(f.hash)}`);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** Run `load` (an async function); calls made while it runs coalesce into one more run. */
function coalesced(load) {
  let running = null;
  let again = false;
  return () => {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      try {
        do {
          again = false;
          await load();
        } while (again);
      } finally {
        running = null;
      }
    })();
    return running;
  };
}

// -- dates and times, in the browser's locale -------------------------------------------

const isoTime = (seconds) => new Date(seconds * 1000).toISOString();

const formatClock = (seconds) =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** The time of day, with the date in front when it is not today. */
function formatTime(seconds) {
  const d = new Date(seconds * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? formatClock(seconds) : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${formatClock(seconds)}`;
}

const formatFull = (seconds) =>
  new Date(seconds * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });

const formatDate = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });

const formatShortDate = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { month: "short", day: "numeric" });

const formatDay = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** "just now" and "12 minutes ago" within the hour; the local (date and) time after that. */
function formatAgo(seconds) {
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return relative.format(-Math.floor(ago / 60), "minute");
  return formatTime(seconds);
}

/** A <time> saying how long ago `seconds` was; kept current while the page is open. */
function agoElement(seconds) {
  return h("time", { datetime: isoTime(seconds), title: formatFull(seconds), "data-ago": String(seconds) },
    formatAgo(seconds));
}

setInterval(() => {
  for (const el of document.querySelectorAll("time[data-ago]")) el.textContent = formatAgo(Number(el.dataset.ago));
}, 30_000);

function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Local midnight starting the day of a date input's value ("YYYY-MM-DD") plus `days`, in
 *  seconds since 1970; null without a date. (Date("YYYY-MM-DD") would read it as UTC.) */
function dayStart(value, days = 0) {
  if (!value) return null;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + days).getTime() / 1000;
}

// ---------------------------------------------------------------------------------------
// Messages: one notice at a time; errors stay until dismissed or replaced
// ---------------------------------------------------------------------------------------

let noticeTimer = null;

function notify(text, kind = "ok", action = null) {
  clearTimeout(noticeTimer);
  const box = $("notice");
  const actions = action ? h("button", { type: "button", onclick: () => { clearNotice(); action.run(); } }, action.label) : null;
  box.replaceChildren(
    h("div", { class: `notice ${kind}`, testid: kind === "error" ? "error" : "message" },
      h("span", { class: "text", testid: "notice-text" }, text),
      actions,
      h("button", { type: "button", "aria-label": "Dismiss message", onclick: clearNotice }, "×")),
  );
  if (kind !== "error") noticeTimer = setTimeout(clearNotice, 6000);
}

function clearNotice() {
  clearTimeout(noticeTimer);
  $("notice").replaceChildren();
}

// ---------------------------------------------------------------------------------------
// The API: every call goes through api(); failures become ApiError with the server's text
// ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, url, body) {
  const init = { method, headers: {} };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(url, init);
  } catch {
    throw new ApiError(0, "the server is not reachable");
  }
  if (resp.status === 401) {  // the session ended (or never began): log in again
    location.assign("/login");
    throw new ApiError(401, "log in first");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const message = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, message, data);
  }
  return data;
}

/**
 * Run a user action: disable its button while it runs, show success or the API's error.
 * `what` names the action in the error ("Could not rename Alex: ..."). `fn` returns the
 * success message, or {text, action} for a message with a button.
 */
async function act(what, button, fn) {
  if (button) button.disabled = true;
  try {
    const message = await fn();
    if (typeof message === "string") notify(message, "ok");
    else if (message) notify(message.text, "ok", message.action);
    return true;
  } catch (err) {
    if (!(err instanceof ApiError)) console.error(err);
    notify(`${what}: ${err.message}`, "error", err.action || null);
    return false;
  } finally {
    if (button) button.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------
// Dialogs (native <dialog>): confirm(...) resolves true only on the confirm button
// ---------------------------------------------------------------------------------------

/**
 * `ready()`, if given, enables the confirm button only while the dialog's inputs are valid;
 * `focus` is the element to start in (else Cancel). Enter in a text field confirms.
 */
function confirmDialog({ title, body, confirm = "OK", danger = false, ready = null, focus = null }) {
  const dialog = $("dialog");
  const content = $("dialog-body");
  $("dialog-title").textContent = title;
  content.replaceChildren(...[].concat(body).map((b) => (typeof b === "string" ? h("p", {}, b) : b)));
  const ok = $("dialog-ok");
  ok.textContent = confirm;
  ok.className = danger ? "danger solid" : "primary";
  const check = () => { ok.disabled = ready ? !ready() : false; };
  // The form's first button is Cancel, so Enter would cancel: make it confirm instead.
  const enter = (ev) => {
    if (ev.key !== "Enter" || ev.target.tagName !== "INPUT") return;
    ev.preventDefault();
    if (!ok.disabled) dialog.close("ok");
  };
  check();
  content.addEventListener("change", check);
  content.addEventListener("input", check);
  content.addEventListener("keydown", enter);
  dialog.returnValue = "";
  dialog.showModal();
  if (focus) focus.focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      content.removeEventListener("change", check);
      content.removeEventListener("input", check);
      content.removeEventListener("keydown", enter);
      resolve(dialog.returnValue === "ok");
    }, { once: true });
  });
}

/** Ask for a name and an optional email; null when cancelled. */
async function askName(title, intro) {
  const name = h("input", { maxlength: "200", autocomplete: "off", testid: "name-input" });
  const email = h("input", { type: "email", autocomplete: "off", testid: "email-input" });
  const ok = await confirmDialog({
    title,
    body: [
      intro,
      h("label", { class: "field" }, h("span", {}, "Name"), name),
      h("label", { class: "field" }, h("span", {}, "Email ", h("em", {}, "optional")), email),
    ],
    confirm: "Add to the gallery",
    ready: () => name.value.trim() !== "",
    focus: name,
  });
  return ok ? { name: name.value.trim(), email: email.value.trim() } : null;
}

// -- people: one at a time, and a search for "which person" ----------------------------
// The gallery may hold hundreds of thousands of people: the page never asks for everybody.

const faceLookups = new Map();  // hash -> Promise of the identity or null; emptied on changes

/** GET /faces/{hash}: the identity, or null when nobody enrolled has that hash. */
function faceOf(hash) {
  if (!faceLookups.has(hash)) {
    faceLookups.set(hash, api("GET", `/faces/${encodeURIComponent(hash)}`).catch((err) => {
      if (err.status === 404) return null;
      faceLookups.delete(hash);  // not an answer: ask again next time
      throw err;
    }));
  }
  return faceLookups.get(hash);
}

/** How many people a picker offers at once (typing narrows them), and the pause in typing
 *  after which a search asks the server. */
const PICKER_SIZE = 20;
const TYPING_PAUSE_MS = 180;

/** "Alex (1a2b3c4d)"; with `hashes` false only the name, unless another shown has it too. */
function personLabel(face, shown, hashes) {
  const twin = shown.some((f) => f !== face && f.name === face.name);
  return hashes || twin ? `${face.name} (${shortHash(face.hash)})` : face.name;
}

/**
 * A "which person" picker: typing in `input` asks for the names containing the text
 * (GET /faces?q=…&limit=PICKER_SIZE, once the typing pauses; an answer overtaken by more
 * typing is dropped), and `select` offers them. The person chosen stays offered when not
 * among the matches (a stranger as "unknown 1a2b3c4d"). `blank` is the first option's text;
 * `exclude` a hash never offered; `hashes` puts the short hash after every name.
 */
function personPicker(input, select, { blank = "Choose who…", exclude = null, hashes = false } = {}) {
  const state = { shown: [], more: 0, text: null, asked: 0, timer: null, chosen: "", faces: new Map() };

  function option(face) {
    return h("option", { value: face.hash }, personLabel(face, state.shown, hashes));
  }

  function render() {
    const chosen = state.chosen;
    const extra = [];
    if (chosen && !state.shown.some((f) => f.hash === chosen)) {
      const face = state.faces.get(chosen);
      extra.push(face ? option(face)
        : h("option", { value: chosen }, face === null ? `unknown ${shortHash(chosen)}` : `${shortHash(chosen)}…`));
    }
    const notes = [];
    if (state.text !== null && !state.shown.length) {
      notes.push(state.text ? `No name contains “${state.text}”` : `Nobody${exclude ? " else" : ""} is enrolled`);
    } else if (state.more > 0) {
      notes.push(`${state.more} more: type ${state.text ? "more of the name" : "a name"} to find them`);
    }
    select.replaceChildren(h("option", { value: "" }, blank), ...extra, ...state.shown.map(option),
      ...notes.map((text) => h("option", { value: "", disabled: true }, text)));
    select.value = chosen;
  }

  /** Ask for the names containing what is typed; the answer, or null if overtaken. */
  async function refresh() {
    clearTimeout(state.timer);
    const text = input.value.trim();
    const asked = ++state.asked;
    const query = new URLSearchParams({ limit: String(PICKER_SIZE) });
    if (text) query.set("q", text);
    const body = await api("GET", `/faces?${query}`);
    if (asked !== state.asked || text !== input.value.trim()) return null;
    const kept = state.faces.get(state.chosen);
    state.text = text;
    state.shown = body.faces.filter((f) => f.hash !== exclude)
      .sort((a, b) => a.name.localeCompare(b.name) || a.hash.localeCompare(b.hash));
    state.more = body.total - body.faces.length;
    state.faces = new Map(state.shown.map((f) => [f.hash, f]));
    if (state.chosen && !state.faces.has(state.chosen) && kept !== undefined) state.faces.set(state.chosen, kept);
    render();
    return body;
  }

  function searchSoon() {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => refresh().catch((err) => notify(`Could not search the names: ${err.message}`, "error")),
      TYPING_PAUSE_MS);
  }

  /** Choose `hash` ("" for nobody); `face`, if known: its identity, or null for a stranger. */
  function choose(hash, face = undefined) {
    state.chosen = hash;
    if (face !== undefined) state.faces.set(hash, face);
    render();
    if (!hash || face !== undefined || state.shown.some((f) => f.hash === hash)) return;
    faceOf(hash).then((found) => {
      if (state.chosen !== hash || state.shown.some((f) => f.hash === hash)) return;
      state.faces.set(hash, found);
      render();
    }, () => { /* stays labelled by its hash */ });
  }

  input.addEventListener("input", searchSoon);
  // Searching is not choosing: the field's own events stay out of the forms around it.
  input.addEventListener("change", (ev) => ev.stopPropagation());
  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      ev.stopPropagation();
      refresh().catch((err) => notify(`Could not search the names: ${err.message}`, "error"));
    } else if (ev.key === "ArrowDown") {
      ev.preventDefault();
      select.focus();
    }
  });
  select.addEventListener("change", () => { state.chosen = select.value; });
  render();
  return {
    refresh,
    choose,
    clear() { input.value = ""; },
    /** The identity chosen (as the search or GET /faces/{hash} gave it), or null. */
    face: () => (select.value ? state.faces.get(select.value) || null : null),
  };
}

/** A picker in a dialog: a labelled field with the search (`<id>-search`) and the select. */
function personField(id, label, options) {
  const input = h("input", { type: "search", id: `${id}-search`, testid: `${id}-search`, autocomplete: "off",
                             placeholder: "Type part of a name", "aria-controls": id });
  const select = h("select", { id, testid: id, "aria-label": label });
  const picker = personPicker(input, select, options);
  picker.input = input;
  picker.select = select;
  picker.field = h("div", { class: "field picker" }, h("label", { for: `${id}-search` }, label), input, select);
  return picker;
}

/** A row of previous / "page k of n" / next, under a paged grid. */
function pager(prefix, go) {
  const state = { page: 0 };
  $(`${prefix}-prev`).addEventListener("click", () => go(state.page - 1));
  $(`${prefix}-next`).addEventListener("click", () => go(state.page + 1));
  return (page, pages) => {
    state.page = page;
    $(`${prefix}-pager`).hidden = pages <= 1;
    $(`${prefix}-page`).textContent = `page ${page + 1} of ${pages}`;
    $(`${prefix}-prev`).disabled = page <= 0;
    $(`${prefix}-next`).disabled = page >= pages - 1;
  };
}

const PAGE_SIZE = 24;
const pageCount = (total) => Math.max(1, Math.ceil(total / PAGE_SIZE));

// ---------------------------------------------------------------------------------------
// Live stream: reconnect with backoff when it fails
// ---------------------------------------------------------------------------------------

const stream = $("stream");
let streamRetry = 1000;
let streamTimer = null;

// The camera shown (null: the first one, as /streaming, /hash and /ws are).
let camera = new URLSearchParams(location.search).get("camera");
const cameraPath = (what) => (camera ? `/cameras/${encodeURIComponent(camera)}/${what}` : `/${what}`);

function restartStream(delay = 0) {
  clearTimeout(streamTimer);
  streamTimer = setTimeout(() => { stream.src = `${cameraPath("streaming")}?t=${Date.now()}`; }, delay);
}

function streamFailed() {
  $("stream-status").hidden = false;
  $("stream-status").textContent = `Stream interrupted; reconnecting in ${Math.round(streamRetry / 1000)} s…`;
  restartStream(streamRetry);
  streamRetry = Math.min(streamRetry * 2, 10000);
}

stream.addEventListener("error", streamFailed);
stream.addEventListener("load", () => {
  $("stream-status").hidden = true;
  streamRetry = 1000;
  drawCrops();
});
// The <img> starts loading before this (deferred) module runs: it may have failed already.
if (stream.complete && !stream.naturalWidth) streamFailed();

// ---------------------------------------------------------------------------------------
// Who is in view: rebuilt when who changes; boxes (re-sent as they move) only redraw crops
// ---------------------------------------------------------------------------------------

const live = { faces: [], signal: true, who: null, known: new Set() };

function updateLive(faces, signal) {
  live.faces = faces;
  live.signal = signal;
  const who = JSON.stringify([signal, faces.map((f) => [f.hash, f.known, f.name])]);
  if (who !== live.who) {
    live.who = who;
    live.known = new Set(faces.filter((f) => f.known).map((f) => f.hash));
    renderInView();
    renderEnrollChoices();
    for (const card of gallery.cards.values()) renderSeen(card);
  } else {
    for (const [i, f] of faces.entries()) {
      const details = $("inview").querySelector(`[data-index="${i}"] .sub`);
      if (details) details.textContent = faceDetails(f);
    }
  }
  drawCrops();
}

const faceDetails = (f) => (f.known ? `similarity ${Number(f.similarity).toFixed(2)}` : `not enrolled · ${shortHash(f.hash)}`);

function renderInView() {
  const list = $("inview");
  const faces = live.faces;
  $("inview-count").textContent = faces.length ? `(${faces.length})` : "";
  if (!faces.length) {
    list.replaceChildren(h("li", { class: "empty" }, live.signal ? "Nobody in view" : "No camera signal"));
    return;
  }
  list.replaceChildren(...faces.map((f, i) => {
    const button = f.known
      ? h("button", { type: "button", class: "danger", testid: "not-button",
                      title: `Tell facestream this is not ${f.name}`,
                      onclick: (ev) => notThisPerson(f, ev.currentTarget) }, `Not ${f.name}`)
      : h("button", { type: "button", testid: "enroll-this",
                      onclick: () => chooseForEnrollment(f.hash) }, "Add…");
    return h("li", { class: f.known ? "known" : "unknown", testid: "inview-face", "data-hash": f.hash, "data-index": i },
      h("canvas", { width: 96, height: 96, "aria-hidden": "true" }),
      h("div", { class: "who" },
        h("span", { class: "face-name", testid: "inview-name" }, faceLabel(f)),
        h("span", { class: "sub" }, faceDetails(f))),
      button);
  }));
}

/** Copy each face's box out of the current stream frame into its little canvas. */
function drawCrops() {
  if (!stream.complete || !stream.naturalWidth) return;
  for (const item of $("inview").querySelectorAll("li[data-index]")) {
    const face = live.faces[Number(item.dataset.index)];
    if (!face || !face.box) continue;
    const canvas = item.querySelector("canvas");
    const [x, y, w, hgt] = face.box;
    const side = Math.max(w, hgt) * 1.3;
    const cx = x + w / 2, cy = y + hgt / 2;
    try {
      canvas.getContext("2d").drawImage(stream, cx - side / 2, cy - side / 2, side, side, 0, 0, canvas.width, canvas.height);
    } catch { /* the frame is not decodable right now; keep the old crop */ }
  }
}

async function notThisPerson(face, button) {
  const yes = await confirmDialog({
    title: `Not ${face.name}?`,
    body: [`facestream will remove the sample of ${face.name} that made this match, so this face is no longer recognised as ${face.name}.`],
    confirm: `Not ${face.name}`,
    danger: true,
  });
  if (!yes) return;
  await act(`Could not correct ${face.name}`, button, async () => {
    const result = await api("POST", "/live/not", { hash: face.hash });
    refreshGallery();
    return `Removed sample #${result.removed_sample} from ${face.name}.`;
  });
}

// ---------------------------------------------------------------------------------------
// Add face: from the live view (pick which unknown face) or from a photo
// ---------------------------------------------------------------------------------------

const enrollForm = $("enroll");

function enrollSource() {
  return enrollForm.querySelector('input[name="source"]:checked').value;
}

function renderEnrollChoices() {
  const select = $("enroll-face");
  const chosen = select.value;
  const unknown = live.faces.filter((f) => !f.known);
  if (!unknown.length) {
    select.replaceChildren(h("option", { value: "" }, "no unknown face in view"));
    return;
  }
  select.replaceChildren(...unknown.map((f, i) =>
    h("option", { value: f.hash }, `${unknown.length > 1 ? `#${i + 1} ` : ""}unknown ${shortHash(f.hash)}${i === 0 && unknown.length > 1 ? " (largest)" : ""}`)));
  if (unknown.some((f) => f.hash === chosen)) select.value = chosen;
}

function chooseForEnrollment(hash) {
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
      if (camera) body.camera = camera;
      if (email) body.email = email;
      if ($("enroll-face").value) body.hash = $("enroll-face").value;
      result = await enrollRequest(body);
    }
    $("enroll-name").value = "";
    $("enroll-email").value = "";
    await refreshGallery();
    showCard(result.hash);
    return `Added ${result.name}.`;
  });
});

/** POST /faces; a 409 (already enrolled) offers to show who it is. */
async function enrollRequest(body) {
  try {
    return await api("POST", "/faces", body);
  } catch (err) {
    if (err.status === 409 && err.body.hash) {
      const hash = err.body.hash;
      err.action = { label: `Show ${err.body.name || "them"}`, run: () => revealCard(hash) };
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// Event log: arrivals and departures, newest first, bounded; each opens its visit
// ---------------------------------------------------------------------------------------

const MAX_EVENTS = 200;
const eventLog = { seen: new Set() };

function addEvent(ev) {
  const key = `${ev.visit}|${ev.event}`;
  if (eventLog.seen.has(key)) return;
  eventLog.seen.add(key);
  const item = h("li", { testid: "event", "data-event": ev.event, "data-hash": ev.hash, "data-visit": ev.visit,
                         "data-at": ev.at, "data-key": key },
    h("time", { datetime: isoTime(ev.at), title: formatFull(ev.at) }, formatTime(ev.at)),
    h("button", { type: "button", class: `link ${ev.event}`, testid: "event-visit", title: "Show this visit",
                  onclick: () => openVisit(ev.visit) },
      `${faceLabel(ev)} ${ev.event === "arrived" ? "arrived" : "left"}`));
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

async function loadEvents() {
  try {
    const body = await api("GET", "/events");
    for (const ev of [...body.events].reverse()) addEvent(ev);  // oldest first: prepend
  } catch (err) {
    notify(`Could not load the arrivals and departures: ${err.message}`, "error");
  }
  if (!$("events").children.length) $("events").append(h("li", { class: "empty" }, "Nothing yet"));
}

// ---------------------------------------------------------------------------------------
// Gallery: a page of cards (GET /faces?limit&offset, with q= while a name is searched or
// email= for an email's owners), keyed by hash and updated in place so open editors and
// panels survive updates.
// ---------------------------------------------------------------------------------------

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
function refreshGallery(changed = true) {
  if (changed) faceLookups.clear();
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
    h("button", { type: "button", testid: "rename", onclick: () => startRename(card) }, "Rename"),
    card.samplesButton,
    h("button", { type: "button", testid: "face-history", onclick: () => openTimeline(card.hash) }, "History"),
    h("button", { type: "button", testid: "merge", onclick: (ev) => mergeInto(card, ev.currentTarget) }, "Merge…"),
    h("button", { type: "button", class: "danger wide", testid: "delete", onclick: (ev) => deleteFace(card, ev.currentTarget) }, "Delete"));
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

function thumbnailUrl(face) {
  const url = face.thumbnail || `/faces/${face.hash}/thumbnail`;
  return face.samples.length ? `${url}?v=${face.samples[0].id}` : url;
}

/** "in view now", "last seen 3 minutes ago" or "never seen". */
function renderSeen(card) {
  const face = card.face;
  const now = live.known.has(face.hash);
  card.seen.classList.toggle("now", now);
  if (now) card.seen.replaceChildren("in view now");
  else if (face.last_seen !== null && face.last_seen !== undefined) card.seen.replaceChildren("last seen ", agoElement(face.last_seen));
  else card.seen.replaceChildren("never seen");
}

/** An arrival or departure of somebody on the page: they were seen then. */
function seenAt(ev) {
  const card = ev.known ? gallery.cards.get(ev.hash) : null;
  if (!card || (card.face.last_seen ?? 0) >= ev.at) return;
  card.face.last_seen = ev.at;
  renderSeen(card);
}

function monogram(name) {
  const letters = name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
  return h("div", { class: "thumb monogram", role: "img", "aria-label": `No picture of ${name}` }, letters || "?");
}

/** Show somebody's card: on the page it is on (leaving a search it is not part of). */
async function showCard(hash, scroll = false) {
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
function revealCard(hash) {
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
      const ident = await api("PATCH", `/faces/${card.hash}`, { name });
      stopRename(card);
      await refreshGallery();
      return `Renamed ${old} to ${ident.name}.`;
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

/** A picker's first matches (nobody typed yet), or null after saying they could not be had. */
async function firstMatches(picker) {
  try {
    return await picker.refresh();
  } catch (err) {
    notify(`Could not load the gallery: ${err.message}`, "error");
    return null;
  }
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
    title: `Merge ${face.name} into another identity`,
    body: [
      picker.field,
      `${face.name}'s samples move to the identity you pick, which keeps its name; ${face.name} is then deleted.`,
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
    return `Merged ${face.name} into ${merged.name || target.name}.`;
  });
}

// -- samples --------------------------------------------------------------------------

function toggleSamples(card) {
  if (gallery.expanded.has(card.hash)) gallery.expanded.delete(card.hash);
  else gallery.expanded.add(card.hash);
  updateCard(card, card.face);
}

function renderSamples(card) {
  const face = card.face;
  const upload = h("input", { type: "file", accept: "image/*", class: "visually-hidden", testid: "sample-upload" });
  upload.addEventListener("change", () => {
    if (upload.files[0]) addSample(card, upload.files[0], upload);
  });
  const add = h("div", { class: "sample-add" },
    h("label", { class: "button" }, "Upload a photo", upload),
    h("button", { type: "button", testid: "sample-live", onclick: (ev) => addLiveSample(card, ev.currentTarget) }, "Add the face in view"));
  const last = face.samples.length <= 1;
  const items = face.samples.map((s) => h("li", { class: "sample", testid: "sample", "data-id": s.id },
    s.has_crop === false
      ? h("div", { class: "nocrop" }, "no picture")
      : h("img", { src: `/faces/${face.hash}/samples/${s.id}/crop`, alt: `Sample ${s.id} of ${face.name}`, loading: "lazy" }),
    h("div", { class: "cap" },
      h("span", { title: `added ${formatTime(s.created_at)}` }, h("span", {}, s.source), h("span", {}, formatShortDate(s.created_at))),
      h("button", { type: "button", class: "danger", testid: "sample-delete", disabled: last,
                    title: last ? "The last sample: delete the identity instead" : null,
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
  let hash = null;
  if (live.faces.length > 1) {
    hash = await pickFaceInView(`Which face in view is ${card.face.name}?`);
    if (!hash) return;
  } else if (live.faces.length === 1) {
    hash = live.faces[0].hash;
  }
  await act(`Could not add the face in view to ${card.face.name}`, button, async () => {
    const body = { from_live: true };
    if (camera) body.camera = camera;
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

/** A 409 on adding a sample names the identity the face already belongs to. */
function explainConflict(err) {
  if (err.status === 409 && err.body.hash && err.body.name) {
    const { hash, name } = err.body;
    if (!err.message.includes(name)) err.message = `${err.message} (it matches ${name})`;
    err.action = { label: `Show ${name}`, run: () => revealCard(hash) };
  }
  return err;
}

async function pickFaceInView(title) {
  const select = h("select", { id: "pick-face", testid: "pick-face" },
    live.faces.map((f, i) => h("option", { value: f.hash }, `#${i + 1} ${faceLabel(f)}`)));
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

// ---------------------------------------------------------------------------------------
// History: visits newest first (GET /visits, keyset-paged), filtered by person, known or
// unknown, and dates; with a person chosen it is their timeline. Each visit shows its face,
// opens its snapshot, and can be named, added to someone as a sample, or deleted.
// ---------------------------------------------------------------------------------------

const VISITS_PAGE = 20;
const visits = {
  filter: { person: "", known: "", from: "", to: "" },
  cursors: [null],  // the cursor of every page from the newest to the one shown
  list: [],
  next: null,
  fresh: 0,         // arrivals that match the filters since the newest page was loaded
};

function visitsQuery(cursor) {
  const f = visits.filter;
  const q = new URLSearchParams({ limit: String(VISITS_PAGE) });
  if (f.person) q.set("person", f.person);
  if (f.known) q.set("known", f.known);
  const since = dayStart(f.from);
  const until = dayStart(f.to, 1);
  if (since !== null) q.set("since", String(since));
  if (until !== null) q.set("until", String(until));
  if (cursor) q.set("cursor", cursor);
  return q;
}

const loadVisits = coalesced(async () => {
  $("visits").setAttribute("aria-busy", "true");
  try {
    const body = await api("GET", `/visits?${visitsQuery(visits.cursors.at(-1))}`);
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
      v.known ? null : h("button", { type: "button", testid: "visit-enroll", title: "Enroll this face under a name",
                                     onclick: (ev) => nameFromVisit(v, ev.currentTarget) }, "Name…"),
      h("button", { type: "button", testid: "visit-add-sample", title: "Add this face to an enrolled person",
                    onclick: (ev) => addVisitAsSample(v, ev.currentTarget) }, "Add to…"),
      h("button", { type: "button", class: "danger", testid: "visit-delete",
                    "aria-label": `Delete the visit of ${who} at ${formatFull(v.arrived_at)}`,
                    onclick: (ev) => deleteVisit(v, ev.currentTarget) }, "Delete")));
}

/** A live arrival or departure: count new visits, finish the row of one that ended. */
function visitSeen(ev) {
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
      : h("button", { type: "button", class: "primary", testid: "person-enroll",
                      onclick: (ev) => nameUnknown(hash, ev.currentTarget) }, "Name this person"),
    h("button", { type: "button", class: "danger", testid: "forget-history",
                  onclick: (ev) => forgetHistory(hash, name, Boolean(face), ev.currentTarget) }, "Forget history"));
  box.hidden = false;
}

/** A person's timeline: the history of one person (from a gallery or an unknown card). */
async function openTimeline(hash) {
  await setFilters({ person: hash });
  if (currentView === "history") {
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
function historyChanged() {
  refreshGallery(false);
  loadUnknowns();
  if (currentView === "history") loadVisits();
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
    refreshGallery();
    historyChanged();
    return {
      text: `Added ${result.name} to the gallery (${plural(result.samples, "sample")} from ${source}).`,
      action: { label: `Show ${result.name}`, run: () => revealCard(result.hash) },
    };
  });
}

async function nameUnknown(hash, button) {
  const who = `unknown ${shortHash(hash)}`;
  const answer = await askName(`Name ${who}`,
    `${who} is enrolled with the best faces of their visits, and keeps their hash: their visits become the person's.`);
  if (!answer) return;
  const body = { from_unknown: hash, name: answer.name };
  if (answer.email) body.email = answer.email;
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
  // A known visitor's own identity comes chosen, if they are still enrolled.
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
    return `Added the face of this visit to ${target.name}.`;
  });
}

// -- a visit's snapshot ---------------------------------------------------------------

function showSnapshot(v) {
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
async function openVisit(id) {
  try {
    showSnapshot(await api("GET", `/visits/${id}`));
  } catch (err) {
    notify(`Could not show that visit: ${err.message}`, "error");
  }
}

// ---------------------------------------------------------------------------------------
// Unknown visitors: strangers seen, most recently seen first (GET /unknowns, paged); name
// them (they keep their hash and visits) or forget them
// ---------------------------------------------------------------------------------------

const unknowns = { page: 0, cards: new Map(), timer: null };

const loadUnknowns = coalesced(async () => {
  try {
    let body = await api("GET", `/unknowns?limit=${PAGE_SIZE}&offset=${unknowns.page * PAGE_SIZE}`);
    if (!body.unknowns.length && body.total && unknowns.page > 0) {
      unknowns.page = pageCount(body.total) - 1;
      body = await api("GET", `/unknowns?limit=${PAGE_SIZE}&offset=${unknowns.page * PAGE_SIZE}`);
    }
    renderUnknowns(body.unknowns, body.total);
  } catch (err) {
    notify(`Could not load the unknown visitors: ${err.message}`, "error");
  }
});

/** Strangers come and go all the time: reload at most once a second. */
function scheduleUnknowns() {
  if (unknowns.timer) return;
  unknowns.timer = setTimeout(() => { unknowns.timer = null; loadUnknowns(); }, 1000);
}

const showUnknownsPage = pager("unknowns", (page) => {
  unknowns.page = page;
  loadUnknowns();
});

function renderUnknowns(list, total) {
  const grid = $("unknowns");
  const wanted = new Set(list.map((u) => u.hash));
  for (const [hash, card] of unknowns.cards) {
    if (!wanted.has(hash)) { card.el.remove(); unknowns.cards.delete(hash); }
  }
  const order = list.map((u) => {
    let card = unknowns.cards.get(u.hash);
    if (!card) { card = createUnknownCard(u); unknowns.cards.set(u.hash, card); }
    card.meta.replaceChildren(`${plural(u.visits, "visit")} · last seen `, agoElement(u.last_seen));
    card.first.textContent = `first seen ${formatTime(u.first_seen)}`;
    return card.el;
  });
  const current = [...grid.children].filter((el) => el.classList.contains("card"));
  if (current.length !== order.length || current.some((el, i) => el !== order[i])) grid.replaceChildren(...order);
  $("unknowns-count").textContent = total ? `(${total})` : "";
  $("unknowns-status").textContent = total ? `${plural(total, "stranger")} seen, most recently seen first.` : "No strangers seen (or all of them named or forgotten).";
  showUnknownsPage(unknowns.page, pageCount(total));
}

function createUnknownCard(u) {
  const who = `unknown ${shortHash(u.hash)}`;
  const img = h("img", { class: "thumb", src: u.crop, alt: `Face of ${who}`, loading: "lazy", testid: "unknown-crop" });
  img.addEventListener("error", () => img.replaceWith(monogram("?")), { once: true });
  const card = { el: null, meta: h("p", { class: "meta", testid: "unknown-meta" }), first: h("p", { class: "meta" }) };
  card.el = h("li", { class: "card", testid: "unknown-card", "data-hash": u.hash },
    h("div", { class: "thumb-box" }, img),
    h("div", { class: "body" },
      h("h3", { testid: "unknown-name" }, who),
      card.meta,
      card.first,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "primary wide", testid: "unknown-enroll",
                      onclick: (ev) => nameUnknown(u.hash, ev.currentTarget) }, "Name this person"),
        h("button", { type: "button", testid: "unknown-history", onclick: () => openTimeline(u.hash) }, "History"),
        h("button", { type: "button", class: "danger", testid: "unknown-forget",
                      onclick: (ev) => forgetUnknown(u.hash, ev.currentTarget) }, "Forget"))));
  return card;
}

async function forgetUnknown(hash, button) {
  const who = `unknown ${shortHash(hash)}`;
  const yes = await confirmDialog({
    title: `Forget ${who}?`,
    body: [`Every visit of ${who}, with its pictures, will be deleted. If they come again, they are a new stranger. This cannot be undone.`],
    confirm: "Forget",
    danger: true,
  });
  if (!yes) return;
  await act(`Could not forget ${who}`, button, async () => {
    const result = await api("DELETE", `/unknowns/${hash}`);
    historyChanged();
    return `Forgot ${who} (${plural(result.deleted_visits, "visit")}).`;
  });
}

// ---------------------------------------------------------------------------------------
// Views: gallery, history and unknown visitors as tabs (the URL's #fragment keeps the one
// shown across reloads)
// ---------------------------------------------------------------------------------------

const VIEWS = ["gallery", "history", "unknowns"];
let currentView = null;  // set by showView at the start

function showView(name) {
  if (!VIEWS.includes(name)) name = "gallery";
  for (const view of VIEWS) {
    const on = view === name;
    const tab = $(`tab-${view}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${view}`).hidden = !on;
  }
  const entering = currentView !== name;
  currentView = name;
  const url = name === "gallery" ? location.pathname + location.search : `#${name}`;
  if (location.hash !== (name === "gallery" ? "" : `#${name}`)) history.replaceState(null, "", url);
  if (name === "history" && entering) {
    fillPersonFilter();
    renderPersonHead();
    loadVisits();
  }
  if (name === "unknowns" && entering) loadUnknowns();
}

const tabs = VIEWS.map((view) => $(`tab-${view}`));
for (const tab of tabs) {
  tab.addEventListener("click", () => showView(tab.dataset.view));
  tab.addEventListener("keydown", (ev) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[ev.key];
    if (!step) return;
    const next = tabs[(tabs.indexOf(tab) + step + tabs.length) % tabs.length];
    showView(next.dataset.view);
    next.focus();
  });
}

// ---------------------------------------------------------------------------------------
// Websocket: live state, visits and gallery changes pushed by the server; reconnects with
// backoff
// ---------------------------------------------------------------------------------------

let wsRetry = 1000;
let wsWasDown = false;
let socket = null;

function connect() {
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
      if (currentView === "history") loadVisits();
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

function handleMessage(msg) {
  switch (msg.type) {
    case "snapshot":
    case "hash":
    case "faces":
      updateLive(msg.faces || [], "signal" in msg ? msg.signal : live.signal);
      break;
    case "gallery":
      refreshGallery();
      scheduleUnknowns();
      if (currentView === "history") {
        fillPersonFilter();
        renderPersonHead();
        loadVisits();
      }
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

// ---------------------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// Cameras: a picker when there are several, and a grid of all of them
// ---------------------------------------------------------------------------------------

let cameraNames = [];

async function loadCameras() {
  let body;
  try {
    body = await api("GET", "/cameras");
  } catch {
    return;
  }
  const names = body.cameras.map((c) => c.name);
  if (names.join("\n") !== cameraNames.join("\n")) {
    cameraNames = names;
    const select = $("camera");
    select.replaceChildren(...names.map((n) => h("option", { value: n }, n)));
    select.value = camera && names.includes(camera) ? camera : names[0];
    $("camera-pick").hidden = names.length < 2;
    $("grid-toggle").hidden = names.length < 2;
    if (camera && !names.includes(camera)) chooseCamera(null);  // it was removed
    if (!$("grid").hidden) fillGrid();
  }
}

function chooseCamera(name) {
  camera = name === cameraNames[0] ? null : name;
  const url = new URL(location.href);
  if (camera) url.searchParams.set("camera", camera); else url.searchParams.delete("camera");
  history.replaceState(null, "", url);
  $("camera").value = name || cameraNames[0] || "";
  updateLive([], true);
  restartStream();
  if (socket) socket.close();
  connect();
}

function fillGrid() {
  $("grid").replaceChildren(...cameraNames.map((name) => {
    const img = h("img", { src: `/cameras/${encodeURIComponent(name)}/streaming`,
                           alt: `Live stream of camera ${name}`, testid: "grid-stream" });
    return h("button", { type: "button", class: "grid-cell", title: `Show ${name}`,
                         onclick: () => { showGrid(false); chooseCamera(name); } },
             img, h("span", {}, name));
  }));
}

function showGrid(on) {
  $("grid").hidden = !on;
  $("grid-toggle").setAttribute("aria-pressed", String(on));
  if (on) fillGrid(); else $("grid").replaceChildren();  // closes those streams
}

$("camera").addEventListener("change", (ev) => chooseCamera(ev.target.value));
$("grid-toggle").addEventListener("click", () => showGrid($("grid").hidden));
setInterval(loadCameras, 5000);

showView(location.hash.slice(1));
if (camera) restartStream();
loadCameras();
renderInView();
renderEnrollChoices();
refreshGallery();
loadEvents();
loadUnknowns();
connect();


/* -- who is logged in ---------------------------------------------------------------- */

/** Show the account in the top bar, with Log out; a viewer's page says it is read-only. */
async function showAccount() {
  let me;
  try {
    me = await api("GET", "/me");
  } catch {
    return;
  }
  if (!me.auth) return;  // authentication is off: nobody to show
  const who = $("account");
  who.textContent = `${me.user} (${me.role})`;
  who.hidden = false;
  $("logout").hidden = false;
  document.body.classList.toggle("viewer", me.role !== "admin");
}

$("logout").addEventListener("click", async () => {
  try {
    await api("POST", "/logout");
  } finally {
    location.assign("/login");
  }
});
showAccount();
