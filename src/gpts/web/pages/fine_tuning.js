// Fine-tuning (/fine-tuning?job=ID): upload training files, start a job, and follow it live: its status, loss and
// accuracy curves, messages and checkpoints; cancel it, or chat with the model it made. All through OpenAI's Files
// and Fine-tuning APIs (gpts.server.routes.files and .fine_tuning), as any other client would.
import { api, ApiError, errorText, plainModels, upload } from "../api.js";
import { setAddress } from "../app.js";
import { chart } from "../chart.js";
import { failure, field, formatBytes, formatDate, formatNumber, h, toast } from "../ui.js";

const FILES = "/v1/files";
const JOBS = "/v1/fine_tuning/jobs";
const POLL_MS = 2000;
const UNFINISHED = new Set(["validating_files", "queued", "running"]);
const STATUS = { validating_files: "Validating files", queued: "Queued", running: "Running", succeeded: "Succeeded",
                 failed: "Failed", cancelled: "Cancelled" };
// The metrics of a step (gpts.finetune's CSV columns), drawn as one curve each; validation ones when the job has a
// validation file.
const LOSS = [["train_loss", "training"], ["valid_loss", "validation"], ["full_valid_loss", "full validation"]];
const ACCURACY = [["train_mean_token_accuracy", "training"], ["valid_mean_token_accuracy", "validation"],
                  ["full_valid_mean_token_accuracy", "full validation"]];
const EXAMPLE_LINE = '{"messages": [{"role": "user", "content": "When do you open?"}, ' +
                     '{"role": "assistant", "content": "At nine."}]}';

export async function render(root, params, url) {
  root.append(h("h1", {}, "Fine-tuning"),
              h("p", { class: "muted ft-intro" }, "Teach a model from your own example conversations: upload them, " +
                "start a job, watch it learn, then chat with the model it makes."));
  let files, models, jobs;
  try {
    [files, models, jobs] = await Promise.all([api(`${FILES}?purpose=fine-tune`), baseModels(),
                                               api(`${JOBS}?limit=100`)]);
  } catch (error) {
    root.append(failure(error));
    return null;
  }

  let closed = false;
  let timer = null;
  let controller = null;  // the update in flight: a newer one (or leaving the page) aborts it
  let followed = null;  // the job shown: its view and what of it is loaded
  const jobList = jobsList(select);
  const form = jobForm(models, files.data, async (job) => {
    jobList.update([job, ...jobList.jobs]);
    await select(job.id);
  });
  const uploads = uploadSection(files.data, (file) => form.addFile(file));
  const detail = h("div", { class: "ft-detail" });
  root.append(h("div", { class: "ft-layout" },
    h("div", { class: "ft-side" }, uploads, form.element),
    h("div", { class: "ft-main" }, jobList.element, detail)));
  jobList.update(jobs.data);

  function select(id) {
    setAddress(id ? `/fine-tuning?job=${encodeURIComponent(id)}` : "/fine-tuning");
    followed = id ? { id, view: jobView(id), known: new Set(), status: null } : null;
    detail.replaceChildren(followed ? followed.view.element : placeholder());
    jobList.mark(id);
    return update();
  }

  // One round of polling: the jobs' statuses and, for the job shown, what is new. Again in POLL_MS while a job has
  // not ended; a lost connection stops it until Retry.
  async function update() {
    clearTimeout(timer);
    controller?.abort();
    controller = new AbortController();
    const { signal } = controller;
    const job = followed;
    try {
      const [list] = await Promise.all([api(`${JOBS}?limit=100`, { signal }), job && follow(job, signal)]);
      if (jobList.update(list.data).some((j) => j.status === "succeeded")) form.setModels(await baseModels());
    } catch (error) {
      if (error.name === "AbortError" || closed) return;
      if (error.status === 0) {
        toast(errorText(error), "error", { retry: update });
        return;
      }
      if (job) job.view.fail(error);
      else toast(errorText(error), "error");
    }
    const running = [...jobList.jobs, followed].some((j) => j && UNFINISHED.has(j.status));
    if (!closed && !signal.aborted && running) {
      timer = setTimeout(update, POLL_MS);
    }
  }

  await select(url.searchParams.get("job"));
  return () => {
    closed = true;
    clearTimeout(timer);
    controller?.abort();
  };
}

// Base models and fine-tuned ones, the models a job may start from: every model served but the GPTs.
async function baseModels() {
  return (await plainModels()).map((m) => m.id);
}

// What is new about a followed job: the job, its events since the last round (newest first, page by page, until one
// already seen), its checkpoints.
async function follow(followed, signal) {
  const path = `${JOBS}/${encodeURIComponent(followed.id)}`;
  const fresh = [];
  for (let after = null; ;) {
    const limit = followed.known.size ? 100 : 1000;
    const page = await api(`${path}/events?limit=${limit}${after ? `&after=${after}` : ""}`, { signal });
    const unseen = page.data.findIndex((e) => followed.known.has(e.id));
    fresh.push(...(unseen < 0 ? page.data : page.data.slice(0, unseen)));
    if (unseen >= 0 || !page.has_more) break;
    after = page.last_id;
  }
  const [job, checkpoints] = await Promise.all([api(path, { signal }),
                                                api(`${path}/checkpoints?limit=100`, { signal })]);
  if (signal.aborted) return;
  for (const event of fresh) followed.known.add(event.id);
  followed.status = job.status;
  followed.view.show(job, fresh.reverse(), checkpoints.data);
}

// -- uploading training files -------------------------------------------------------------------------------------

function uploadSection(files, onUploaded) {
  const input = h("input", { type: "file", name: "file", accept: ".jsonl,.json,application/jsonl,application/x-ndjson",
                             required: true });
  const progress = h("progress", { max: 1, value: 0, hidden: true, "aria-label": "Upload progress" });
  const problems = h("div", { class: "ft-problems", role: "alert" });
  const list = h("ul", { class: "ft-files", "aria-label": "Uploaded files" });
  const button = h("button", { type: "submit", class: "primary" }, "Upload");
  const showFiles = () => list.replaceChildren(...(files.length ? files.map(fileItem)
    : [h("li", { class: "muted" }, "No files yet.")]));

  async function send(event) {
    event?.preventDefault();
    const file = input.files[0];
    if (!file) return;
    const body = new FormData();
    body.append("purpose", "fine-tune");
    body.append("file", file);
    problems.replaceChildren();
    button.disabled = true;
    progress.hidden = false;
    try {
      const uploaded = await upload(FILES, body, (done) => { progress.value = done; });
      files.unshift(uploaded);
      showFiles();
      onUploaded(uploaded);
      input.value = "";
      toast(`Uploaded ${uploaded.filename}.`);
    } catch (error) {
      if (error.status === 0) toast(errorText(error), "error", { retry: send });
      else problems.replaceChildren(fileProblems(error));
    } finally {
      button.disabled = false;
      progress.hidden = true;
      progress.value = 0;
    }
  }

  showFiles();
  return h("section", { class: "card ft-card", "aria-labelledby": "ft-upload-title" },
    h("h2", { id: "ft-upload-title" }, "Training data"),
    h("form", { onsubmit: send },
      field("JSONL file", input, "One conversation per line, in OpenAI's chat format."),
      h("details", { class: "ft-format" }, h("summary", {}, "Example line"), h("pre", {}, h("code", {}, EXAMPLE_LINE))),
      h("div", { class: "row" }, button, progress)),
    problems,
    h("h3", {}, "Uploaded files"),
    list);
}

function fileItem(file) {
  return h("li", {}, h("span", { class: "ft-file-name" }, file.filename),
    h("small", { class: "muted" }, `${formatBytes(file.bytes)} · ${formatDate(file.created_at)} · `,
      h("code", {}, file.id)));
}

// A refused file: the server's 400 lists each kind of problem with the lines that have it (`errors`, from
// gpts.finetune_data) and a line that is right (`example_line`), shown here as a list by line. Any other refusal
// is shown as the server words it.
function fileProblems(error) {
  const problems = error instanceof ApiError ? error.error.errors : null;
  if (!problems?.length) return h("p", { class: "error-text" }, errorText(error));
  const byLine = [...problems].sort((a, b) => a.lines[0] - b.lines[0]);
  return h("div", {},
    h("p", { class: "error-text" }, error.message.split("\n")[0]),  // "NAME (chat format, ...) has N errors:"
    h("ul", {}, byLine.map((p) => {
      const alone = p.lines.length === 1 && !p.more_lines;  // the detail is about that line: said plainly
      return h("li", {},
        h("strong", {}, linesText(p)), `: ${p.description}`, h("br"),
        h("small", { class: "muted" }, alone ? p.detail : `e.g. line ${p.lines[0]}: ${p.detail}`));
    })),
    h("p", {}, "Fix those lines: each line must be one JSON object like"),
    h("pre", {}, h("code", {}, error.error.example_line)));
}

function linesText({ lines, more_lines: more }) {
  return `line${lines.length + more === 1 ? "" : "s"} ${lines.join(", ")}${more ? ` and ${more} more` : ""}`;
}

// -- starting a job -----------------------------------------------------------------------------------------------

function jobForm(models, files, onCreated) {
  const model = h("select", { required: true });
  const training = h("select", { required: true });
  const validation = h("select", {});
  // Empty is "auto": the run chooses from the data (gpts.finetune), and the job then shows what it chose.
  const epochs = h("input", { type: "number", min: 1, max: 50, step: 1, placeholder: "auto", inputmode: "numeric" });
  const batch = h("input", { type: "number", min: 1, max: 256, step: 1, placeholder: "auto", inputmode: "numeric" });
  const rate = h("input", { type: "number", min: 0.0001, max: 10, step: "any", placeholder: "auto",
                            inputmode: "decimal" });
  const suffix = h("input", { type: "text", maxlength: 64, pattern: "[A-Za-z0-9._\\-]+", autocomplete: "off",
                              spellcheck: "false" });
  const seed = h("input", { type: "number", min: 0, max: 2 ** 31 - 1, step: 1, placeholder: "random",
                            inputmode: "numeric" });
  const problem = h("div", { role: "alert", class: "error-text" });
  const button = h("button", { type: "submit", class: "primary" }, "Start fine-tuning");
  // The field each of the server's `param`s names, to point at it when the server refuses the job.
  const params = { model, training_file: training, validation_file: validation, suffix, seed,
                   "hyperparameters.n_epochs": epochs, "hyperparameters.batch_size": batch,
                   "hyperparameters.learning_rate_multiplier": rate };

  function setModels(ids) {
    const chosen = model.value;
    model.replaceChildren(...ids.map((id) => h("option", { value: id, selected: id === chosen }, id)));
  }

  function setFiles() {
    const [chosenTraining, chosenValidation] = [training.value, validation.value];
    const options = (chosen) => files.map((f) => h("option", { value: f.id, selected: f.id === chosen },
                                                   `${f.filename} (${f.id})`));
    training.replaceChildren(h("option", { value: "" }, files.length ? "Choose a file" : "Upload a file first"),
                             ...options(chosenTraining));
    validation.replaceChildren(h("option", { value: "" }, "None"), ...options(chosenValidation));
  }

  const hyperparameter = (input) => (input.value === "" ? "auto" : Number(input.value));

  async function start(event) {
    event.preventDefault();
    problem.replaceChildren();
    for (const control of Object.values(params)) control.removeAttribute("aria-invalid");
    const body = {
      model: model.value, training_file: training.value, validation_file: validation.value || null,
      hyperparameters: { n_epochs: hyperparameter(epochs), batch_size: hyperparameter(batch),
                         learning_rate_multiplier: hyperparameter(rate) },
      suffix: suffix.value.trim() || null, seed: seed.value === "" ? null : Number(seed.value),
    };
    button.disabled = true;
    try {
      const job = await api(JOBS, { body });
      toast(`Started ${job.id}.`);
      await onCreated(job);
    } catch (error) {
      if (error.status === 0) {
        toast(errorText(error), "error", { retry: () => element.requestSubmit() });
      } else {
        problem.textContent = errorText(error);
        const control = params[error.param];
        control?.setAttribute("aria-invalid", "true");
        control?.focus();
      }
    } finally {
      button.disabled = false;
    }
  }

  const element = h("form", { class: "card ft-card", "aria-labelledby": "ft-new-title", onsubmit: start },
    h("h2", { id: "ft-new-title" }, "New job"),
    field("Base model", model),
    field("Training file", training),
    field("Validation file", validation, "Optional: examples held out to measure the model on."),
    h("fieldset", { class: "ft-hyper" }, h("legend", {}, "Hyperparameters (empty: auto)"),
      field("Epochs", epochs), field("Batch size", batch), field("Learning rate multiplier", rate)),
    h("div", { class: "ft-pair" },
      field("Suffix", suffix, "In the model's name: ft:BASE:SUFFIX:ID."),
      field("Seed", seed, "The same seed trains the same model.")),
    problem,
    h("div", { class: "row end" }, button));
  setModels(models);
  setFiles();
  return {
    element, setModels,
    addFile(file) {
      files.unshift(file);
      setFiles();
      training.value = file.id;
    },
  };
}

// -- the jobs -----------------------------------------------------------------------------------------------------

function statusBadge(status) {
  return h("span", { class: `badge ft-status ft-${status}` }, STATUS[status] || status);
}

// The jobs, newest first, each a link to itself (?job=ID, to bookmark). Updated in place by each round of polling,
// so that the link a keyboard user is on keeps its focus. update() answers the jobs that ended since the last one.
function jobsList(onSelect) {
  const list = h("ul", { class: "ft-jobs" });
  const items = new Map();  // job id -> {item, badge, status}
  const state = { jobs: [] };

  function item(job) {
    const link = h("a", { href: `/fine-tuning?job=${encodeURIComponent(job.id)}`, onclick: (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      onSelect(job.id);
    } }, h("code", {}, job.id));
    const badge = h("span", {});
    const entry = { badge, status: null,
                    item: h("li", { dataset: { job: job.id } }, link, badge,
                            h("small", { class: "muted" }, `${job.model} · ${formatDate(job.created_at)}`)) };
    items.set(job.id, entry);
    return entry;
  }

  return {
    element: h("section", { class: "card ft-card", "aria-labelledby": "ft-jobs-title" },
      h("h2", { id: "ft-jobs-title" }, "Jobs"), list),
    get jobs() { return state.jobs; },
    update(jobs) {
      const ended = [];
      for (const job of jobs) {
        const entry = items.get(job.id) || item(job);
        if (entry.status !== job.status) {
          if (entry.status && UNFINISHED.has(entry.status) && !UNFINISHED.has(job.status)) ended.push(job);
          entry.badge.replaceChildren(statusBadge(job.status));
          entry.status = job.status;
        }
      }
      const order = jobs.map((job) => job.id).join();
      if (order !== state.jobs.map((job) => job.id).join() || !jobs.length) {
        const focused = document.activeElement;
        list.replaceChildren(...(jobs.length ? jobs.map((job) => items.get(job.id).item)
          : [h("li", { class: "muted" }, "No jobs yet.")]));
        if (list.contains(focused)) focused.focus();
      }
      state.jobs = jobs;
      return ended;
    },
    mark(id) {
      for (const [jobId, { item: li }] of items) {
        const link = li.querySelector("a");
        if (jobId === id) link.setAttribute("aria-current", "true"); else link.removeAttribute("aria-current");
      }
    },
  };
}

// One job, as it goes: show(job, newEvents, checkpoints) after each round of polling updates its parts in place.
function jobView(id) {
  const titleId = "ft-job-title";
  const status = h("div", { class: "ft-job-status", role: "status" });
  const actions = h("div", { class: "row" });
  const error = h("div", {});  // the job's own failure
  const trouble = h("div", {});  // a failure to show the job: the server refused or could not be reached
  const facts = h("dl", { class: "ft-facts" });
  const progress = h("div", { class: "ft-progress" });
  const charts = h("div", { class: "ft-charts" });
  const log = h("ol", { class: "ft-log", tabindex: 0, "aria-label": "Messages" });
  const checkpoints = h("div", { class: "table-wrap" });
  const metrics = new Map();  // step -> its metrics; a resumed run's steps replace those it rewound
  let shownStatus = null;

  function showCharts(job) {
    if (!metrics.size) {
      return charts.replaceChildren(h("p", { class: "muted ft-placeholder" }, UNFINISHED.has(job.status)
        ? "The loss and accuracy curves are drawn here from the first training step on."
        : "No training step ran."));
    }
    const steps = [...metrics.keys()].sort((a, b) => a - b);
    const curves = (names) => names
      .map(([key, name]) => ({ name, points: steps.filter((s) => metrics.get(s)[key] != null)
                                                   .map((s) => [s, metrics.get(s)[key]]) }))
      .filter((series, i) => i === 0 || series.points.length);
    charts.replaceChildren(
      chart({ series: curves(LOSS), title: "Loss", xLabel: "Step", yLabel: "Loss" }),
      chart({ series: curves(ACCURACY), title: "Token accuracy", xLabel: "Step", yLabel: "Accuracy" }));
  }

  function showProgress(job) {
    const last = metrics.size ? Math.max(...metrics.keys()) : 0;
    const total = metrics.get(last)?.total_steps;
    if (!UNFINISHED.has(job.status) || !total) return progress.replaceChildren();
    progress.replaceChildren(h("progress", { max: total, value: last, "aria-label": "Training progress" }),
                             h("span", {}, `Step ${last} of ${total}`));
  }

  function showActions(job) {
    const cancel = async () => {
      if (!confirm(`Cancel ${job.id}? A cancelled job keeps nothing it has learned.`)) return;
      try {
        show(await api(`${JOBS}/${encodeURIComponent(job.id)}/cancel`, { method: "POST" }), [], null);
        toast(`Cancelled ${job.id}.`);
      } catch (failure) {
        toast(errorText(failure), "error", failure.status === 0 ? { retry: cancel } : {});
      }
    };
    actions.replaceChildren(...[
      UNFINISHED.has(job.status) && h("button", { type: "button", class: "danger", onclick: cancel }, "Cancel job"),
      job.status === "succeeded" && job.fine_tuned_model && h("a", {
        class: "button primary", "data-link": true, href: `/?model=${encodeURIComponent(job.fine_tuned_model)}`,
      }, "Chat with it"),
    ].filter(Boolean));
  }

  function showFacts(job) {
    const hp = job.hyperparameters || {};
    const code = (text) => text && h("code", {}, text);
    const rows = [  // the long ones (ids) last, each on a row of its own
      ["Base model", job.model], ["Trained tokens", job.trained_tokens != null && formatNumber(job.trained_tokens)],
      ["Epochs", hp.n_epochs], ["Batch size", hp.batch_size],
      ["Learning rate multiplier", hp.learning_rate_multiplier], ["Seed", job.seed],
      ["Created", formatDate(job.created_at)], ["Finished", job.finished_at && formatDate(job.finished_at)],
      ["Fine-tuned model", code(job.fine_tuned_model), "wide"], ["Training file", code(job.training_file), "wide"],
      ["Validation file", code(job.validation_file), "wide"],
    ];
    facts.replaceChildren(...rows.filter(([, value]) => value !== null && value !== undefined && value !== false)
      .map(([name, value, wide]) => h("div", { class: wide && "ft-wide" }, h("dt", {}, name), h("dd", {}, value))));
  }

  function show(job, events, points) {
    const changed = shownStatus !== job.status;
    shownStatus = job.status;
    trouble.replaceChildren();
    if (changed) {
      status.replaceChildren(statusBadge(job.status));
      showActions(job);
      error.replaceChildren(job.status === "failed" ? h("div", { class: "ft-error", role: "alert" },
        h("strong", {}, "The job failed: "), job.error?.message || "the server gave no reason.") : "");
    }
    showFacts(job);
    const steps = events.filter((e) => e.type === "metrics" && e.data);
    for (const event of steps) metrics.set(event.data.step, event.data);
    if (steps.length || changed) showCharts(job);
    showProgress(job);
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;  // following the log: keep following it
    log.append(...events.filter((e) => e.type === "message").map((e) => h("li", { class: `ft-${e.level}` },
      logTime(e.created_at), " ", e.message)));
    if (atEnd) log.scrollTop = log.scrollHeight;
    if (points) showCheckpoints(points, job);
  }

  function showCheckpoints(points, job) {
    checkpoints.replaceChildren(points.length ? h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Step"), h("th", {}, "Training loss"), h("th", {}, "Accuracy"),
                     h("th", {}, "Checkpoint"))),
      h("tbody", {}, points.map((c) => h("tr", {},
        h("td", {}, c.step_number), h("td", {}, formatNumber(c.metrics.train_loss, 4)),
        h("td", {}, formatNumber(c.metrics.train_mean_token_accuracy, 3)),
        h("td", {}, h("code", {}, c.fine_tuned_model_checkpoint))))))
      : h("p", { class: "muted" }, UNFINISHED.has(job.status) ? "None yet: one is saved at the end of each epoch."
                                                              : "None."));
  }

  return {
    element: h("section", { class: "card ft-card ft-job", "aria-labelledby": titleId },
      h("div", { class: "ft-job-head" }, h("h2", { id: titleId }, "Job ", h("code", {}, id)), status, actions),
      error, trouble, progress, facts, charts,
      h("h3", {}, "Messages"), log,
      h("h3", {}, "Checkpoints"), checkpoints),
    show,
    fail(failure) {
      trouble.replaceChildren(h("p", { class: "ft-error", role: "alert" }, errorText(failure)));
    },
  };
}

// The time of day in the log, the date too when hovered: a job's messages are minutes apart, not days.
function logTime(seconds) {
  const date = new Date(seconds * 1000);
  return h("time", { datetime: date.toISOString(), title: formatDate(seconds) },
           date.toLocaleTimeString(undefined, { timeStyle: "medium" }));
}

function placeholder() {
  return h("p", { class: "muted ft-placeholder ft-choose" },
           "Choose a job to follow its curves and messages, or start one.");
}
