// The Saathii live console: signing in and out, and the wiring of the panels.
import { $, el } from "./dom.js";
import { action, api, clearErrors, current, session, showError, whenTokenRefused } from "./api.js";
import {
  autoHeartbeatToggled, goAvailable, goBusy, goOffline, heartbeat, refreshStatus,
  renderStatus, startStatus, stopStatus,
} from "./status.js";
import {
  addFavorite, followPresence, loadFavorites, loadMore, removeFavorite, resetFavorites,
} from "./favorites.js";
import { clearFeedLog, connectFeed, disconnectFeed, sendToFeed, startFeed, stopFeed } from "./feed.js";

const TOKEN_KEY = "saathii.console.token";

function demoUsers() {
  try { return JSON.parse($("demo-users-data").textContent) || []; } catch (error) { return []; }
}

function renderDemoUsers() {
  const users = demoUsers();
  $("demo-users-panel").hidden = users.length === 0;
  $("demo-users").replaceChildren(...users.map((user) => {
    const button = el("button", {
      type: "button", className: "demo-user sign-in", "data-user-id": String(user.id),
      text: `${user.username} (${user.role}, id ${user.id})`,
    });
    button.addEventListener("click", action(() => signIn(user.token)));
    return el("li", {}, button);
  }));
}

function signingIn(pending) {
  document.querySelectorAll("#sign-in button").forEach((button) => { button.disabled = pending; });
}

async function signIn(token) {
  token = (token || "").trim();
  if (!token) {
    showError("sign in", "missing", "Paste an access token first");
    return;
  }
  session.generation += 1;
  session.token = token;
  const generation = session.generation;
  $("sign-in-note").textContent = "";
  signingIn(true);
  try {
    const { data: status } = await api("GET", "/both/status/me");
    const { data: presence } = await api("GET", `/users/${status.user_id}/presence`);
    current(generation);
    session.me = { id: status.user_id, username: presence.username };
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    $("whoami").textContent = `${presence.username} (id ${status.user_id})`;
    $("sign-in").hidden = true;
    $("signed-in").hidden = false;
    $("sign-out").hidden = false;
    startStatus(status);
    startFeed({
      presence(data) {
        if (session.me && data.user_id === session.me.id) renderStatus(data);
        followPresence(data);
      },
      reopened: action(async () => Promise.all([refreshStatus(), loadFavorites()])),
    });
    await loadFavorites();
  } finally {
    if (generation === session.generation) signingIn(false);
  }
}

function signOut(reason) {
  session.generation += 1;
  session.token = null;
  session.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  stopStatus();
  stopFeed();
  resetFavorites();
  signingIn(false);
  $("whoami").textContent = "Signed out";
  $("sign-in").hidden = false;
  $("signed-in").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in-note").textContent = reason || "";
}

function wire() {
  const on = (id, handler) => $(id).addEventListener("click", action(handler));
  on("use-token", () => signIn($("token-input").value));
  on("sign-out", async () => {
    clearErrors();
    signOut();
  });
  on("clear-errors", async () => clearErrors());
  on("heartbeat", () => heartbeat(false));
  on("go-busy", goBusy);
  on("go-available", goAvailable);
  on("go-offline", goOffline);
  on("reload-favorites", loadFavorites);
  on("load-more", loadMore);
  on("add-favorite", addFavorite);
  on("remove-favorite", () => removeFavorite());
  on("feed-disconnect", async () => disconnectFeed());
  on("feed-connect", async () => connectFeed());
  on("feed-ping", async () => sendToFeed({ type: "ping" }));
  on("feed-send", async () => sendToFeed($("feed-message").value));
  on("clear-feed", async () => clearFeedLog());
  for (const id of ["online-only", "available-only"]) {
    $(id).addEventListener("change", action(loadFavorites));
  }
  $("auto-heartbeat").addEventListener("change", autoHeartbeatToggled);
  whenTokenRefused(signOut);
}

wire();
renderDemoUsers();
const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) action(() => signIn(saved))();
