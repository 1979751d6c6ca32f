// My status: heartbeat, busy, available, offline, and the automatic heartbeat.
import { $, clockTime, describe, presenceState } from "./dom.js";
import { api } from "./api.js";

const HEARTBEAT_MS = 30000;
let timer = null;
let pausedByOffline = false;  // going offline unticks the automatic heartbeat
let shownVersion = 0;  // the status version shown: an older view (a late event) is ignored

export function renderStatus(status) {
  if (status.version < shownVersion) return;
  shownVersion = status.version;
  const state = presenceState(status);
  $("my-dot").dataset.state = state;
  $("my-status").dataset.state = state;
  $("my-status").textContent = describe(status);
  $("my-last-seen").textContent = status.last_seen
    ? `last seen ${new Date(status.last_seen).toLocaleString()}` : "never seen";
}

export async function refreshStatus() {
  const { data } = await api("GET", "/both/status/me");
  renderStatus(data);
}

// Back online after going offline here: the automatic heartbeat resumes.
function backOnline() {
  if (pausedByOffline) {
    pausedByOffline = false;
    $("auto-heartbeat").checked = true;
    scheduleHeartbeat();
  }
}

export async function heartbeat(automatic) {
  await api("POST", "/both/status/heartbeat");
  $("heartbeat-note").textContent =
    `${automatic ? "Automatic heartbeat" : "Heartbeat"} sent at ${clockTime()}`;
  backOnline();
  await refreshStatus();
}

export function scheduleHeartbeat() {
  clearTimeout(timer);
  if (!$("auto-heartbeat").checked) return;
  timer = setTimeout(() => {
    heartbeat(true).catch(() => {}).finally(scheduleHeartbeat);  // api() shows errors
  }, HEARTBEAT_MS);
}

export function autoHeartbeatToggled() {
  pausedByOffline = false;
  scheduleHeartbeat();
}

async function update(change) {
  const { data } = await api("PUT", "/both/status/me", change);
  renderStatus(data);
  if (data.is_online) backOnline();
}

export async function goBusy() {
  const raw = $("wait-time").value.trim();
  await update({ is_busy: true, wait_time: raw === "" ? null : Number(raw) });
}

export async function goAvailable() {
  await update({ is_online: true, is_busy: false });
}

export async function goOffline() {
  await update({ is_online: false });
  // A phone that goes offline stops beating; so does the console until it is back.
  pausedByOffline = true;
  $("auto-heartbeat").checked = false;
  scheduleHeartbeat();
}

export function startStatus(status) {
  pausedByOffline = false;
  shownVersion = 0;
  $("auto-heartbeat").checked = true;
  renderStatus(status);
  scheduleHeartbeat();
}

export function stopStatus() {
  clearTimeout(timer);
  $("heartbeat-note").textContent = "";
  $("wait-time").value = "";
}
