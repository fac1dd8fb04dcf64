// The HTTP API: every call goes through api(); a failure becomes an ApiError carrying the
// server's text. A 401 (the session ended, or never began) sends the browser to /login.

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body || {};
  }
}

export async function api(method, url, body) {
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
