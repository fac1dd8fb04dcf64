/* The login page: POST /login as JSON, then the dashboard; errors (wrong password, too many
   attempts) are shown as the server words them. */
"use strict";

const form = document.getElementById("login-form");
const problem = document.getElementById("login-error");

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  problem.textContent = "";
  const button = document.getElementById("login-submit");
  button.disabled = true;
  try {
    const resp = await fetch("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        username: document.getElementById("username").value,
        password: document.getElementById("password").value,
      }),
    });
    if (resp.ok) {
      location.assign("/");
      return;
    }
    let message = `HTTP ${resp.status}`;
    try { message = (await resp.json()).error || message; } catch { /* not JSON */ }
    problem.textContent = message;
  } catch {
    problem.textContent = "the server is not reachable";
  } finally {
    button.disabled = false;
  }
});
