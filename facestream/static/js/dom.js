// Small helpers every view uses: building elements, labels, paging, coalescing loads.
// Nothing here holds state of its own.

export const $ = (id) => document.getElementById(id);

/** Build an element: h("button", {class: "x", onclick: f}, "text", childNode, ...). */
export function h(tag, attrs = {}, ...children) {
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

export const shortHash = (hash) => (hash || "").slice(0, 8);
/** A face in view, a visit or an event: its name if known, else "unknown 1a2b3c4d". */
export const faceLabel = (f) => (f.known && f.name ? f.name : `unknown ${shortHash(f.hash)}`);
export const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** A stand-in for a missing picture: the name's initials. */
export function monogram(name) {
  const letters = name.split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
  return h("div", { class: "thumb monogram", role: "img", "aria-label": `No picture of ${name}` }, letters || "?");
}

/** Run `load` (an async function); calls made while it runs coalesce into one more run. */
export function coalesced(load) {
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

/** A row of previous / "page k of n" / next, under a paged grid. */
export function pager(prefix, go) {
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

/** How many cards a page of the gallery or of the unknown visitors holds. */
export const PAGE_SIZE = 24;
export const pageCount = (total) => Math.max(1, Math.ceil(total / PAGE_SIZE));
