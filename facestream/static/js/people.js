// People: one at a time (GET /faces/{hash}, remembered until the gallery changes), and a
// search for "which person". The gallery may hold hundreds of thousands of people: the page
// never asks for everybody.

import { h, shortHash } from "./dom.js";
import { api } from "./api.js";
import { notify } from "./ui.js";

const faceLookups = new Map();  // hash -> Promise of the person or null; emptied on changes

/** GET /faces/{hash}: the person, or null when nobody enrolled has that hash. */
export function faceOf(hash) {
  if (!faceLookups.has(hash)) {
    faceLookups.set(hash, api("GET", `/faces/${encodeURIComponent(hash)}`).catch((err) => {
      if (err.status === 404) return null;
      faceLookups.delete(hash);  // not an answer: ask again next time
      throw err;
    }));
  }
  return faceLookups.get(hash);
}

/** The gallery changed: ask again for anybody looked up. */
export function forgetFaces() {
  faceLookups.clear();
}

/** How many people a picker offers at once (typing narrows them), and the pause in typing
 *  after which a search asks the server. */
const PICKER_SIZE = 20;
export const TYPING_PAUSE_MS = 180;

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
export function personPicker(input, select, { blank = "Choose who…", exclude = null, hashes = false } = {}) {
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

  /** Choose `hash` ("" for nobody); `face`, if known: the person, or null for a stranger. */
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
    /** The person chosen (as the search or GET /faces/{hash} gave it), or null. */
    face: () => (select.value ? state.faces.get(select.value) || null : null),
  };
}

/** A picker in a dialog: a labelled field with the search (`<id>-search`) and the select. */
export function personField(id, label, options) {
  const input = h("input", { type: "search", id: `${id}-search`, testid: `${id}-search`, autocomplete: "off",
                             placeholder: "Type part of a name", "aria-controls": id });
  const select = h("select", { id, testid: id, "aria-label": label });
  const picker = personPicker(input, select, options);
  picker.input = input;
  picker.select = select;
  picker.field = h("div", { class: "field picker" }, h("label", { for: `${id}-search` }, label), input, select);
  return picker;
}

/** A picker's first matches (nobody typed yet), or null after saying they could not be had. */
export async function firstMatches(picker) {
  try {
    return await picker.refresh();
  } catch (err) {
    notify(`Could not load the gallery: ${err.message}`, "error");
    return null;
  }
}
