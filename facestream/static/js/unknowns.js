// Unknown visitors: strangers seen, most recently seen first (GET /unknowns, paged); name
// them (they keep their hash and visits) or forget them.

import { $, h, PAGE_SIZE, coalesced, monogram, pageCount, pager, plural, shortHash } from "./dom.js";
import { api } from "./api.js";
import { act, confirmDialog, notify } from "./ui.js";
import { agoElement, formatTime } from "./time.js";
import { historyChanged, nameUnknown, openTimeline } from "./history.js";
import { reviewGroup } from "./review.js";
import { showView } from "./views.js";

const unknowns = { page: 0, cards: new Map(), timer: null };

export const loadUnknowns = coalesced(async () => {
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
export function scheduleUnknowns() {
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
    const seen = u.in_view ? ["in view now"] : ["last seen ", agoElement(u.last_seen)];
    card.meta.replaceChildren(`${plural(u.visits, "visit")} · `, ...seen);
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
        h("button", { type: "button", class: "admin-only primary wide", testid: "unknown-enroll",
                      onclick: (ev) => nameUnknown(u.hash, ev.currentTarget) }, "Name this person"),
        h("button", { type: "button", testid: "unknown-history", onclick: () => openTimeline(u.hash) }, "History"),
        h("button", { type: "button", class: "admin-only", testid: "unknown-review", title: "Check their visits; split off any that are somebody else",
                      onclick: () => reviewUnknown(u.hash) }, "Review"),
        h("button", { type: "button", class: "admin-only danger", testid: "unknown-forget",
                      onclick: (ev) => forgetUnknown(u.hash, ev.currentTarget) }, "Forget"))));
  return card;
}

/** The review of one stranger's visits, where any that are somebody else can be split off. */
async function reviewUnknown(hash) {
  showView("review");
  await reviewGroup(hash);
  $("view-review").scrollIntoView({ behavior: "smooth", block: "start" });
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
