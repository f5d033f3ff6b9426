// The chat page (/): talk to a model or a GPT, with the conversations kept in the store.
//   /?model=ID   a new conversation with that model or GPT (the store's and fine-tuning's "Chat" links)
//   /?c=ID       a stored conversation, resumed
// A new conversation is stored at its first answer; the address then becomes its own (?c=), so it can be bookmarked
// and the back button leaves it. Switching model starts a new conversation: a stored one belongs to its model.
//
// In this file, in order: render (load, lay out, open what the address names); the page's state, `page`, that every
// function below takes; the model picker; the settings; the conversation shown (start, open, rename, delete); the
// saving of its turns, in order; the conversation list; the address; the side panels and the layout.
import { api, errorText, events } from "../api.js";
import { setAddress } from "../app.js";
import { chatView } from "../chatview.js";
import { failure, field, formatDate, h, toast } from "../ui.js";

const SETTINGS_ITEM = "gpts.chat.settings";
const WIDE = "(min-width: 900px)";  // the side panels fit beside the chat; on a phone they fold behind buttons

// The sampling settings: [request field, label, input attributes, hint]. Blank is the model's (or GPT's) default.
const SAMPLING = [
  ["temperature", "Temperature", { min: 0, max: 2, step: 0.1 }, "0 always picks the likeliest word; higher varies more"],
  ["top_p", "Top p", { min: 0.01, max: 1, step: 0.05 }, "Sample from the likeliest words holding this share"],
  ["max_tokens", "Max tokens", { min: 1, step: 1 }, "The longest answer, in tokens"],
  ["seed", "Seed", { min: 0, step: 1 }, "The same seed gives the same answer"],
  ["presence_penalty", "Presence penalty", { min: -2, max: 2, step: 0.1 }, "Above 0: new topics"],
  ["frequency_penalty", "Frequency penalty", { min: -2, max: 2, step: 0.1 }, "Above 0: fewer repeated words"],
];

export async function render(root, params, url) {
  let models, gpts, listed;
  try {
    [models, gpts, listed] = await Promise.all([api("/v1/models"), api("/v1/gpts"), api("/v1/conversations")]);
  } catch (error) {
    root.append(failure(error));
    return;
  }
  const page = chatPage(models.data, gpts.data);
  root.append(layout(page));
  showList(page, listed.data);
  await openAddress(page, url);
  return () => page.view.abort();
}

// -- the page's state -------------------------------------------------------------------------------------------------

// What the parts below share, each function taking it as `page`:
//   models, gptBySlug   what the server offers: /v1/models' list (a GPT's id is its slug), and the GPTs by slug
//   chat                the conversation shown: conversation() below
//   settings            the settings' form and inputs: settingsForm()
//   view                the transcript and the message box (chatview.js)
//   picker, head, list, panels   the model picker, the title above the chat, the conversation list, the side panels
function chatPage(models, gpts) {
  const page = { models, gptBySlug: new Map(gpts.map((g) => [g.slug, g])), chat: null };
  page.settings = settingsForm();
  page.view = chatView({
    stream: (messages, signal) => events("/v1/chat/completions", request(page, messages), { signal }),
    onTurn: (turn) => store(page, page.chat, turn),
  });
  page.picker = modelPicker(page);
  page.head = chatHead(page);
  page.list = h("ul", { class: "chat-list", onclick: (event) => openListed(page, event) });
  page.panels = sidePanels(page);
  return page;
}

// -- the model picker -------------------------------------------------------------------------------------------------

function modelPicker(page) {
  const { models, gptBySlug } = page;
  const isGpt = (m) => gptBySlug.has(m.id);
  const option = (m, name) => h("option", { value: m.id }, name);
  return h("select", { onchange: (event) => startChat(page, event.target.value, leaving(page.chat)) },
    h("optgroup", { label: "Models" }, models.filter((m) => !isGpt(m)).map((m) => option(m, m.id))),
    h("optgroup", { label: "GPTs" }, models.filter(isGpt).map((m) => option(m, gptBySlug.get(m.id).spec.name))));
}

// The conversation's model, in the picker and around the chat: a GPT's starters and description, and no system prompt.
function showModel(page, model) {
  const { picker, head, settings } = page;
  if (![...picker.options].some((o) => o.value === model)) {  // a removed GPT's conversation: shown, not answered
    picker.append(h("option", { value: model }, `${model} (not on this server)`));
  }
  picker.value = model;
  const gpt = page.gptBySlug.get(model);
  page.view.setStarters(gpt?.spec.conversation_starters || []);
  head.about.replaceChildren(...(gpt
    ? [gpt.spec.description, " ", h("a", { href: `/store/${encodeURIComponent(model)}`, "data-link": true }, "About this GPT")]
    : [`A conversation with the model ${model}.`]));
  settings.systemField.hidden = Boolean(gpt);
  settings.gptNote.hidden = !gpt;
}

// -- the settings: kept in this browser (localStorage), for every conversation ----------------------------------------

// {form, inputs: SAMPLING's, each named as its request field, system: the system prompt, systemField, gptNote}
function settingsForm() {
  const saved = JSON.parse(localStorage.getItem(SETTINGS_ITEM) || "{}");
  const inputs = SAMPLING.map(([name, , attrs]) => h("input", {
    type: "number", inputmode: "decimal", placeholder: "default", name, value: saved[name] ?? "", ...attrs,
  }));
  const system = h("textarea", { rows: 4, name: "system", value: saved.system || "",
                                 placeholder: "You are a helpful assistant." });
  const settings = {
    inputs,
    system,
    systemField: field("System prompt", system, "Sent before the conversation. Optional."),
    gptNote: h("p", { class: "muted small" }, "A GPT's instructions are its system prompt: edit them in the builder."),
  };
  settings.form = h("form", { class: "chat-settings-form", onsubmit: (e) => e.preventDefault(),
                              oninput: () => keepSettings(settings) },
    SAMPLING.map(([, label, , hint], i) => field(label, inputs[i], hint)), settings.systemField, settings.gptNote,
    h("button", { type: "button", class: "quiet", onclick: () => resetSettings(settings) }, "Reset to defaults"));
  return settings;
}

function keepSettings({ inputs, system }) {
  const values = Object.fromEntries(inputs.map((input) => [input.name, input.value]));
  localStorage.setItem(SETTINGS_ITEM, JSON.stringify({ ...values, system: system.value }));
}

function resetSettings(settings) {
  for (const input of settings.inputs) input.value = "";
  settings.system.value = "";
  keepSettings(settings);
}

// The request's fields: the settings given, and the system prompt where the model takes one (a GPT has its own).
function request(page, messages) {
  const { inputs, system } = page.settings;
  const body = { model: page.chat.model, messages, stream: true, stream_options: { include_usage: true } };
  for (const input of inputs) if (input.value !== "") body[input.name] = Number(input.value);
  if (!page.gptBySlug.has(page.chat.model) && system.value.trim()) {
    body.messages = [{ role: "system", content: system.value.trim() }, ...messages];
  }
  return body;
}

// -- the conversation shown -------------------------------------------------------------------------------------------

// id: null until stored; unsaved: its answered turns not stored yet, in order; saving: a save is under way;
// notice: the toast saying a save failed.
function conversation({ id = null, model, title = "" }) {
  return { id, model, title, unsaved: [], saving: false, notice: null };
}

// A new conversation; `how`: how the address becomes /?model=MODEL ("push", "replace"; null: it stays).
function startChat(page, model, how = null) {
  page.chat = conversation({ model });
  changeAddress(modelAddress(model), how);
  showModel(page, model);
  page.view.setMessages([]);
  showTitle(page);
  if (matchMedia(WIDE).matches) page.view.focus();  // a phone would open its keyboard over the page
}

async function openChat(page, id) {
  let stored;
  try {
    stored = await api(`/v1/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    toast(errorText(error), "error");
    return startChat(page, page.picker.value || page.models[0].id, "replace");
  }
  page.chat = conversation({ id: stored.id, model: stored.slug, title: stored.title });
  showModel(page, stored.slug);
  // The speed of an answer is kept with its usage (the store keeps usage as given).
  page.view.setMessages(stored.messages.map((m) => ({ ...m, timings: m.usage?.timings })));
  showTitle(page);
  if (!matchMedia(WIDE).matches) showPanel(page.panels.conversations, false);  // on a phone the list covered the chat
}

// Above the chat: {element, row: the title with Rename and Delete, title, renameButton, deleteButton, about}.
function chatHead(page) {
  const head = {
    title: h("h1", { class: "chat-title" }),
    about: h("p", { class: "muted chat-about" }),
    renameButton: h("button", { type: "button", class: "quiet small", onclick: () => rename(page) }, "Rename"),
    deleteButton: h("button", { type: "button", class: "quiet small danger", onclick: () => remove(page) }, "Delete"),
  };
  head.row = h("div", { class: "row" }, head.title, head.renameButton, head.deleteButton);
  head.element = h("div", { class: "chat-head" }, head.row, head.about);
  return head;
}

// The conversation's title, and which one it is in the list.
function showTitle(page) {
  const { chat, head } = page;
  if (head.element.firstChild !== head.row) head.element.firstChild.replaceWith(head.row);  // closes a rename left open
  head.title.textContent = chat.title || "New chat";
  head.renameButton.hidden = head.deleteButton.hidden = !chat.id;
  for (const link of page.list.querySelectorAll("a")) {
    if (link.dataset.id === chat.id) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
}

function rename(page) {
  const { head } = page;
  const input = h("input", { value: page.chat.title, "aria-label": "Title", maxlength: 200 });
  const close = () => { form.replaceWith(head.row); head.renameButton.focus(); };
  const form = h("form", { class: "row chat-rename" }, input,
    h("button", { type: "submit", class: "primary small" }, "Save"),
    h("button", { type: "button", class: "quiet small", onclick: close }, "Cancel"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const at = page.chat;
    try {
      const body = { title: input.value };
      at.title = (await api(`/v1/conversations/${encodeURIComponent(at.id)}`, { method: "PATCH", body })).title;
    } catch (error) {
      return toast(errorText(error), "error");
    }
    close();
    showTitle(page);
    refreshList(page);
  });
  input.addEventListener("keydown", (event) => { if (event.key === "Escape") close(); });
  head.row.replaceWith(form);
  input.select();
}

async function remove(page) {
  const { chat } = page;
  if (!confirm(`Delete the conversation “${chat.title}”? This cannot be undone.`)) return;
  try {
    await api(`/v1/conversations/${encodeURIComponent(chat.id)}`, { method: "DELETE" });
  } catch (error) {
    return toast(errorText(error), "error");
  }
  toast(`Deleted “${chat.title}”.`);
  startChat(page, chat.model, "replace");
  refreshList(page);
}

// -- saving the turns -------------------------------------------------------------------------------------------------

// A conversation's turns are stored in the order they were answered: each one keeps the turns before it (`keep`),
// so one that failed holds back those after it, until Retry (or the next answer) sends them all again, in order.
function store(page, at, turn) {
  at.unsaved.push(turn);
  return save(page, at);
}

async function save(page, at) {
  if (at.saving) return;  // the save under way sends this turn too
  at.saving = true;
  at.notice?.remove();
  let saved = 0;
  try {
    while (at.unsaved.length) {
      if (!at.id) {
        at.id = (await api("/v1/conversations", { body: { model: at.model } })).id;
        if (at === page.chat) changeAddress(conversationAddress(at.id), "replace");
      }
      const turns = `/v1/conversations/${encodeURIComponent(at.id)}/turns`;
      at.title = (await api(turns, { body: turnBody(at.unsaved[0]) })).title;
      at.unsaved.shift();
      saved++;
    }
  } catch (error) {
    at.notice = toast(`The conversation was not saved: ${errorText(error)}`, "error", { retry: () => save(page, at) });
  } finally {
    at.saving = false;
  }
  if (!saved) return;
  await refreshList(page);
  if (at === page.chat) showTitle(page);
}

// A turn as the store takes it: the answer's speed (timings) goes with its usage.
function turnBody({ user, assistant, citations, usage, timings, keep }) {
  return { user, assistant, citations, usage: usage ? { ...usage, timings } : {}, keep };
}

// -- the conversation list --------------------------------------------------------------------------------------------

function showList(page, conversations) {
  page.list.replaceChildren(...conversations.map((c) => listed(page, c)));
  if (!conversations.length) page.list.append(h("li", { class: "muted empty" }, "No conversations yet."));
  if (page.chat) showTitle(page);
}

function listed(page, c) {
  const model = page.gptBySlug.get(c.slug)?.spec.name || c.slug;
  return h("li", {},
    h("a", { href: conversationAddress(c.id), "data-link": true, dataset: { id: c.id } },
      h("span", { class: "chat-list-title" }, c.title || "New chat"),
      h("small", { class: "muted" }, `${model} · ${formatDate(c.updated_at)}`)));
}

async function refreshList(page) {
  try {
    showList(page, (await api("/v1/conversations")).data);
  } catch (error) {
    toast(errorText(error), "error");
  }
}

// A click on a listed conversation opens it in place: the router would draw the whole page again.
function openListed(page, event) {
  const link = event.target.closest("a");
  if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
  event.preventDefault();
  if (link.dataset.id === page.chat.id) return;
  changeAddress(link.getAttribute("href"), "push");
  openChat(page, link.dataset.id);
}

// -- the address ------------------------------------------------------------------------------------------------------

// What the page opens with: the conversation ?c=ID, else a new one with ?model=ID (an unknown one is said, and
// replaced by the first model), else with the first model.
async function openAddress(page, url) {
  const conversationId = url.searchParams.get("c");
  const wanted = url.searchParams.get("model");
  if (conversationId) return openChat(page, conversationId);
  const known = page.models.some((m) => m.id === wanted);
  if (wanted && !known) toast(`This server has no model or GPT “${wanted}”.`, "error");
  startChat(page, known ? wanted : page.models[0].id, wanted && !known ? "replace" : null);
}

const modelAddress = (model) => `/?model=${encodeURIComponent(model)}`;
const conversationAddress = (id) => `/?c=${encodeURIComponent(id)}`;

// Leaving a conversation that has messages is a new history entry (the back button returns to it); an empty one is
// only replaced: Chromium's model picker fires change at each arrow key, which would otherwise leave an entry each.
const leaving = (chat) => (chat.id || chat.unsaved.length ? "push" : "replace");

// how: "push" (a new history entry), "replace", or null (the address stays).
function changeAddress(address, how) {
  if (how) setAddress(address, { replace: how === "replace" });
}

// -- the side panels and the layout -----------------------------------------------------------------------------------

// The conversations (with New chat) and the settings: beside the chat on a desktop, folded behind buttons on a phone.
function sidePanels(page) {
  const newChat = h("button", { type: "button", class: "primary new-chat",
                                onclick: () => startChat(page, page.chat.model, leaving(page.chat)) }, "New chat");
  const conversations = h("aside", { class: "chat-conversations", id: "chat-conversations", "aria-label": "Conversations" },
    newChat, page.list);
  const settings = h("aside", { class: "chat-settings", id: "chat-settings", "aria-labelledby": "chat-settings-title" },
    h("h2", { id: "chat-settings-title" }, "Settings"), page.settings.form);
  const panels = { conversations: foldable(conversations, "Conversations"), settings: foldable(settings, "Settings") };
  const wide = matchMedia(WIDE).matches;
  showPanel(panels.settings, wide);
  showPanel(panels.conversations, wide);
  return panels;
}

// {panel, toggle: the toolbar button that shows or folds it}
function foldable(panel, label) {
  const fold = { panel };
  fold.toggle = h("button", { type: "button", class: `panel-toggle toggle-${panel.id}`, "aria-controls": panel.id,
                              onclick: () => showPanel(fold, panel.hidden) }, label);
  return fold;
}

function showPanel({ panel, toggle }, open) {
  panel.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
}

// The panels come before the chat, where a phone shows them (a desktop shows the settings on the right).
function layout(page) {
  const { conversations, settings } = page.panels;
  return h("div", { class: "chat-page" },
    h("div", { class: "chat-toolbar" }, conversations.toggle, field("Model", page.picker), settings.toggle),
    h("div", { class: "chat-body" }, conversations.panel, settings.panel,
      h("section", { class: "chat-main", "aria-label": "Chat" }, page.head.element, page.view.element)));
}
