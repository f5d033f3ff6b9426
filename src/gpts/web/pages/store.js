// The store: /store finds GPTs (search as you type, categories, featured and trending, a sort) and imports a .gpt
// bundle; /store/SLUG shows one GPT (its spec, files, score and versions) and rates, exports or deletes it. All of it
// through the store's HTTP API (gpts.server.routes.store), as any other client would.
import { api, ApiError, download, errorText, upload } from "../api.js";
import { navigate, setAddress } from "../app.js";
import { capitalize, debounce, failure, field, formatBytes, formatDate, formatNumber, h, plural, toast }
  from "../ui.js";

const SORTS = [["recent", "Recently updated"], ["rating", "Best rated"], ["usage", "Most used"],
               ["score", "Best measured score"]];
const TRENDING_DAYS = 7;
const SHELF_SIZE = 8;  // featured and trending are a glance; the full list is below them

export function render(root, [slug], url) {
  return slug ? renderGpt(root, slug, url) : renderStore(root, url);
}

// -- the store: /store?q=WORDS&category=C&sort=S -----------------------------------------------------------------

async function renderStore(root, url) {
  const query = { q: url.searchParams.get("q") || "", category: url.searchParams.get("category") || "",
                  sort: url.searchParams.get("sort") || "recent" };
  const importError = h("p", { class: "error-text store-import-error", role: "alert" });
  root.append(h("div", { class: "store-head" }, h("h1", {}, "Store"), importControl(importError)), importError);
  let categories;
  try {
    ({ categories } = await api("/v1/gpt_spec"));
  } catch (error) {
    root.append(failure(error));
    return null;
  }

  const search = h("input", { type: "search", value: query.q, placeholder: "Name, description, instructions, tags…",
                              autocomplete: "off", spellcheck: "false" });
  const category = h("select", {},
    h("option", { value: "" }, "All categories"),
    categories.map((c) => h("option", { value: c, selected: c === query.category }, capitalize(c))));
  const sort = h("select", {},
    SORTS.map(([value, text]) => h("option", { value, selected: value === query.sort }, text)));
  const browse = h("div", { class: "store-browse" });  // featured and trending: shown while nothing narrows the list
  const heading = h("h2", { id: "store-results-title" });
  const sortField = field("Sort by", sort);
  const status = h("p", { class: "muted store-count", role: "status" });
  const results = h("div", {});
  root.append(
    h("form", { class: "store-filters", role: "search", onsubmit: (e) => { e.preventDefault(); update(); } },
      field("Search GPTs", search), field("Category", category)),
    browse,
    h("section", { "aria-labelledby": "store-results-title" },
      h("div", { class: "store-results-head" }, heading, sortField),
      status, results));

  let controller = null;
  let closed = false;

  async function update() {
    if (closed) return;  // a search typed just before leaving the page must not rewrite the next page's address
    Object.assign(query, { q: search.value.trim(), category: category.value, sort: sort.value });
    setAddress(storeAddress(query));  // the search is the address: it can be shared
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    try {
      await Promise.all([showBrowse(signal), showResults(signal)]);
    } catch (error) {
      if (error.name === "AbortError") return;
      status.textContent = "";
      results.replaceChildren(failure(error));
    }
  }

  async function showBrowse(signal) {
    if (query.q || query.category) {
      browse.replaceChildren();
      return;
    }
    const [featured, trending] = await Promise.all([
      api("/v1/gpts?featured=true", { signal }), api(`/v1/gpts?sort=trending&days=${TRENDING_DAYS}`, { signal })]);
    if (signal.aborted) return;
    browse.replaceChildren(...[
      shelf("Featured", featured.data),
      shelf("Trending this week", trending.data, (gpt) => h("span", { class: "badge gpt-trend",
        title: `${gpt.activity} conversations started or ratings given in the last ${TRENDING_DAYS} days` },
        `▲ ${formatNumber(gpt.activity)} this week`)),
    ].filter(Boolean));
  }

  async function showResults(signal) {
    const params = new URLSearchParams();
    if (query.q) params.set("q", query.q);
    else params.set("sort", query.sort);  // search results come best match first: the server takes no sort with q
    if (query.category) params.set("category", query.category);
    const where = query.category ? ` in ${capitalize(query.category)}` : "";
    heading.textContent = query.q ? `Results for “${query.q}”${where}`
                        : query.category ? capitalize(query.category) : "All GPTs";
    sortField.hidden = Boolean(query.q);
    const { data } = await api(`/v1/gpts?${params}`, { signal });
    if (signal.aborted) return;
    status.textContent = data.length ? `${plural(data.length, "GPT")}${query.q ? " found" : ""}` : "";
    results.replaceChildren(data.length ? cards(data) : emptyStore(query));
  }

  search.addEventListener("input", debounce(update, 250));
  category.addEventListener("change", update);
  sort.addEventListener("change", update);
  await update();
  return () => {
    closed = true;
    controller?.abort();
  };
}

function storeAddress({ q, category, sort }) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (category) params.set("category", category);
  if (sort !== "recent") params.set("sort", sort);
  return params.size ? `/store?${params}` : "/store";
}

function shelf(title, gpts, extra) {
  if (!gpts.length) return null;
  const id = `shelf-${title.toLowerCase().replace(/\W+/g, "-")}`;
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), cards(gpts.slice(0, SHELF_SIZE), extra));
}

function emptyStore({ q, category }) {
  if (q) {
    const where = category ? ` in ${capitalize(category)}` : "";
    return h("p", { class: "store-empty" }, `No GPT matches “${q}”${where}. `,
             "Try fewer or other words", category ? ", or all categories." : ".");
  }
  return h("p", { class: "store-empty" },
           category ? `No GPT in ${capitalize(category)} yet. ` : "The store is empty. ",
           h("a", { href: "/builder", "data-link": true }, "Build a GPT"), " or import a .gpt file.");
}

function cards(gpts, extra = () => null) {
  return h("ul", { class: "gpt-grid" }, gpts.map((gpt) => card(gpt, extra(gpt))));
}

function card(gpt, extra) {
  const { spec } = gpt;
  return h("li", { class: "card gpt-card" },
    h("h3", {}, h("a", { href: gptAddress(gpt.slug), "data-link": true }, spec.name)),
    h("p", { class: spec.description ? "gpt-summary" : "gpt-summary muted" }, spec.description || "No description."),
    h("div", { class: "gpt-meta" },
      h("span", { class: "badge" }, capitalize(spec.category)),
      ratingView(gpt.rating, gpt.ratings),
      h("span", { class: "muted" }, plural(gpt.conversations, "conversation")),
      gpt.score && scoreView(gpt.score),
      extra));
}

// The store's control to add a GPT from a bundle: the label is the button, the file input stays reachable by keyboard.
// Why an import failed goes in `message`.
function importControl(message) {
  const input = h("input", { type: "file", id: "store-import-file", accept: ".gpt,.zip,application/zip" });
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Importing" });
  input.addEventListener("change", async () => {
    const [file] = input.files;
    if (!file) return;
    const form = new FormData();
    form.append("file", file);
    message.textContent = "";
    progress.hidden = false;
    input.disabled = true;
    try {
      const gpt = await upload("/v1/gpts/import", form, (fraction) => (progress.value = fraction));
      toast(`Imported ${gpt.spec.name}.`);
      navigate(gptAddress(gpt.slug));
    } catch (error) {
      message.textContent = `Import failed: ${errorText(error)}`;
    } finally {
      progress.hidden = true;
      input.disabled = false;
      input.value = "";  // the same file again is a new choice
    }
  });
  return h("div", { class: "store-import" },
    h("label", { for: input.id, class: "button" }, "Import a .gpt file"), input, progress);
}

// -- one GPT: /store/SLUG[?version=N] ----------------------------------------------------------------------------

async function renderGpt(root, slug, url) {
  const path = `/v1/gpts/${encodeURIComponent(slug)}`;
  const version = url.searchParams.get("version");
  let gpt, versions;
  try {
    ({ data: versions } = await api(`${path}/versions`));  // first: its 404 means there is no such GPT at all
    gpt = await api(version ? `${path}?version=${encodeURIComponent(version)}` : path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404 && !versions) {
      root.append(h("h1", {}, `No GPT named “${slug}”`),
                  h("p", {}, "It may have been deleted, or the address is mistyped."));
    } else {
      root.append(h("h1", {}, "Store"), failure(error));
    }
    root.append(h("p", {}, h("a", { href: "/store", "data-link": true }, "← Back to the store")));
    return null;
  }
  document.title = `${gpt.spec.name} · Store · gpts`;
  root.append(gptHeader(gpt, path),
    h("div", { class: "gpt-page" },
      h("div", { class: "gpt-main" }, gptDetails(gpt)),
      h("aside", { class: "gpt-side" }, gptStanding(gpt, path), versionList(gpt, versions, path))));
}

function gptHeader(gpt, path) {
  const { spec } = gpt;
  const old = gpt.version !== gpt.current_version;
  return h("header", { class: "gpt-header" },
    h("p", {}, h("a", { href: "/store", "data-link": true }, "← Store")),
    h("h1", {}, spec.name),
    spec.description && h("p", { class: "gpt-description" }, spec.description),
    h("div", { class: "gpt-meta" },
      spec.author && h("span", {}, `by ${spec.author}`),
      h("a", { class: "badge", href: `/store?category=${encodeURIComponent(spec.category)}`, "data-link": true },
        capitalize(spec.category)),
      h("span", { class: "badge" }, capitalize(spec.visibility)),
      gpt.featured && h("span", { class: "badge gpt-featured" }, "Featured"),
      gpt.builtin && h("span", { class: "badge" }, "Ships with gpts"),
      spec.tags.length > 0 && h("ul", { class: "gpt-tags", "aria-label": "Tags" },
                                spec.tags.map((tag) => h("li", {}, `#${tag}`)))),
    old && h("div", { class: "gpt-notice", role: "note" },
      h("span", {}, `You are looking at version ${gpt.version}; the current one is version ${gpt.current_version}.`),
      h("button", { type: "button", onclick: () => restore(gpt, gpt.version, path) }, `Restore version ${gpt.version}`),
      h("a", { href: gptAddress(gpt.slug), "data-link": true }, "See the current version")),
    h("div", { class: "row gpt-actions" },
      h("a", { class: "button primary", href: `/?model=${encodeURIComponent(gpt.slug)}`, "data-link": true }, "Chat"),
      h("a", { class: "button", href: `/builder/${encodeURIComponent(gpt.slug)}`, "data-link": true },
        "Edit in builder"),
      h("button", { type: "button", onclick: () => exportBundle(gpt, path) }, "Export"),
      h("button", { type: "button", class: "danger", onclick: () => remove(gpt, path) }, "Delete")));
}

function gptDetails(gpt) {
  const { spec } = gpt;
  const knowledge = gpt.files.filter((f) => f.kind === "knowledge");
  const evaluation = gpt.files.find((f) => f.kind === "evaluation");
  const generation = Object.entries(spec.generation).filter(([, value]) => value !== null);
  return [
    h("details", { class: "gpt-instructions" },
      h("summary", {}, "Instructions ",
        h("span", { class: "muted" }, `(${plural(spec.instructions.length, "character")})`)),
      spec.instructions ? h("div", { class: "gpt-instructions-text" }, spec.instructions)
                        : h("p", { class: "muted" }, "No instructions: the model answers as itself.")),
    h("h2", {}, "Conversation starters"),
    spec.conversation_starters.length
      ? h("ul", { class: "gpt-starters" }, spec.conversation_starters.map((s) => h("li", {}, s)))
      : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Knowledge"),
    knowledge.length
      ? h("div", { class: "table-wrap" }, h("table", {},
          h("thead", {}, h("tr", {}, h("th", {}, "File"), h("th", {}, "Size"), h("th", {}, "Chunks"))),
          h("tbody", {}, knowledge.map((f) => h("tr", {},
            h("td", {}, f.name), h("td", {}, formatBytes(f.size)), h("td", {}, formatNumber(f.chunks)))))))
      : h("p", { class: "muted" }, "No knowledge files: it answers from the model alone."),
    h("h2", {}, "Details"),
    h("dl", { class: "gpt-facts" },
      fact("Model", h("code", {}, spec.model)),
      fact("Version", `${gpt.version} of ${gpt.current_version}`),
      fact("Updated", formatDate(gpt.updated_at)),
      fact("Created", formatDate(gpt.created_at)),
      generation.length > 0 && fact("Generation",
        generation.map(([name, value]) => `${name} ${[value].flat().join(", ")}`).join(" · ")),
      spec.examples.length > 0 && fact("Example conversations", formatNumber(spec.examples.length)),
      evaluation && fact("Evaluation set", evaluation.name),
      spec.license && fact("License", spec.license)),
  ];
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

// What people make of it: its rating (and a form to rate it), its use, its measured score.
function gptStanding(gpt, path) {
  const rating = h("div", { class: "gpt-rating-big" }, ratingView(gpt.rating, gpt.ratings));
  return h("section", { class: "card", "aria-labelledby": "standing-title" },
    h("h2", { id: "standing-title" }, "Rating and use"),
    rating,
    h("p", {}, plural(gpt.conversations, "conversation")),
    measured(gpt.score),
    ratingForm(path, (r) => rating.replaceChildren(ratingView(r.average, r.count))));
}

function measured(score) {
  if (!score) return h("p", { class: "muted" }, "No measured score: it has not been evaluated.");
  const examples = score.details?.n;
  return h("p", {}, "Measured score: ", scoreView(score), examples ? ` over ${plural(examples, "example")}` : "",
           h("span", { class: "muted" }, ` (${formatDate(score.at)})`));
}

// Rate it: five radio buttons drawn as stars (arrow keys move between them), an optional review.
function ratingForm(path, onRated) {
  const stars = [1, 2, 3, 4, 5].map((n) => h("label", { class: "gpt-star" },
    h("input", { type: "radio", name: "stars", value: n, required: true, "aria-label": plural(n, "star") }),
    h("span", { "aria-hidden": "true" }, "★")));
  const inputs = stars.map((label) => label.querySelector("input"));
  const chosen = () => Number(inputs.find((i) => i.checked)?.value || 0);
  const paint = (n) => stars.forEach((label, i) => label.classList.toggle("on", i < n));
  stars.forEach((label, i) => label.addEventListener("mouseenter", () => paint(i + 1)));
  const review = h("textarea", { rows: 3, placeholder: "What was it good or bad at?" });
  const submit = h("button", { type: "submit", class: "primary" }, "Rate");
  const message = h("p", { "aria-live": "polite" });

  async function send(event) {
    event.preventDefault();
    submit.disabled = true;
    try {
      const rating = await api(`${path}/ratings`, { body: { stars: chosen(), review: review.value.trim() } });
      onRated(rating);
      message.className = "ok-text";
      message.textContent = `Thanks: you rated it ${plural(rating.stars, "star")}.`;
    } catch (error) {
      message.className = "error-text";
      message.textContent = errorText(error);
    } finally {
      submit.disabled = false;
    }
  }

  return h("form", { class: "gpt-rate", onsubmit: send },
    h("fieldset", { onchange: () => paint(chosen()) },
      h("legend", {}, "Rate it"),
      h("div", { class: "gpt-stars-input", onmouseleave: () => paint(chosen()) }, stars)),
    field("Review (optional)", review),
    h("div", { class: "row" }, submit, message));
}

function versionList(gpt, versions, path) {
  const address = (v) => (v.current ? gptAddress(gpt.slug) : `${gptAddress(gpt.slug)}?version=${v.version}`);
  return h("section", { class: "card", "aria-labelledby": "versions-title" },
    h("h2", { id: "versions-title" }, "Versions"),
    h("ol", { class: "gpt-versions", reversed: true }, versions.toReversed().map((v) => h("li",
      { class: v.version === gpt.version ? "viewed" : null },
      h("div", { class: "row" },
        h("a", { href: address(v), "data-link": true, "aria-current": v.version === gpt.version ? "page" : null },
          `Version ${v.version}`),
        v.current && h("span", { class: "badge" }, "current"),
        !v.current && h("button", { type: "button", "aria-label": `Restore version ${v.version}`,
                                    onclick: () => restore(gpt, v.version, path) }, "Restore")),
      h("p", { class: "muted note" }, formatDate(v.created_at), v.note && ` · ${v.note}`)))));
}

async function restore(gpt, number, path) {
  try {
    const restored = await api(`${path}/versions/${number}/restore`, { method: "POST" });
    toast(`Version ${number} is back, as version ${restored.version}.`);
    navigate(gptAddress(gpt.slug));
  } catch (error) {
    toast(errorText(error), "error");
  }
}

async function exportBundle(gpt, path) {
  const old = gpt.version !== gpt.current_version;
  try {
    const name = await download(old ? `${path}/export?version=${gpt.version}` : `${path}/export`);
    toast(`Saved ${name}: import it on any gpts server.`);
  } catch (error) {
    toast(errorText(error), "error");
  }
}

async function remove(gpt, path) {
  if (!confirm(`Delete “${gpt.spec.name}” and all its versions? Its conversations stay.`)) return;
  try {
    await api(path, { method: "DELETE" });
    toast(`Deleted ${gpt.spec.name}.`);
    navigate("/store");
  } catch (error) {
    toast(errorText(error), "error");
  }
}

// -- small pieces ------------------------------------------------------------------------------------------------

function ratingView(average, count) {
  if (!count) return h("span", { class: "gpt-rating muted" }, "No ratings yet");
  const drawn = h("span", { class: "gpt-stars", "aria-hidden": "true" }, "★★★★★");
  drawn.style.setProperty("--filled", `${(average / 5) * 100}%`);
  return h("span", { class: "gpt-rating" }, drawn,
    h("span", { class: "visually-hidden" }, "Rated "), h("strong", {}, average.toFixed(1)),
    h("span", { class: "visually-hidden" }, " out of 5"),
    h("span", { class: "muted" }, ` · ${plural(count, "rating")}`));
}

function scoreView(score) {
  return h("span", { class: "badge gpt-score", title: "Measured on its evaluation set" },
    `${score.metric} ${formatNumber(score.score, 3)}`);
}

function gptAddress(slug) {
  return `/store/${encodeURIComponent(slug)}`;
}
