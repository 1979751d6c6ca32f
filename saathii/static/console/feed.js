// The feed socket: a live log, reconnection with backoff, resuming with `since`.
import { $, clockTime, el } from "./dom.js";
import { ApiError, api, session, showError } from "./api.js";

const MAX_LOG = 500;
const MAX_BACKOFF_MS = 30000;
const PRESENCE_TYPES = new Set([
  "listener_online", "listener_offline", "listener_busy", "listener_available",
  "presence_update",
]);

const feed = {
  socket: null,
  cursor: null,       // the id of the last stored event received: `since` on reconnect
  attempt: 0,
  timer: null,
  wanted: false,      // false after Disconnect or sign-out: no reconnecting
  everOpened: false,  // a later open is a reconnection: presence is read again
  hooks: { presence: () => {}, reopened: () => {} },
};

function setState(name, text) {
  $("feed-state").dataset.state = name;
  $("feed-state").textContent = text;
}

function log(direction, message) {
  const type = message.type || "?";
  const data = direction === "sent" ? message : message.data;
  const when = direction === "sent" || !message.timestamp ? new Date() : new Date(message.timestamp);
  const item = el("li", { "data-type": type, "data-direction": direction },
    el("time", { text: clockTime(when) }),
    el("span", {
      className: "type",
      text: (direction === "sent" ? "→ " : "") + type + (message.id ? ` #${message.id}` : ""),
    }),
    el("span", { className: "data", text: JSON.stringify(data) }));
  const entries = $("feed-log");
  entries.prepend(item);
  while (entries.children.length > MAX_LOG) entries.lastChild.remove();
}

function url() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ token: session.token });
  if (feed.cursor !== null) query.set("since", String(feed.cursor));
  return `${scheme}//${location.host}/ws/feed?${query}`;
}

function received(raw) {
  let message;
  try { message = JSON.parse(raw); } catch (error) {
    log("received", { type: "unparsable", data: raw });
    return;
  }
  if (typeof message.id === "number") feed.cursor = message.id;
  if (message.type === "connection_established" && feed.cursor === null) {
    feed.cursor = message.data.last_event_id ?? 0;  // nothing stored yet: since=0
  }
  log("received", message);
  if (PRESENCE_TYPES.has(message.type)) feed.hooks.presence(message.data);
}

export function connectFeed() {
  clearTimeout(feed.timer);
  if (!session.token || feed.socket) return;
  feed.wanted = true;
  const generation = session.generation;
  let opened = false;
  setState("connecting", feed.cursor === null ? "connecting" : `connecting (since #${feed.cursor})`);
  const socket = new WebSocket(url());
  feed.socket = socket;
  socket.addEventListener("open", () => {
    opened = true;
    feed.attempt = 0;
    setState("open", "connected");
    if (feed.everOpened) feed.hooks.reopened();  // presence is state: read it again
    feed.everOpened = true;
  });
  socket.addEventListener("message", (event) => received(event.data));
  socket.addEventListener("close", (event) => {
    if (feed.socket !== socket || generation !== session.generation) return;
    feed.socket = null;
    if (!feed.wanted) {
      setState("closed", "disconnected");
      return;
    }
    const reason = `closed (${event.code}${event.reason ? ": " + event.reason : ""})`;
    if (opened) {
      // A restarting server names when to come back (1012), spreading its clients out.
      const advised = event.code === 1012 && /reconnect in (\d+) ms/.exec(event.reason);
      scheduleReconnect(reason, advised ? Number(advised[1]) : null);
      return;
    }
    // The upgrade failed: a refused token is final (api() signs out on 401); anything
    // else (the server restarting, a network drop) is retried.
    setState("waiting", `${reason}; checking the token`);
    api("GET", "/both/status/me").then(() => scheduleReconnect(reason), (error) => {
      if (error instanceof ApiError && error.status !== 401) scheduleReconnect(reason);
    });
  });
}

function scheduleReconnect(reason, advisedMs = null) {
  if (!feed.wanted || !session.token || feed.socket) return;
  clearTimeout(feed.timer);
  feed.attempt += 1;
  const ceiling = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (feed.attempt - 1));
  const delay = advisedMs ?? Math.round(ceiling / 2 + Math.random() * ceiling / 2);
  setState("waiting", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
  feed.timer = setTimeout(connectFeed, delay);
}

export function disconnectFeed() {
  feed.wanted = false;
  clearTimeout(feed.timer);
  const socket = feed.socket;
  feed.socket = null;
  if (socket) socket.close(1000, "console disconnect");
  setState("closed", "disconnected");
}

export function sendToFeed(message) {
  const socket = feed.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) {
    showError("feed", "not connected", "Connect the feed before sending");
    return;
  }
  socket.send(typeof message === "string" ? message : JSON.stringify(message));
  let shown;
  try { shown = typeof message === "string" ? JSON.parse(message) : message; } catch (error) {
    shown = { type: "raw", text: message };
  }
  log("sent", shown);
}

export function clearFeedLog() {
  $("feed-log").replaceChildren();
}

// A new sign-in: a fresh log and cursor; presence events and reconnections go to the hooks.
export function startFeed(hooks) {
  feed.hooks = hooks;
  feed.cursor = null;
  feed.attempt = 0;
  feed.everOpened = false;
  clearFeedLog();
  connectFeed();
}

export function stopFeed() {
  disconnectFeed();
  clearFeedLog();
  feed.cursor = null;
  feed.everOpened = false;
}
