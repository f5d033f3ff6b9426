// Small DOM helpers shared by the pages. Text always goes in as text nodes, never as HTML: what a model or a
// store entry says cannot become markup.
import { ApiError, errorText } from "./api.js";
import { navigate } from "./app.js";

// h("button", {class: "primary", onclick: send, "aria-label": "Send"}, "Send") -> <button ...>Send</button>
// Attributes: on* are listeners, `class`, `dataset` (an object), booleans set or omit, null/undefined omit.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "value" || name === "checked") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

let fieldIds = 0;

// A labelled control: field("Temperature", h("input", {type: "number"}), "0 is greedy") -> <div class="field">.
// The label points at the control, and the hint is its description, so a screen reader says both.
export function field(label, control, hint = null) {
  control.id ||= `field-${++fieldIds}`;
  const hintNode = hint && h("small", { id: `${control.id}-hint`, class: "muted" }, hint);
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintNode);
}

// A message at the bottom of the page. kind: "info" | "error". `retry`: a button that calls it.
export function toast(text, kind = "info", { retry = null, timeout = kind === "error" ? 12000 : 4000 } = {}) {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, h("span", {}, text));
  const close = () => item.remove();
  if (retry) item.append(h("button", { type: "button", onclick: () => { close(); retry(); } }, "Retry"));
  item.append(h("button", { type: "button", class: "quiet", "aria-label": "Dismiss", onclick: close }, "×"));
  box.append(item);
  if (!retry) setTimeout(close, timeout);
  return item;
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

export function formatNumber(n, digits = 0) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits });
}

export function formatDate(value) {
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

// Debounce: search as you type without a request per key.
export function debounce(fn, ms = 200) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// A load that failed, where the page's content would be: what happened, and a Retry (the page again, through the
// router) where trying again may help: the server was away, busy or failed.
export function failure(error) {
  const passing = !(error instanceof ApiError) || error.status === 0 || error.status === 429 || error.status >= 500;
  return h("div", { class: "failure", role: "alert" },
    h("p", { class: "error-text" }, errorText(error)),
    passing && h("button", { type: "button", onclick: () => navigate(location.pathname + location.search,
                                                                       { replace: true }) }, "Retry"));
}

export function plural(n, word) {
  return `${formatNumber(n)} ${word}${n === 1 ? "" : "s"}`;
}

export function capitalize(word) {
  return word.charAt(0).toUpperCase() + word.slice(1);
}
