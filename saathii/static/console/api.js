// The REST API as the console calls it: the signed-in session, errors shown, stale answers dropped.
import { $, clockTime, el } from "./dom.js";

const MAX_ERRORS = 20;

// Who is signed in. `generation` changes at every sign-in and sign-out, so an answer to a
// request made before is recognised and dropped instead of landing on the wrong user.
export const session = { token: null, me: null, generation: 0 };

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

// The session changed while the request was out: its answer no longer matters.
export class Stale extends Error {}

let onRefused = () => {};

export function whenTokenRefused(handler) {
  onRefused = handler;
}

export function showError(what, status, detail, errors) {
  const item = el("li", {},
    el("time", { text: clockTime() + " " }),
    el("span", { className: "what", text: what + " " }),
    el("span", { className: "status", text: String(status) + " " }),
    el("span", { className: "detail", text: detail }));
  if (errors) item.append(el("code", { text: " " + JSON.stringify(errors) }));
  const list = $("error-list");
  list.prepend(item);
  while (list.children.length > MAX_ERRORS) list.lastChild.remove();
  $("errors").hidden = false;
}

export function clearErrors() {
  $("error-list").replaceChildren();
  $("errors").hidden = true;
}

export function current(generation) {
  if (generation !== session.generation || !session.token) throw new Stale();
}

// GET answers kept with their ETags (per sign-in): asked again with If-None-Match, a 304
// says the kept answer is current, and costs the service no database read (docs/api.md).
const kept = new Map();
const MAX_KEPT = 50;

export async function api(method, path, body) {
  const { token, generation } = session;
  if (!token) throw new Stale();
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const key = `${generation} ${path}`;
  const known = method === "GET" ? kept.get(key) : undefined;
  if (known) headers["If-None-Match"] = known.etag;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const shown = `${method} ${path.replace(/^https?:\/\/[^/]+/, "")}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    current(generation);
    showError(shown, "network error", error.message);
    throw new ApiError(0, error.message);
  }
  const text = await response.text();
  current(generation);
  if (response.status === 304 && known) {
    return { data: known.data, response: known.response, revalidated: true };
  }
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (error) { data = null; }
  if (!response.ok) {
    const detail = (data && data.detail) || text || response.statusText;
    showError(shown, response.status, detail, data && data.errors);
    if (response.status === 401) onRefused("The token was refused; sign in again.");
    throw new ApiError(response.status, detail);
  }
  const etag = response.headers.get("ETag");
  if (method === "GET" && etag) {
    kept.delete(key);
    if (kept.size >= MAX_KEPT) kept.delete(kept.keys().next().value);
    kept.set(key, { etag, data, response });
  }
  return { data, response, revalidated: false };
}

// A click handler whose failures are shown (API errors already are), never swallowed.
export function action(handler) {
  return (event) => Promise.resolve().then(() => handler(event)).catch((error) => {
    if (!(error instanceof ApiError) && !(error instanceof Stale)) {
      showError("console", "error", error.message);
    }
  });
}
