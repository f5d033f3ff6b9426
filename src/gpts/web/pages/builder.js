// The builder (/builder for a new GPT, /builder/SLUG for a new version of one): a form for every field of a spec,
// and beside it a preview chat that answers from the unsaved draft (POST /v1/gpts/preview). Save creates the GPT
// (POST /v1/gpts) or a new version with the fields that changed (PATCH /v1/gpts/SLUG). Knowledge files go up one
// request per file, so that each has its own progress bar and its own error; a new GPT is saved first, since files
// belong to a saved GPT. Where the GPT has an evaluation set, it can be evaluated and tuned from here.
//
// Every change to the saved GPT (save, upload, removal, tuning) goes through one queue: each makes a new version
// from the current one, and two at once would race (the server refuses the second with a 409).
//
// Read top down: builder() makes the page's parts and ties them together; then each part in turn (the form, the
// save bar, the knowledge panel, the evaluation panel, the preview), then the pieces they are made of.
import { api, errorText, events, plainModels, upload } from "../api.js";
import { guardLeaving, setAddress } from "../app.js";
import { chatView } from "../chatview.js";
import { capitalize, failure, field, formatBytes, formatNumber, h, plural, toast } from "../ui.js";

const enc = encodeURIComponent;

// A new GPT's form: the spec's defaults (gpts.spec.GptSpec).
const NEW_SPEC = {
  name: "", description: "", instructions: "", conversation_starters: [], examples: [], model: "default",
  generation: {}, retrieval: {}, category: "other", tags: [], author: "", visibility: "private", license: null,
};

// [spec key, label, hint, step]: the generation settings, in GptSpec.generation's order. Empty means the model's
// own default.
const GENERATION = [
  ["temperature", "Temperature", "0 picks the likeliest word every time; higher is more varied.", "0.05"],
  ["top_p", "Top p", "Draw from the likeliest words whose chances add up to this.", "0.05"],
  ["top_k", "Top k", "Draw from this many likeliest words (0: all).", "1"],
  ["min_p", "Min p", "Leave out words less likely than this share of the likeliest.", "0.01"],
  ["repetition_penalty", "Repetition penalty", "Above 1 discourages repeating words.", "0.05"],
  ["max_tokens", "Max tokens", "The longest answer, in tokens.", "1"],
  ["seed", "Seed", "The same seed gives the same answer.", "1"],
];
const RETRIEVAL = [
  ["chunk_tokens", "Chunk tokens", "How long each searched passage is.", "1"],
  ["overlap_tokens", "Overlap tokens", "How much neighbouring passages share (at most half a chunk).", "1"],
  ["top_k", "Passages per question", "How many passages an answer is given.", "1"],
  ["max_files", "Max files", null, "1"],
  ["max_file_mb", "Max file size (MB)", null, "any"],
];

// POST /v1/gpts/SLUG/tune's options (gpts tune's), all optional.
const TUNING = [
  ["n_epochs", "Epochs", "Passes over the examples.", "1"],
  ["max_steps", "Max steps", "Stop after this many steps.", "1"],
  ["batch_size", "Batch size", null, "1"],
  ["learning_rate_multiplier", "Learning rate multiplier", null, "any"],
];

export async function render(root, [slug]) {
  let loaded;
  try {
    loaded = await load(slug);
  } catch (e) {
    root.replaceChildren(h("h1", {}, "Builder"), failure(e));
    return null;
  }
  return builder(root, loaded);
}

async function load(slug) {
  const [limits, models, gpt] = await Promise.all([
    api("/v1/gpt_spec"), plainModels(), slug ? api(`/v1/gpts/${enc(slug)}`) : null]);
  // A GPT names a model that any gpts loads (gpts run, an exported bundle): not this server's ft:... ids.
  return { limits, models: models.map((m) => m.id).filter((id) => !id.startsWith("ft:")), gpt };
}

// -- the page -------------------------------------------------------------------------------------------------------

// The parts share one context, `ctx`: the saved GPT, the queue that changes it, where refusals show, and saved(),
// which every change to the GPT ends with. Each part has showGpt(gpt), called after each such change.
function builder(root, { limits, models, gpt: loadedGpt }) {
  let gpt = loadedGpt;  // the saved GPT at its current version; null until a new one is first saved
  let queue = Promise.resolve();
  const ctx = {
    gpt: () => gpt,
    // One change to the saved GPT at a time; a task that fails unexpectedly says so and leaves the queue working.
    serial: (task) => (queue = queue.then(task).catch((e) => toast(errorText(e), "error"))),
    errors: errorSlots(),
    saved: (result, message) => {
      gpt = result;
      showGpt();
      update();
      if (message) toast(message);
    },
  };

  const head = pageHead();
  const form = specForm(limits, models, ctx.errors, update);
  const preview = previewPanel(ctx, form);
  const bar = saveBar(ctx, form, preview.show);
  const knowledge = knowledgePanel(ctx, form.sections.search, bar.saveNew);
  const evaluation = evaluationPanel(ctx, (before) => {
    // The tuned model is the new version's; the form takes it unless the person chose another meanwhile.
    if (gpt !== before && form.model() === before.spec.model) form.setModel(gpt.spec.model);
    update();
  });

  const { about, instructions, starters, examples, settings } = form.sections;
  const formElement = h("form", { class: "builder-form", novalidate: true, "aria-labelledby": "builder-title" },
    bar.element, about, instructions, starters, examples, knowledge.element, settings);
  formElement.addEventListener("input", update);
  formElement.addEventListener("change", update);
  formElement.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.serial(bar.save);
  });
  // Evaluation and tuning act on the saved GPT, not on the draft: they are outside the form and its Save.
  root.append(head.element, h("div", { class: "builder" },
    h("div", { class: "builder-main" }, formElement, evaluation.element), preview.element));
  form.fill(gpt ? gpt.spec : NEW_SPEC);
  showGpt();
  update();
  const untouched = canonical(form.draftSpec());  // a new GPT's empty form, as the draft says it
  guardLeaving(() => (gpt ? Object.keys(changedFields(form.draftSpec(), gpt.spec)).length
                          : canonical(form.draftSpec()) !== untouched)
    ? "This GPT has changes that are not saved. Leave and lose them?" : null);

  // After each change to the saved GPT (and once at the start): what depends on whether it exists and its version.
  function showGpt() {
    for (const part of [head, form, bar, knowledge, evaluation]) part.showGpt(gpt);
  }

  // After each edit of the form: what depends on the draft.
  function update() {
    form.update();
    preview.setStarters(form.draftSpec().conversation_starters);
    bar.update();
  }

  return () => {
    preview.abort();
    evaluation.stop();
  };
}

// The title and, for a saved GPT, its version and links to its store page and to a chat with it.
function pageHead() {
  const title = h("h1", { id: "builder-title" });
  const links = h("div", { class: "row builder-links" });
  return {
    element: h("div", { class: "builder-head" }, title, links),
    showGpt: (gpt) => {
      title.textContent = gpt ? `Edit ${gpt.spec.name}` : "New GPT";
      links.replaceChildren(...(gpt ? [
        h("span", { class: "badge" }, `version ${gpt.version}`),
        h("a", { href: `/store/${enc(gpt.slug)}`, "data-link": true }, "Store page"),
        h("a", { href: `/?model=${enc(gpt.slug)}`, "data-link": true }, "Chat with it"),
      ] : []));
    },
  };
}

// -- the form: a control for each field of the spec -----------------------------------------------------------------

// draftSpec() reads the form as a spec and fill(spec) writes one into it; `sections` are its cards (and the search
// settings, which the knowledge panel shows), laid out by builder().
function specForm(limits, models, errors, onChange) {
  const c = formControls(limits, onChange);
  const setModel = (current) => setModelOptions(c.model, models, current);
  return {
    sections: formSections(c, limits, errors),
    draftSpec: () => draftSpec(c),
    slug: () => c.slug.value.trim(),  // the address asked for: only a new GPT's first save sends it
    fill: (spec) => {
      fillForm(c, spec);
      setModel(spec.model);
    },
    model: () => c.model.value,
    setModel,
    overLimit: () => c.instructions.value.length > limits.max_instructions,
    update: () => {
      showLength(c.instructions, c.counter, limits.max_instructions);
      c.slug.placeholder = slugify(c.name.value);
    },
    showGpt: (gpt) => { c.slug.closest(".field").hidden = Boolean(gpt); },
  };
}

function formControls(limits, onChange) {
  const maxLength = (key) => limits.schema?.properties?.[key]?.maxLength;
  const retrievalDefault = (key) => limits.schema?.$defs?.Retrieval?.properties?.[key]?.default;
  const options = (values) => values.map((v) => h("option", { value: v }, capitalize(v)));
  return {
    name: h("input", { type: "text", maxlength: maxLength("name"), autocomplete: "off", required: true }),
    slug: h("input", { type: "text", autocomplete: "off", spellcheck: "false" }),
    description: h("textarea", { rows: 2, maxlength: maxLength("description") }),
    category: h("select", {}, options(limits.categories)),
    tags: h("input", { type: "text", autocomplete: "off" }),
    visibility: h("select", {}, options(limits.visibilities)),
    author: h("input", { type: "text", maxlength: maxLength("author"), autocomplete: "off" }),
    license: h("textarea", { rows: 2 }),
    instructions: h("textarea", { rows: 12, class: "instructions-input" }),
    counter: h("small", { class: "counter", id: "instructions-count" }),
    starters: starterEditor(limits.max_starters, onChange),
    examples: exampleEditor(onChange),
    model: h("select", {}),
    generation: numberInputs(GENERATION),
    stop: h("textarea", { rows: 2, spellcheck: "false" }),
    retrieval: numberInputs(RETRIEVAL, retrievalDefault),
  };
}

// Each control with its label and hint, in a slot where the server's refusal of that field shows.
function formSections(c, limits, errors) {
  const variables = limits.template_variables.map((v) => `{{${v}}}`).join(", ");
  const instructions = errors.field("instructions", "Instructions", c.instructions,
    `What the GPT is and how it answers. ${variables} are filled in.`);
  c.instructions.setAttribute("aria-describedby", `${c.instructions.getAttribute("aria-describedby")} ${c.counter.id}`);
  instructions.insertBefore(c.counter, c.instructions.nextSibling);
  instructions.querySelector("label").classList.add("visually-hidden");  // its section's heading says it
  return {
    about: section("About", [
      errors.field("name", "Name", c.name),
      errors.field("slug", "Slug", c.slug,
        "The GPT's address: lowercase letters, digits and hyphens. Left empty, it comes from the name."),
      errors.field("description", "Description", c.description, "One or two sentences, shown in the store."),
      h("div", { class: "grid-2" },
        errors.field("category", "Category", c.category),
        errors.field("visibility", "Visibility", c.visibility,
          "Who it is meant for, kept with it and its exported bundles; this store lists every GPT."),
        errors.field("tags", "Tags", c.tags, "Separated by commas."),
        errors.field("author", "Author", c.author)),
      errors.field("license", "License", c.license, "Optional: the terms the GPT is shared under."),
    ]),
    instructions: section("Instructions", [instructions]),
    starters: section("Conversation starters", [
      h("p", { class: "muted" }, `Shown as buttons when a conversation starts; up to ${limits.max_starters}.`),
      errors.group("conversation_starters", c.starters.element),
    ]),
    examples: section("Example conversations", [
      h("p", { class: "muted" }, "Exchanges that show the GPT how to answer; each comes before every conversation."),
      errors.group("examples", c.examples.element),
    ]),
    search: h("details", { class: "retrieval" }, h("summary", {}, "Search settings"),
      h("div", { class: "grid-3" }, c.retrieval.fields.map(([key, wrap]) => errors.slot(`retrieval.${key}`, wrap))),
      errors.slot("retrieval", h("div"))),
    settings: section("Model and settings", [
      errors.field("model", "Model", c.model, "A base or fine-tuned model this server has."),
      h("div", { class: "grid-3" }, c.generation.fields.map(([key, wrap]) => errors.slot(`generation.${key}`, wrap))),
      errors.field("generation.stop", "Stop sequences", c.stop, "One per line: the answer ends before any of them."),
      errors.slot("generation", h("div")),
    ]),
  };
}

// What the form holds, as a spec (without a slug: see specForm's slug()).
function draftSpec(c) {
  const stops = lines(c.stop.value);
  return {
    name: c.name.value.trim(),
    description: c.description.value,
    instructions: c.instructions.value,
    conversation_starters: c.starters.get(),
    examples: c.examples.get(),
    model: c.model.value,
    generation: { ...c.generation.get(), ...(stops.length ? { stop: stops } : {}) },
    retrieval: c.retrieval.get(),
    category: c.category.value,
    tags: c.tags.value.split(",").map((t) => t.trim().toLowerCase()).filter(Boolean),
    author: c.author.value,
    visibility: c.visibility.value,
    license: c.license.value.trim() || null,
  };
}

// A spec into the form, all but its model (the model's options are specForm's).
function fillForm(c, spec) {
  c.name.value = spec.name;
  c.description.value = spec.description;
  c.instructions.value = spec.instructions;
  c.starters.set(spec.conversation_starters);
  c.examples.set(spec.examples);
  const { stop: stops = [], max_new_tokens, ...numbers } = spec.generation;
  c.generation.set({ ...numbers, max_tokens: numbers.max_tokens ?? max_new_tokens });
  c.stop.value = stops.join("\n");
  c.retrieval.set(spec.retrieval);
  c.category.value = spec.category;
  c.tags.value = spec.tags.join(", ");
  c.visibility.value = spec.visibility;
  c.author.value = spec.author;
  c.license.value = spec.license || "";
}

// The served base and fine-tuned models, and the spec's own where the server does not list it ("default").
function setModelOptions(select, models, current) {
  const ids = models.includes(current) ? models : [current, ...models];
  select.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
  select.value = current;
}

// The instructions' length against their limit, in the counter under them; over it, they are marked invalid.
function showLength(instructions, counter, max) {
  const length = instructions.value.length;
  const over = length - max;
  counter.textContent = `${formatNumber(length)} / ${formatNumber(max)} characters` +
    (over > 0 ? ` — ${formatNumber(over)} over the limit` : "");
  counter.classList.toggle("error-text", over > 0);
  if (over > 0) instructions.setAttribute("aria-invalid", "true");
  else instructions.removeAttribute("aria-invalid");
}

// -- the save bar ---------------------------------------------------------------------------------------------------

// Save stays in reach at the top of the form as it scrolls. A refusal shows beside the field it names, or here.
function saveBar(ctx, form, onPreview) {
  const note = h("input", { type: "text", autocomplete: "off", placeholder: "e.g. shorter answers" });
  const noteField = field("What changed", note, "Kept with the new version, in its history.");
  const saveButton = h("button", { type: "submit", class: "primary" }, "Save");
  const saveState = h("span", { class: "muted save-state", role: "status" });
  const formError = h("p", { class: "error-text form-error", role: "alert", hidden: true });
  ctx.errors.fallback(formError);
  const element = h("div", { class: "save-bar" },
    h("div", { class: "save-row" }, noteField, h("div", { class: "row save-actions" },
      // Below the form on a narrow screen, the preview is a long way down: this button goes there.
      h("button", { type: "button", class: "quiet to-preview", onclick: onPreview }, "Preview"),
      saveState, saveButton)),
    formError);

  async function save() {
    const gpt = ctx.gpt();
    if (!gpt) return saveNew();
    const changed = changedFields(form.draftSpec(), gpt.spec);
    if (!Object.keys(changed).length) {
      toast("Nothing to save: no field has changed.");
      return;
    }
    const text = note.value.trim();
    await attempt(async () => {
      const body = { ...changed, ...(text && { note: text }) };
      const result = await api(`/v1/gpts/${enc(gpt.slug)}`, { method: "PATCH", body });
      note.value = "";
      form.fill(result.spec);
      ctx.saved(result, `Saved version ${result.version}.`);
    });
  }

  // A new GPT, from the draft; `why` says why it is being saved when the person did not press Save. True if saved.
  async function saveNew(why = null) {
    return attempt(async () => {
      const slug = form.slug();
      const created = await api("/v1/gpts", { body: { ...form.draftSpec(), ...(slug && { slug }) } });
      setAddress(`/builder/${enc(created.slug)}`);
      form.fill(created.spec);  // as the server keeps it: the defaults of what was left empty filled in
      ctx.saved(created, `${why ? `${why} ` : ""}Saved “${created.spec.name}” as ${created.slug}.`);
    });
  }

  // Run a save; a refusal shows beside the field it names (or under the form). True when it went through.
  async function attempt(action) {
    ctx.errors.clear();
    saveButton.disabled = true;
    saveButton.textContent = "Saving…";
    try {
      await action();
      return true;
    } catch (e) {
      ctx.errors.show(e);
      return false;
    } finally {
      saveButton.textContent = "Save";
      update();
    }
  }

  function update() {
    saveButton.disabled = form.overLimit();
    const gpt = ctx.gpt();
    const state = !gpt ? "Not saved yet"
      : Object.keys(changedFields(form.draftSpec(), gpt.spec)).length ? "Unsaved changes" : "Saved";
    if (saveState.textContent !== state) saveState.textContent = state;  // a status is announced when it changes
  }

  return { element, save, saveNew, update, showGpt: (gpt) => { noteField.hidden = !gpt; } };
}

// -- knowledge ------------------------------------------------------------------------------------------------------

// The GPT's knowledge files, a picker for more, and the search settings (`searchSettings`: fields of the form).
// `saveFirst(why)` saves a new GPT before its first files go up; true if it did.
function knowledgePanel(ctx, searchSettings, saveFirst) {
  const files = h("ul", { class: "file-list" });
  const uploads = h("ul", { class: "file-list uploads" });
  const picker = h("input", { type: "file", multiple: true });
  picker.addEventListener("change", () => {
    const chosen = [...picker.files];
    picker.value = "";  // choosing the same file again (after fixing it) is a change again
    if (chosen.length) addFiles(chosen);
  });
  const element = section("Knowledge", [
    h("p", { class: "muted" }, "Files the GPT searches and cites: Markdown, text, PDF, HTML, CSV, JSON."),
    files,
    field("Upload knowledge files", picker, "Each file is a new version of the GPT; a new GPT is saved first."),
    uploads,
    searchSettings,
  ]);

  function showGpt(gpt) {
    const stored = gpt ? gpt.files.filter((f) => f.kind === "knowledge") : [];
    files.replaceChildren(...stored.map((file) => h("li", { class: "file" },
      h("span", { class: "file-name" }, file.name),
      h("span", { class: "muted" }, `${formatBytes(file.size)} · ${plural(file.chunks, "passage")}`),
      h("button", { type: "button", class: "quiet danger", "aria-label": `Remove ${file.name}`,
                    onclick: () => ctx.serial(() => remove(file.name)) }, "Remove"))));
    if (!stored.length) files.append(h("li", { class: "file-none" }, "No knowledge files yet."));
  }

  async function remove(fileName) {
    const result = await api(`/v1/gpts/${enc(ctx.gpt().slug)}/knowledge/${enc(fileName)}`, { method: "DELETE" });
    ctx.saved(result, `Removed ${fileName} (version ${result.version}).`);
  }

  // Every chosen file shows at once, waiting its turn; each goes up as its own request.
  function addFiles(chosen) {
    const rows = chosen.map((file) => uploadRow(file.name));
    uploads.append(...rows.map((row) => row.element));
    ctx.serial(async () => {
      if (!ctx.gpt() && !(await saveFirst("Knowledge files belong to a saved GPT, so it was saved first."))) {
        for (const row of rows) row.fail("Not uploaded: the GPT could not be saved; see the form above.");
        return;
      }
      for (const [i, file] of chosen.entries()) {
        const updated = await sendFile(`/v1/gpts/${enc(ctx.gpt().slug)}/knowledge`, file, rows[i]);
        if (updated) ctx.saved(updated);
      }
    });
  }

  return { element, showGpt };
}

// -- evaluation and tuning ------------------------------------------------------------------------------------------

// The GPT's evaluation set (a picker replaces it), Evaluate, and Tune with its settings, its live log and Cancel.
// `onTuned(before)` runs after a tuning run that ended without an error; `before` is the GPT it started from.
function evaluationPanel(ctx, onTuned) {
  let controller = null;  // the running tune's
  const about = h("p", { class: "muted" });
  const picker = h("input", { type: "file", accept: ".jsonl" });
  const uploads = h("ul", { class: "file-list uploads" });
  const options = numberInputs(TUNING);
  const evaluateButton = h("button", { type: "button", onclick: () => ctx.serial(evaluate) }, "Evaluate");
  const tuneButton = h("button", { type: "button", onclick: () => ctx.serial(tune) }, "Tune");
  const cancelButton = h("button", { type: "button", class: "danger", hidden: true,
                                     onclick: () => controller?.abort() }, "Cancel");
  const result = h("div", { class: "eval-result", role: "status" });
  const log = h("ul", { class: "tune-log", "aria-label": "Tuning progress", hidden: true });
  const actions = h("div", {},
    h("details", { class: "tune-options" }, h("summary", {}, "Tuning settings"),
      h("div", { class: "grid-3" }, options.fields.map(([, wrap]) => wrap))),
    h("div", { class: "row" }, evaluateButton, tuneButton, cancelButton));
  const element = section("Evaluation", [
    about,
    field("Upload an evaluation set", picker, 'JSONL rows of {"prompt", "answer"}, {"text", "label"} or ' +
      '{"context", "choices", "answer"}; a new one replaces the old.'),
    uploads, actions, result, log,
  ]);
  picker.addEventListener("change", () => {
    const [file] = picker.files;
    picker.value = "";
    if (file) ctx.serial(() => uploadSet(file));
  });

  function showGpt(gpt) {
    element.hidden = !gpt;
    if (!gpt) return;
    const set = gpt.files.find((f) => f.kind === "evaluation");
    about.textContent = set
      ? `Evaluation set: ${set.name}. Evaluate scores this version on it. Tune trains the model on the example ` +
        "conversations (LoRA) and saves the tuned model as a new version, scored before and after."
      : "Add an evaluation set to score this GPT, and to tune it and see whether tuning helped.";
    actions.hidden = !set;
    if (gpt.score && !result.childElementCount) result.replaceChildren(scoreLine("Last score", gpt.score));
  }

  async function uploadSet(file) {
    const row = uploadRow(file.name);
    uploads.append(row.element);
    const updated = await sendFile(`/v1/gpts/${enc(ctx.gpt().slug)}/evaluation`, file, row);
    if (updated) ctx.saved(updated, `Added the evaluation set ${file.name} (version ${updated.version}).`);
  }

  function running(on) {
    evaluateButton.disabled = tuneButton.disabled = on;
    cancelButton.hidden = !on || !controller;
  }

  async function evaluate() {
    running(true);
    result.replaceChildren(h("span", { class: "muted" }, "Evaluating…"));
    try {
      const score = await api(`/v1/gpts/${enc(ctx.gpt().slug)}/evaluate`, { method: "POST" });
      result.replaceChildren(scoreLine(`Version ${score.version}`, score));
    } catch (e) {
      result.replaceChildren(h("span", { class: "error-text" }, errorText(e)));
    } finally {
      running(false);
    }
  }

  async function tune() {
    controller = new AbortController();
    running(true);
    const before = ctx.gpt();
    try {
      await followTuning(ctx, options.get(), controller.signal, { log, result });
      onTuned(before);
    } catch (e) {
      result.replaceChildren(e.name === "AbortError"
        ? h("span", { class: "muted" }, "Tuning cancelled: the GPT is as it was.")
        : h("span", { class: "error-text" }, errorText(e)));
    } finally {
      controller = null;
      running(false);
    }
  }

  return { element, showGpt, stop: () => controller?.abort() };
}

// A tuning run (POST /v1/gpts/SLUG/tune, server-sent events) until it ends: its messages and progress go to `log`,
// its result (the scores before and after) to `result`, and the version it saved to the page.
async function followTuning(ctx, options, signal, { log, result }) {
  const slug = ctx.gpt().slug;
  const bars = new Map();  // task -> its line in the log, updated in place
  log.hidden = false;
  log.replaceChildren();
  result.replaceChildren(h("span", { class: "muted" }, "Tuning…"));
  for await (const event of events(`/v1/gpts/${enc(slug)}/tune`, options, { signal })) {
    if (event.type === "message") log.append(h("li", { class: event.level }, event.text));
    else if (event.type === "progress") progressLine(bars, event, log);
    else if (event.type === "result") {
      result.replaceChildren(...[["Before", event.before], ["After", event.after]]
        .filter(([, score]) => score).map(([label, score]) => h("div", {}, scoreLine(label, score))),
        h("div", {}, `Saved as version ${event.version}, trained on ${plural(event.examples, "example")}.`));
      ctx.saved(await api(`/v1/gpts/${enc(slug)}`));
    }
  }
}

// -- the preview ----------------------------------------------------------------------------------------------------

// A chat with the form as it is now, saved or not; a saved GPT's knowledge answers in it.
function previewPanel(ctx, form) {
  const view = chatView({
    stream: (messages, signal) => events("/v1/gpts/preview", {
      spec: previewSpec(form.draftSpec()), model: ctx.gpt()?.slug, messages, stream: true,
      stream_options: { include_usage: true },
    }, { signal }),
    label: "Message the preview",
  });
  let shown = null;  // the starters the preview shows: it is redrawn only when they change
  const element = h("aside", { class: "builder-preview card", "aria-labelledby": "preview-title" },
    h("div", { class: "row preview-head" },
      h("h2", { id: "preview-title", class: "grow" }, "Preview"),
      h("button", { type: "button", class: "quiet", "aria-label": "Restart the preview",
                    onclick: () => { view.setMessages([]); view.focus(); } }, "Restart")),
    h("p", { class: "muted preview-note" }, "Answers from the form as it is now, saved or not."),
    view.element);
  return {
    element,
    show: () => {
      element.scrollIntoView({ block: "start" });
      view.focus();
    },
    setStarters: (starters) => {
      if (canonical(starters) === shown) return;
      shown = canonical(starters);
      view.setStarters(starters);
    },
    abort: () => view.abort(),
  };
}

// The preview answers before the GPT has a name: it needs none.
function previewSpec(draft) {
  return { ...draft, name: draft.name || "New GPT" };
}

// -- the pieces the parts are made of -------------------------------------------------------------------------------

function section(heading, children) {
  const id = `section-${heading.toLowerCase().replace(/\W+/g, "-")}`;
  return h("section", { class: "card builder-section", "aria-labelledby": id }, h("h2", { id }, heading), children);
}

// Where the server's refusals show. Its `param` names a field ("slug", "generation.top_k", "examples[0][1].content");
// the message goes beside the nearest registered field at or above it, else under the form.
function errorSlots() {
  const slots = new Map();
  let fallback = null;
  let count = 0;

  // `wrap` shows the message; `control` (if any) is marked invalid and described by it.
  function slot(key, wrap, control = wrap.querySelector("input, select, textarea")) {
    const node = h("small", { class: "field-error", id: `field-error-${++count}`, hidden: true });
    wrap.append(node);
    slots.set(key, { node, control });
    return wrap;
  }

  function clear() {
    for (const { node, control } of [...slots.values(), { node: fallback }]) {
      node.hidden = true;
      node.textContent = "";
      if (control) {
        control.removeAttribute("aria-invalid");
        describe(control, node.id, false);
      }
    }
  }

  function show(error) {
    let key = error.param || "";
    while (key && !slots.has(key)) {
      const up = key.replace(/(\.[^.[\]]*|\[\d+\])$/, "");  // "examples[0][1].content" -> "examples[0][1]"
      key = up === key ? "" : up;
    }
    const target = slots.get(key);
    const node = target ? target.node : fallback;
    // The server's message names the field ("... slug: must be ..."), which beside the field goes without saying,
    // and its general advice ("Fix that field; the README ...") adds nothing there either.
    const text = errorText(error);
    const at = target && error.param ? text.indexOf(`${error.param}: `) : -1;
    node.textContent = at >= 0 ? text.slice(at + error.param.length + 2).replace(/\s*Fix that field;.*$/s, "") : text;
    node.hidden = false;
    if (target?.control) {
      target.control.setAttribute("aria-invalid", "true");
      describe(target.control, node.id, true);
      target.control.focus();
    }
    node.scrollIntoView({ block: "center" });
  }

  return {
    slot,
    field: (key, label, control, hint) => slot(key, field(label, control, hint), control),
    group: (key, element) => slot(key, h("div", { class: "field-group" }, element), null),
    fallback: (node) => { fallback = node; },
    clear,
    show,
  };
}

function describe(control, id, on) {
  const ids = new Set((control.getAttribute("aria-describedby") || "").split(" ").filter(Boolean));
  if (on) ids.add(id); else ids.delete(id);
  if (ids.size) control.setAttribute("aria-describedby", [...ids].join(" "));
  else control.removeAttribute("aria-describedby");
}

// Number inputs for the settings of one spec object (generation, retrieval): empty ones are left out, so the
// server's default holds.
function numberInputs(settings, placeholder = () => null) {
  const inputs = new Map(settings.map(([key, , , step]) =>
    [key, h("input", { type: "number", step, min: 0, inputmode: "decimal", placeholder: placeholder(key) })]));
  return {
    fields: settings.map(([key, label, hint]) => [key, field(label, inputs.get(key), hint)]),
    get: () => Object.fromEntries([...inputs].filter(([, input]) => input.value !== "")
      .map(([key, input]) => [key, Number(input.value)])),
    set: (values) => { for (const [key, input] of inputs) input.value = values[key] ?? ""; },
  };
}

// Conversation starters: a list of lines, up to `max`.
function starterEditor(max, onChange) {
  const list = h("ol", { class: "starter-list" });
  const add = button("Add a starter", "", () => {
    addRow("");
    list.lastChild.querySelector("input").focus();
    onChange();
  });

  function addRow(text) {
    const row = h("li", { class: "row" }, h("input", { type: "text", value: text, class: "grow" }),
      button("Remove", "quiet danger", () => {
        row.remove();
        renumber();
        onChange();
      }));
    list.append(row);
    renumber();
  }

  function renumber() {
    [...list.children].forEach((row, i) => {
      row.querySelector("input").setAttribute("aria-label", `Conversation starter ${i + 1}`);
      row.querySelector("button").setAttribute("aria-label", `Remove starter ${i + 1}`);
    });
    add.disabled = list.children.length >= max;
  }

  return {
    element: h("div", {}, list, add),
    get: () => [...list.querySelectorAll("input")].map((input) => input.value).filter((s) => s.trim()),
    set: (starters) => {
      list.replaceChildren();
      starters.forEach(addRow);
      renumber();
    },
  };
}

// Example conversations: each a card of user/assistant exchanges (most have one).
function exampleEditor(onChange) {
  const list = h("div", { class: "examples" });
  const add = button("Add an example", "", () => {
    addExample([]);
    focusLast(list);
    onChange();
  });

  function addExample(messages) {
    const turns = h("div", { class: "turns" });
    const card = h("fieldset", { class: "example" }, h("legend"), turns, h("div", { class: "row" },
      button("Add an exchange", "quiet", () => {
        addTurn(turns, "", "");
        renumber();
        focusLast(card);
      }),
      button("Remove example", "quiet danger", () => {
        card.remove();
        renumber();
        onChange();
      })));
    for (let i = 0; i < messages.length; i += 2) addTurn(turns, messages[i].content, messages[i + 1]?.content ?? "");
    if (!messages.length) addTurn(turns, "", "");
    list.append(card);
    renumber();
  }

  function addTurn(turns, user, assistant) {
    turns.append(h("div", { class: "turn" },
      field("User", h("textarea", { rows: 2, value: user, dataset: { role: "user" } })),
      field("Assistant", h("textarea", { rows: 2, value: assistant, dataset: { role: "assistant" } }))));
  }

  // Each example and exchange says which it is, so that a screen reader hears "Example 2, user" not just "User".
  function renumber() {
    [...list.children].forEach((card, i) => {
      card.querySelector("legend").textContent = `Example ${i + 1}`;
      card.querySelector(".danger").setAttribute("aria-label", `Remove example ${i + 1}`);
      const turns = [...card.querySelectorAll(".turn")];
      turns.forEach((turn, k) => {
        const which = turns.length > 1 ? ` (exchange ${k + 1})` : "";
        for (const area of turn.querySelectorAll("textarea")) {
          area.setAttribute("aria-label", `Example ${i + 1}, ${area.dataset.role}${which}`);
        }
      });
    });
  }

  // The user's side of the last exchange in `within`: where a new one is written.
  function focusLast(within) {
    const areas = within.querySelectorAll("textarea");
    areas[areas.length - 2]?.focus();
  }

  return {
    element: h("div", {}, list, add),
    // An exchange left empty is dropped; one half-written is sent, and the server names what is missing.
    get: () => [...list.children].map((card) => [...card.querySelectorAll(".turn")].flatMap((turn) => {
      const [user, assistant] = turn.querySelectorAll("textarea");
      return user.value.trim() || assistant.value.trim()
        ? [{ role: "user", content: user.value }, { role: "assistant", content: assistant.value }] : [];
    })).filter((messages) => messages.length),
    set: (examples) => {
      list.replaceChildren();
      examples.forEach(addExample);
    },
  };
}

function button(label, className, onclick) {
  return h("button", { type: "button", class: className || null, onclick }, label);
}

// One file on its way up: its name, a progress bar, then (if refused) why, with a way to dismiss it.
function uploadRow(fileName) {
  const bar = h("progress", { max: 1, value: 0, "aria-label": `Uploading ${fileName}` });
  const status = h("span", { class: "muted" }, "Waiting…");
  const element = h("li", { class: "file upload" }, h("span", { class: "file-name" }, fileName), bar, status);
  return {
    element,
    progress: (fraction) => {
      bar.value = fraction;
      status.textContent = fraction < 1 ? `${Math.round(fraction * 100)}%` : "Reading…";
    },
    fail: (message) => {
      bar.remove();
      status.className = "error-text";
      status.textContent = message;
      element.append(h("button", { type: "button", class: "quiet", "aria-label": `Dismiss ${fileName}`,
                                  onclick: () => element.remove() }, "×"));
    },
  };
}

// One file up as multipart `file`, its progress on `row`: the GPT's new version, or null when refused (the row then
// says why).
async function sendFile(path, file, row) {
  const form = new FormData();
  form.append("file", file);
  try {
    const updated = await upload(path, form, row.progress);
    row.element.remove();
    return updated;
  } catch (e) {
    row.fail(errorText(e));
    return null;
  }
}

// An evaluation ({metric, score, n}): "Before: contains 0.5 on 12 examples".
function scoreLine(label, score) {
  return h("span", {}, `${label}: ${score.metric} `, h("strong", {}, formatNumber(score.score, 3)),
    score.n ? h("span", { class: "muted" }, ` on ${formatNumber(score.n)} examples`) : null);
}

// A task's progress in the tuning log: "Training 120/400 steps · loss 2.31", with a bar while it runs.
function progressLine(bars, { task, completed, total, unit, metrics, done }, log) {
  if (!bars.has(task)) {
    const line = { text: h("span"), bar: h("progress", { max: 1, "aria-label": task }) };
    bars.set(task, line);
    log.append(h("li", { class: "progress-line" }, line.text, line.bar));
  }
  const { text, bar } = bars.get(task);
  const count = total ? `${formatNumber(completed)}/${formatNumber(total)}` : formatNumber(completed);
  const figures = Object.entries(metrics || {}).map(([key, value]) =>
    `${key} ${typeof value === "number" ? formatNumber(value, 4) : value}`);
  text.textContent = [`${task} ${count} ${unit || ""}`.trim(), ...figures].join(" · ");
  if (total) bar.value = completed / total; else bar.removeAttribute("value");
  bar.hidden = done;
}

// -- plain functions ------------------------------------------------------------------------------------------------

// The fields of the draft that differ from the saved spec: what a PATCH sends.
function changedFields(draft, savedSpec) {
  const stored = comparable(savedSpec);
  return Object.fromEntries(Object.entries(draft)
    .filter(([key, value]) => canonical(value) !== canonical(stored[key])));
}

// A saved spec as the draft would say it: max_new_tokens (written by some spec files) is max_tokens in the form.
function comparable(spec) {
  const { max_new_tokens, ...generation } = spec.generation;
  return { ...spec, generation: max_new_tokens == null ? generation : { ...generation, max_tokens: max_new_tokens } };
}

// JSON with object keys in order: two specs compare equal whatever order their fields came in.
function canonical(value) {
  return JSON.stringify(value ?? null, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort()) : v);
}

function lines(text) {
  return text.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line !== "");
}

// What the server will make of a name when no slug is given (gpts.spec.slugify), shown as the slug's placeholder.
function slugify(text) {
  const slug = text.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "");
  return slug.slice(0, 64).replace(/-+$/, "") || "gpt";
}
