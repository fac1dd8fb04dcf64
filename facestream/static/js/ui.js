// Messages and dialogs: one notice at a time (errors stay until dismissed or replaced),
// act() to run a user's action with its outcome shown, and the native <dialog>s.

import { $, h } from "./dom.js";
import { ApiError } from "./api.js";

let noticeTimer = null;

export function notify(text, kind = "ok", action = null) {
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

export function clearNotice() {
  clearTimeout(noticeTimer);
  $("notice").replaceChildren();
}

/**
 * Run a user action: disable its button while it runs, show success or the API's error.
 * `what` names the action in the error ("Could not rename Alex: ..."). `fn` returns the
 * success message, or {text, action} for a message with a button.
 */
export async function act(what, button, fn) {
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

// -- dialogs (native <dialog>): confirmDialog(...) resolves true only on the confirm button

/**
 * `ready()`, if given, enables the confirm button only while the dialog's inputs are valid;
 * `focus` is the element to start in (else Cancel). Enter in a text field confirms.
 */
export function confirmDialog({ title, body, confirm = "OK", danger = false, ready = null, focus = null }) {
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

/** Ask for a name and an optional email; null when cancelled. `intro` is a text or a list
 *  of texts and elements; `ready()`, if given, must also hold to confirm. */
export async function askName(title, intro, ready = null) {
  const name = h("input", { maxlength: "200", autocomplete: "off", testid: "name-input" });
  const email = h("input", { type: "email", autocomplete: "off", testid: "email-input" });
  const ok = await confirmDialog({
    title,
    body: [
      ...[].concat(intro).filter(Boolean),
      h("label", { class: "field" }, h("span", {}, "Name"), name),
      h("label", { class: "field" }, h("span", {}, "Email ", h("em", {}, "optional")), email),
    ],
    confirm: "Add to the gallery",
    ready: () => name.value.trim() !== "" && (!ready || ready()),
    focus: name,
  });
  return ok ? { name: name.value.trim(), email: email.value.trim() } : null;
}
