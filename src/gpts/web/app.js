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

export async function navigate(url, { replace = false } = {}) {
  history[replace ? "replaceState" : "pushState"](null, "", url);
  await show();
}

async function show() {
  const url = new URL(location.href);
  const route = ROUTES.find(([pattern]) => pattern.test(url.pathname));
  const current = ++shown;
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
  navigate(link.getAttribute("href"));
  root.focus({ preventScroll: true });  // keyboard and screen reader users land on the new page
});
window.addEventListener("popstate", show);

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
