// The Saathii live console: the public REST API and the feed socket, as any client uses them.
"use strict";

(function () {
  const TOKEN_KEY = "saathii.console.token";
  const HEARTBEAT_MS = 30000;
  const MAX_LOG = 500;
  const MAX_ERRORS = 20;
  const MAX_BACKOFF_MS = 30000;
  const PRESENCE_TYPES = new Set([
    "listener_online", "listener_offline", "listener_busy", "listener_available",
    "presence_update",
  ]);

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    me: null,            // {id, username}
    favorites: new Map(), // listener id -> favorite item as listed
    counts: null,        // {total_count, online_count, available_count}
    next: null,          // the list's rel="next" link
    heartbeatTimer: null,
    countsTimer: null,
    feed: { socket: null, lastEventId: null, attempt: 0, timer: null, wanted: false, opened: false },
  };

  // --- helpers ---------------------------------------------------------------------

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (name === "className") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function clockTime(date) {
    return (date || new Date()).toLocaleTimeString([], { hour12: false });
  }

  function presenceState(item) {
    if (!item.is_online) return "offline";
    return item.is_busy ? "busy" : "available";
  }

  function describe(item) {
    const current = presenceState(item);
    if (current === "busy") {
      return item.wait_time === null || item.wait_time === undefined
        ? "busy" : `busy, about ${item.wait_time} min`;
    }
    if (current === "offline") {
      return item.last_seen ? `offline, last seen ${new Date(item.last_seen).toLocaleString()}` : "offline";
    }
    return "available";
  }

  function nextLink(header) {
    // Link: <url>; rel="next", <url>; rel="prev"
    for (const part of (header || "").split(",")) {
      const match = part.match(/<([^>]*)>\s*;\s*rel="?([^";]+)"?/);
      if (match && match[2] === "next") return match[1];
    }
    return null;
  }

  // --- errors ----------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  function showError(what, status, detail, errors) {
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

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${state.token}`, Accept: "application/json" };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const shown = path.replace(/^https?:\/\/[^/]+/, "");
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      showError(`${method} ${shown}`, "network error", error.message);
      throw new ApiError(0, error.message);
    }
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (error) { data = null; }
    if (!response.ok) {
      const detail = (data && data.detail) || text || response.statusText;
      showError(`${method} ${shown}`, response.status, detail, data && data.errors);
      if (response.status === 401) signOut("The token was refused; sign in again.");
      throw new ApiError(response.status, detail);
    }
    return { data, response };
  }

  // Buttons report their own failures through showError; nothing is swallowed silently.
  function action(handler) {
    return (event) => handler(event).catch((error) => {
      if (!(error instanceof ApiError)) showError("console", "error", error.message);
    });
  }

  // --- sign in and out ---------------------------------------------------------------

  function demoUsers() {
    try { return JSON.parse($("demo-users-data").textContent) || []; } catch (error) { return []; }
  }

  function renderDemoUsers() {
    const users = demoUsers();
    $("demo-users-panel").hidden = users.length === 0;
    const list = $("demo-users");
    list.replaceChildren(...users.map((user) => el("li", {},
      el("button", {
        type: "button", className: "demo-user", "data-user-id": String(user.id),
        text: `${user.username} (${user.role}, id ${user.id})`,
      }))));
    list.querySelectorAll("button").forEach((button, index) => {
      button.addEventListener("click", action(() => signIn(users[index].token)));
    });
  }

  async function signIn(token) {
    token = (token || "").trim();
    if (!token) {
      showError("sign in", "missing", "Paste an access token first");
      return;
    }
    state.token = token;
    const { data: status } = await api("GET", "/both/status/me");
    const { data: presence } = await api("GET", `/users/${status.user_id}/presence`);
    sessionStorage.setItem(TOKEN_KEY, token);
    state.me = { id: status.user_id, username: presence.username };
    $("whoami").textContent = `${presence.username} (id ${status.user_id})`;
    $("sign-in").hidden = true;
    $("signed-in").hidden = false;
    $("sign-out").hidden = false;
    $("auto-heartbeat").checked = true;
    renderStatus(status);
    scheduleHeartbeat();
    state.feed.lastEventId = null;
    connectFeed();
    await loadFavorites();
  }

  function signOut(reason) {
    state.token = null;
    state.me = null;
    sessionStorage.removeItem(TOKEN_KEY);
    clearTimeout(state.heartbeatTimer);
    clearTimeout(state.countsTimer);
    disconnectFeed();
    setFeedState("closed", "closed");
    $("feed-log").replaceChildren();
    $("favorites").replaceChildren();
    state.favorites.clear();
    $("whoami").textContent = "Signed out";
    $("sign-in").hidden = false;
    $("signed-in").hidden = true;
    $("sign-out").hidden = true;
    if (reason) $("feed-note").textContent = reason;
  }

  // --- my status -------------------------------------------------------------------

  function renderStatus(status) {
    const current = presenceState(status);
    $("my-dot").dataset.state = current;
    $("my-status").dataset.state = current;
    $("my-status").textContent = describe(status);
    $("my-last-seen").textContent = status.last_seen
      ? `last seen ${new Date(status.last_seen).toLocaleString()}` : "never seen";
  }

  async function refreshStatus() {
    const { data } = await api("GET", "/both/status/me");
    renderStatus(data);
  }

  async function heartbeat(automatic) {
    await api("POST", "/both/status/heartbeat");
    $("heartbeat-note").textContent =
      `${automatic ? "Automatic heartbeat" : "Heartbeat"} sent at ${clockTime()}`;
    await refreshStatus();
  }

  function scheduleHeartbeat() {
    clearTimeout(state.heartbeatTimer);
    if (!state.token || !$("auto-heartbeat").checked) return;
    state.heartbeatTimer = setTimeout(() => {
      heartbeat(true).catch(() => {}).finally(scheduleHeartbeat);  // errors are shown by api()
    }, HEARTBEAT_MS);
  }

  async function updateStatus(change) {
    const { data } = await api("PUT", "/both/status/me", change);
    renderStatus(data);
  }

  async function goBusy() {
    const raw = $("wait-time").value.trim();
    await updateStatus({ is_busy: true, wait_time: raw === "" ? null : Number(raw) });
  }

  async function goOffline() {
    await updateStatus({ is_online: false });
    // A phone that goes offline stops beating; so does the console until asked again.
    $("auto-heartbeat").checked = false;
    scheduleHeartbeat();
  }

  // --- favorites -------------------------------------------------------------------

  function favoritesQuery() {
    const query = new URLSearchParams();
    if ($("online-only").checked) query.set("online_only", "true");
    if ($("available-only").checked) query.set("available_only", "true");
    return query;
  }

  function favoriteItem(item) {
    const current = presenceState(item);
    const details = [`id ${item.user_id}`, item.preferred_language, item.rating && `★ ${item.rating}`]
      .filter(Boolean).join(" · ");
    const remove = el("button", { type: "button", className: "small remove", text: "Remove" });
    remove.addEventListener("click", action(() => removeFavorite(item.user_id)));
    return el("li", {
      className: "favorite", "data-user-id": String(item.user_id), "data-state": current,
    },
    el("span", { className: "dot", "data-state": current }),
    el("span", { className: "name", text: item.username }),
    el("span", { className: "muted", text: details }),
    el("span", { className: "state", text: describe(item) }),
    remove);
  }

  function renderCounts() {
    const counts = state.counts || { total_count: 0, online_count: 0, available_count: 0 };
    $("total-count").textContent = counts.total_count;
    $("online-count").textContent = counts.online_count;
    $("available-count").textContent = counts.available_count;
    $("favorites-empty").hidden = counts.total_count !== 0 || state.favorites.size !== 0;
    $("load-more").hidden = !state.next;
  }

  function takeCounts(data) {
    state.counts = {
      total_count: data.total_count,
      online_count: data.online_count,
      available_count: data.available_count,
    };
  }

  async function loadFavorites(url) {
    const first = !url;
    const { data, response } = await api("GET", url || `/favorites?${favoritesQuery()}`);
    if (first) {
      state.favorites.clear();
      $("favorites").replaceChildren();
    }
    for (const item of data.favorites) {
      if (state.favorites.has(item.user_id)) continue;
      state.favorites.set(item.user_id, item);
      $("favorites").append(favoriteItem(item));
    }
    takeCounts(data);
    state.next = data.favorites.length ? nextLink(response.headers.get("Link")) : null;
    renderCounts();
  }

  async function refreshCounts() {
    const query = favoritesQuery();
    query.set("limit", "1");
    const { data } = await api("GET", `/favorites?${query}`);
    takeCounts(data);
    renderCounts();
  }

  function listenerId() {
    const value = Number($("listener-id").value);
    if (!Number.isInteger(value) || value < 1) {
      showError("favorites", "invalid", "Enter a listener id (a positive whole number)");
      return null;
    }
    return value;
  }

  async function addFavorite() {
    const id = listenerId();
    if (id === null) return;
    await api("POST", "/favorites/add", { listener_id: id });
    await loadFavorites();
  }

  async function removeFavorite(id) {
    if (id === undefined) id = listenerId();
    if (id === null) return;
    await api("DELETE", "/favorites/remove", { listener_id: id });
    await loadFavorites();
  }

  function filtered() {
    return $("online-only").checked || $("available-only").checked;
  }

  // A presence event: move the listed listener's dot now, and the counts by what changed;
  // then read the counts again, which also covers listeners not loaded on this page.
  // Under a filter a listener may enter or leave the list: read the list again instead.
  function followPresence(data) {
    if (state.me && data.user_id === state.me.id) renderStatus(data);
    const item = state.favorites.get(data.user_id);
    if (filtered()) {
      clearTimeout(state.countsTimer);
      state.countsTimer = setTimeout(() => loadFavorites().catch(() => {}), 500);
      return;
    }
    if (item) {
      const before = presenceState(item);
      Object.assign(item, data);
      const after = presenceState(item);
      if (state.counts && before !== after) {
        state.counts.online_count += (after !== "offline") - (before !== "offline");
        state.counts.available_count += (after === "available") - (before === "available");
        renderCounts();
      }
      const row = $("favorites").querySelector(`li[data-user-id="${data.user_id}"]`);
      if (row) row.replaceWith(favoriteItem(item));
    }
    if (item || state.next) {  // a favorite, or perhaps one not loaded yet
      clearTimeout(state.countsTimer);
      state.countsTimer = setTimeout(() => refreshCounts().catch(() => {}), 2500);
    }
  }

  // --- the feed --------------------------------------------------------------------

  function setFeedState(name, text) {
    $("feed-state").dataset.state = name;
    $("feed-state").textContent = text;
  }

  function logMessage(direction, message) {
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
    const log = $("feed-log");
    log.prepend(item);
    while (log.children.length > MAX_LOG) log.lastChild.remove();
  }

  function feedUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ token: state.token });
    if (state.feed.lastEventId !== null) query.set("since", String(state.feed.lastEventId));
    return `${scheme}//${location.host}/ws/feed?${query}`;
  }

  function connectFeed() {
    const feed = state.feed;
    clearTimeout(feed.timer);
    if (!state.token || (feed.socket && feed.socket.readyState <= WebSocket.OPEN)) return;
    feed.wanted = true;
    feed.opened = false;
    setFeedState("connecting", feed.lastEventId === null
      ? "connecting" : `connecting (since #${feed.lastEventId})`);
    const socket = new WebSocket(feedUrl());
    feed.socket = socket;
    socket.addEventListener("open", () => {
      feed.opened = true;
      feed.attempt = 0;
      setFeedState("open", "connected");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try { message = JSON.parse(event.data); } catch (error) {
        logMessage("received", { type: "unparsable", data: event.data });
        return;
      }
      if (typeof message.id === "number") feed.lastEventId = message.id;
      logMessage("received", message);
      if (PRESENCE_TYPES.has(message.type)) followPresence(message.data);
    });
    socket.addEventListener("close", (event) => {
      if (feed.socket !== socket) return;
      feed.socket = null;
      if (!feed.wanted || !state.token) {
        setFeedState("closed", "disconnected");
        return;
      }
      retryFeed(event, socket);
    });
  }

  function retryFeed(event, socket) {
    const feed = state.feed;
    const reason = `closed (${event.code}${event.reason ? ": " + event.reason : ""})`;
    if (!feed.opened) {
      // The upgrade was refused or never reached us: a refused token is final.
      api("GET", "/both/status/me").then(() => scheduleReconnect(reason), () => {
        if (state.token) setFeedState("stopped", "stopped: the server refused the socket");
      });
      return;
    }
    scheduleReconnect(reason);
  }

  function scheduleReconnect(reason) {
    const feed = state.feed;
    if (!feed.wanted || !state.token) return;
    feed.attempt += 1;
    const ceiling = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** (feed.attempt - 1));
    const delay = Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    setFeedState("waiting", `${reason}; reconnecting in ${(delay / 1000).toFixed(1)} s`);
    feed.timer = setTimeout(connectFeed, delay);
  }

  function disconnectFeed() {
    const feed = state.feed;
    feed.wanted = false;
    clearTimeout(feed.timer);
    if (feed.socket) feed.socket.close(1000, "console disconnect");
    feed.socket = null;
    setFeedState("closed", "disconnected");
  }

  function send(message) {
    const socket = state.feed.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("feed", "not connected", "Connect the feed before sending");
      return;
    }
    socket.send(typeof message === "string" ? message : JSON.stringify(message));
    let shown;
    try { shown = typeof message === "string" ? JSON.parse(message) : message; } catch (error) {
      shown = { type: "raw", text: message };
    }
    logMessage("sent", shown);
  }

  // --- wiring ----------------------------------------------------------------------

  function wire() {
    const on = (id, handler) => $(id).addEventListener("click", action(handler));
    on("use-token", () => signIn($("token-input").value));
    on("sign-out", async () => signOut());
    on("clear-errors", async () => {
      $("error-list").replaceChildren();
      $("errors").hidden = true;
    });
    on("heartbeat", () => heartbeat(false));
    on("go-busy", goBusy);
    on("go-available", () => updateStatus({ is_online: true, is_busy: false }));
    on("go-offline", goOffline);
    on("reload-favorites", () => loadFavorites());
    on("load-more", () => loadFavorites(state.next));
    on("add-favorite", addFavorite);
    on("remove-favorite", () => removeFavorite());
    on("feed-disconnect", async () => disconnectFeed());
    on("feed-connect", async () => connectFeed());
    on("feed-ping", async () => send({ type: "ping" }));
    on("feed-send", async () => send($("feed-message").value));
    on("clear-feed", async () => $("feed-log").replaceChildren());
    for (const id of ["online-only", "available-only"]) {
      $(id).addEventListener("change", action(() => loadFavorites()));
    }
    $("auto-heartbeat").addEventListener("change", scheduleHeartbeat);
  }

  document.addEventListener("DOMContentLoaded", () => {
    wire();
    renderDemoUsers();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) action(() => signIn(saved))();
  });
})();
