// Models (/models): what this server serves and what else is installed here, each with its size, parameters,
// context length and chat template (GET /v1/model_details, gpts.server.routes.models); a served one is a link away
// from a chat.
import { api } from "../api.js";
import { failure, formatBytes, formatNumber, h } from "../ui.js";

const KINDS = { base: "Base model", "fine-tuned": "Fine-tuned", installed: "Not served" };
const FORMATS = { bundled: "GGUF, bundled with gpts", gguf: "GGUF", native: "gpts checkpoint", adapter: "LoRA adapter",
                  hf: "Hugging Face", hub: "Hugging Face download" };
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

export async function render(root) {
  const heading = h("h1", {}, "Models");
  const status = h("p", { class: "muted", role: "status" }, "Reading the models…");
  root.append(heading, status);
  let models;
  try {
    ({ data: models } = await api("/v1/model_details"));
  } catch (error) {
    status.replaceWith(failure(error));
    return;
  }
  const served = models.filter((m) => m.served);
  const installed = models.filter((m) => !m.served);
  status.replaceWith(h("p", { class: "muted" }, "The models this server serves, to chat with and to fine-tune" +
                       (installed.length ? ", and the others installed on its machine." : ".")));
  root.append(group("models-served", "Served", served));
  if (installed.length) {
    root.append(group("models-installed", "Installed, not served", installed,
      h("p", { class: "muted" }, "Serve one too by naming it when the server starts: ",
        h("code", {}, "gpts serve -m NAME"), ".")));
  }
}

function group(id, title, models, note = null) {
  return h("section", { "aria-labelledby": id, class: "models-group" },
    h("h2", { id }, title, " ", h("span", { class: "badge" }, models.length)),
    note,
    h("ul", { class: "models-list" }, models.map((model) => h("li", {}, card(model)))));
}

function card(model) {
  const id = `model-${model.id.replace(/[^\w-]/g, "-")}`;
  const facts = [
    ["Context length", model.context_length != null && `${formatNumber(model.context_length)} tokens`],
    ["Parameters", model.parameters != null &&
      h("span", { title: formatNumber(model.parameters) }, compact.format(model.parameters))],
    ["Size", model.size_bytes != null && formatBytes(model.size_bytes)],
    ["Format", model.format && (FORMATS[model.format] || model.format)],
    ["Architecture", model.architecture],
    ["Source", model.source, "wide"],
  ].filter(([, value]) => value !== null && value !== undefined && value !== false);
  return h("article", { class: "card models-card", "aria-labelledby": id },
    h("div", { class: "models-head" },
      h("h3", { id }, model.id),
      model.served && h("a", { class: "button primary", "data-link": true, "aria-label": `Chat with ${model.id}`,
                               href: `/?model=${encodeURIComponent(model.id)}` }, "Chat")),
    h("div", { class: "row" },
      h("span", { class: `badge models-${model.kind}` }, KINDS[model.kind] || model.kind),
      model.served && h("span", { class: `badge ${model.loaded ? "models-loaded" : ""}` },
                        model.loaded ? "Loaded" : "Loads when used")),
    facts.length ? h("dl", { class: "models-facts" }, facts.map(([name, value, wide]) =>
      h("div", { class: wide && "models-wide" }, h("dt", {}, name), h("dd", {}, value))))
      : h("p", { class: "muted" }, "Its files could not be read: the server's log says why."),
    model.chat_template && h("details", { class: "models-template" },
      h("summary", {}, "Chat template"),
      h("pre", { tabindex: 0, "aria-label": `Chat template of ${model.id}` }, h("code", {}, model.chat_template))));
}
