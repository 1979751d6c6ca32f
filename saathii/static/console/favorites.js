// My favorites: the list with live dots and counts, paging by Link header, add, remove, filters.
import { $, clockTime, describe, el, presenceState } from "./dom.js";
import { action, api, showError } from "./api.js";

const list = {
  items: new Map(),  // listener id -> the item as listed, kept current by feed events
  counts: null,      // {total_count, online_count, available_count}
  next: null,        // the rel="next" link
  request: 0,        // the latest full load; older answers are dropped
  timer: null,
};

function nextLink(header) {
  // Link: <url>; rel="next", <url>; rel="prev"
  for (const part of (header || "").split(",")) {
    const match = part.match(/<([^>]*)>\s*;\s*rel="?([^";]+)"?/);
    if (match && match[2] === "next") return match[1];
  }
  return null;
}

function filtered() {
  return $("online-only").checked || $("available-only").checked;
}

function query() {
  const params = new URLSearchParams();
  if ($("online-only").checked) params.set("online_only", "true");
  if ($("available-only").checked) params.set("available_only", "true");
  return params;
}

function row(item) {
  const state = presenceState(item);
  const details = [`id ${item.user_id}`, item.preferred_language, item.rating && `★ ${item.rating}`]
    .filter(Boolean).join(" · ");
  const remove = el("button", { type: "button", className: "small remove", text: "Remove" });
  remove.addEventListener("click", action(() => removeFavorite(item.user_id)));
  return el("li", { className: "favorite", "data-user-id": String(item.user_id), "data-state": state },
    el("span", { className: "dot", "data-state": state }),
    el("span", { className: "name", text: item.username }),
    el("span", { className: "muted", text: details }),
    el("span", { className: "state", text: describe(item) }),
    remove);
}

function renderCounts() {
  const counts = list.counts || { total_count: 0, online_count: 0, available_count: 0 };
  $("total-count").textContent = counts.total_count;
  $("online-count").textContent = counts.online_count;
  $("available-count").textContent = counts.available_count;
  $("favorites-empty").hidden = counts.total_count !== 0 || list.items.size !== 0;
  $("load-more").hidden = !list.next;
}

function takeCounts(data) {
  const { total_count, online_count, available_count } = data;
  list.counts = { total_count, online_count, available_count };
}

export async function loadFavorites() {
  const ticket = ++list.request;
  const { data, response, revalidated } = await api("GET", `/favorites?${query()}`);
  if (ticket !== list.request) return;
  $("favorites-note").textContent = revalidated
    ? `Unchanged since the last load (304 Not Modified), at ${clockTime()}` : "";
  list.items.clear();
  $("favorites").replaceChildren();
  append(data, response);
}

export async function loadMore() {
  const ticket = list.request;
  const { data, response } = await api("GET", list.next);
  if (ticket === list.request) append(data, response);
}

function append(data, response) {
  for (const item of data.favorites) {
    if (list.items.has(item.user_id)) continue;
    list.items.set(item.user_id, item);
    $("favorites").append(row(item));
  }
  takeCounts(data);
  list.next = data.favorites.length ? nextLink(response.headers.get("Link")) : null;
  renderCounts();
}

async function refreshCounts() {
  const ticket = list.request;
  const params = query();
  params.set("limit", "1");
  const { data } = await api("GET", `/favorites?${params}`);
  if (ticket !== list.request) return;
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

export async function addFavorite() {
  const id = listenerId();
  if (id === null) return;
  await api("POST", "/favorites/add", { listener_id: id });
  await loadFavorites();
}

export async function removeFavorite(id) {
  if (id === undefined) id = listenerId();
  if (id === null) return;
  await api("DELETE", "/favorites/remove", { listener_id: id });
  await loadFavorites();
}

function later(work, delay) {
  clearTimeout(list.timer);
  list.timer = setTimeout(() => work().catch(() => {}), delay);  // api() shows errors
}

// A presence event: move the listed listener's dot now, and the counts by what changed;
// then read the counts again, which also covers listeners not loaded yet. Under a filter
// a listener may enter or leave the list: read the list again instead. An event older
// than what the list shows (its status version is lower) changes nothing.
export function followPresence(data) {
  if (filtered()) {
    later(loadFavorites, 500);
    return;
  }
  const item = list.items.get(data.user_id);
  if (item && data.version < item.version) return;
  if (item) {
    const before = presenceState(item);
    Object.assign(item, data);
    const after = presenceState(item);
    if (list.counts && before !== after) {
      list.counts.online_count += (after !== "offline") - (before !== "offline");
      list.counts.available_count += (after === "available") - (before === "available");
      renderCounts();
    }
    const shown = $("favorites").querySelector(`li[data-user-id="${data.user_id}"]`);
    if (shown) shown.replaceWith(row(item));
  }
  if (item || list.next) later(refreshCounts, 2500);
}

export function resetFavorites() {
  clearTimeout(list.timer);
  list.request += 1;
  list.items.clear();
  list.counts = null;
  list.next = null;
  $("favorites").replaceChildren();
  $("listener-id").value = "";
  renderCounts();
}
