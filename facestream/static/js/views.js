// The views: gallery, history, review and unknown visitors as tabs (the URL's #fragment keeps the
// one shown across reloads). The tab shown is shown.view (state.js), written only here.

import { $ } from "./dom.js";
import { shown } from "./state.js";
import { reloadHistory } from "./history.js";
import { loadUnknowns } from "./unknowns.js";
import { reloadReview } from "./review.js";

const VIEWS = ["gallery", "history", "review", "unknowns"];

/** Show the tab `name` (the gallery for anything else), loading it when it was not shown. */
export function showView(name) {
  if (!VIEWS.includes(name)) name = "gallery";
  for (const view of VIEWS) {
    const on = view === name;
    const tab = $(`tab-${view}`);
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${view}`).hidden = !on;
  }
  const entering = shown.view !== name;
  shown.view = name;
  const url = name === "gallery" ? location.pathname + location.search : `#${name}`;
  if (location.hash !== (name === "gallery" ? "" : `#${name}`)) history.replaceState(null, "", url);
  if (name === "history" && entering) reloadHistory();
  if (name === "unknowns" && entering) loadUnknowns();
  if (name === "review" && entering) reloadReview();
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
