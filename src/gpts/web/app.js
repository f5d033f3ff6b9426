// The router: each page has its own address; links marked data-link and the back button change pages without
// reloading. A page module exports render(root, params, url) and may return a function that tears it down.
import { apiKey } from "./api.js";
import { failure, h } from "./ui.js";

const ROUTES = [
  [/^\/$/, "chat", "Chat"],
  [/^\/store$/, "store", "Store"],
  [/^\/store\/([^/]+)$/, "store", "Store"],
  [/^\/builder$/, "builder", "Builder"],
  [/^\/builder\/([^/]+)$/, "builder", "Builder"],
  [/^\/fine-tuning$/, "fine_tuning", "Fine-tuning"],
  [/^\/models$/, "models", "Models"],
];

const root = document.getElementById("page");
let teardown = null;
let shown = 0;  // which navigation is current: a slow page that finishes late does not draw over a newer one
let here = location.href;  // the address shown: where the back button returns to when leaving is cancelled
let leaving = null;  // the page's question before it is left (unsaved work), or null: see guardLeaving

export async function navigate(url, { replace = false } = {}) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  await show();
}

// A page that changes its own address (a search, a selected job, a saved GPT's slug): no new page is drawn.
export function setAddress(url, { replace = true } = {}) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  here = location.href;
}

// A page with work not yet saved: `question()` returns what to ask before the page is left (a link, the back button,
// a reload, closing the tab), or null when nothing would be lost. Each new page starts without one.
export function guardLeaving(question) {
  leaving = question;
}

function mayLeave() {
  const question = leaving?.();
  return !question || confirm(question);
}

async function show() {
  const url = new URL(location.href);
  const route = ROUTES.find(([pattern]) => pattern.test(url.pathname));
  const current = ++shown;
  here = location.href;
  leaving = null;
  if (teardown) teardown();
  teardown = null;
  for (const link of document.querySelectorAll("header nav a")) {
    const section = link.getAttribute("href");
    const here = section === "/" ? url.pathname === "/" : url.pathname.startsWith(section);
    if (here) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (!route) {
    document.title = "Not found · gpts";
    root.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", { href: "/", "data-link": true }, "Chat")));
    return;
  }
  const [pattern, name, title] = route;
  const params = pattern.exec(url.pathname).slice(1).map(decodeURIComponent);
  document.title = `${title} · gpts`;
  root.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  let result;
  try {
    const page = await import(`./pages/${name}.js`);
    if (current !== shown) return;
    root.replaceChildren();
    result = await page.render(root, params, url);
  } catch (error) {  // the page's module did not arrive (the server went away), or the page has a bug
    if (current === shown) root.replaceChildren(h("h1", {}, title), failure(error));
    return;
  }
  if (current === shown) teardown = typeof result === "function" ? result : null;
  else if (typeof result === "function") result();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || event.defaultPrevented || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  if (!mayLeave()) return;
  navigate(link.getAttribute("href"));
  root.focus({ preventScroll: true });  // keyboard and screen reader users land on the new page
});
window.addEventListener("popstate", () => {
  if (mayLeave()) show();
  else history.pushState(null, "", here);  // the browser moved already: back to the page being kept
});
window.addEventListener("beforeunload", (event) => {
  if (leaving?.()) event.preventDefault();  // the browser asks in its own words
});

// The API key: asked for when the server answers 401, kept for this tab only.
const dialog = document.getElementById("key-dialog");
const keyInput = document.getElementById("key-input");
const keyButton = document.getElementById("key-button");

function showKeyState() {
  keyButton.textContent = apiKey.get() ? "API key ✓" : "API key";
}

function askForKey() {
  if (dialog.open) return;
  keyInput.value = apiKey.get() || "";
  dialog.showModal();
  keyInput.focus();
}

keyButton.addEventListener("click", askForKey);
window.addEventListener("gpts:unauthorized", askForKey);
document.getElementById("key-forget").addEventListener("click", () => {
  apiKey.set(null);
  showKeyState();
  dialog.close();
});
dialog.addEventListener("close", () => {
  if (dialog.returnValue !== "save") return;
  apiKey.set(keyInput.value.trim());
  showKeyState();
  // A page that failed (a 401, most likely) loads again with the key; one that works keeps what is typed in it.
  if (root.querySelector(".failure")) show();
});
showKeyState();
show();
