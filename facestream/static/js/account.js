// Who is logged in: the account in the top bar, and Log out.

import { $ } from "./dom.js";
import { api } from "./api.js";

/** Show the account in the top bar, with Log out; a viewer's page says it is read-only. */
export async function showAccount() {
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
