// Dates and times, in the browser's locale.

import { h } from "./dom.js";

export const isoTime = (seconds) => new Date(seconds * 1000).toISOString();

const formatClock = (seconds) =>
  new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });

/** The time of day, with the date in front when it is not today. */
export function formatTime(seconds) {
  const d = new Date(seconds * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  return sameDay ? formatClock(seconds) : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${formatClock(seconds)}`;
}

export const formatFull = (seconds) =>
  new Date(seconds * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "medium" });

export const formatDate = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });

export const formatShortDate = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { month: "short", day: "numeric" });

export const formatDay = (seconds) =>
  new Date(seconds * 1000).toLocaleDateString([], { weekday: "long", year: "numeric", month: "long", day: "numeric" });

const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** "just now" and "12 minutes ago" within the hour; the local (date and) time after that. */
export function formatAgo(seconds) {
  const ago = Date.now() / 1000 - seconds;
  if (ago < 60) return "just now";
  if (ago < 3600) return relative.format(-Math.floor(ago / 60), "minute");
  return formatTime(seconds);
}

/** A <time> saying how long ago `seconds` was; kept current while the page is open. */
export function agoElement(seconds) {
  return h("time", { datetime: isoTime(seconds), title: formatFull(seconds), "data-ago": String(seconds) },
    formatAgo(seconds));
}

/** Keep every agoElement on the page current. */
export function keepAgoCurrent() {
  setInterval(() => {
    for (const el of document.querySelectorAll("time[data-ago]")) el.textContent = formatAgo(Number(el.dataset.ago));
  }, 30_000);
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Local midnight starting the day of a date input's value ("YYYY-MM-DD") plus `days`, in
 *  seconds since 1970; null without a date. (Date("YYYY-MM-DD") would read it as UTC.) */
export function dayStart(value, days = 0) {
  if (!value) return null;
  const [y, m, d] = value.split("-").map(Number);
  return new Date(y, m - 1, d + days).getTime() / 1000;
}
