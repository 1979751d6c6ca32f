// Small DOM helpers and the presence wording shared by the console's panels.

export const $ = (id) => document.getElementById(id);

export function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (name === "className") node.className = value;
    else if (name === "text") node.textContent = value;  // never innerHTML: data stays text
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

export function clockTime(date) {
  return (date || new Date()).toLocaleTimeString([], { hour12: false });
}

export function presenceState(item) {
  if (!item.is_online) return "offline";
  return item.is_busy ? "busy" : "available";
}

export function describe(item) {
  const current = presenceState(item);
  if (current === "busy") {
    return item.wait_time === null || item.wait_time === undefined
      ? "busy" : `busy, about ${item.wait_time} min`;
  }
  if (current === "offline") {
    return item.last_seen
      ? `offline, last seen ${new Date(item.last_seen).toLocaleString()}` : "offline";
  }
  return "available";
}
