// The chat view: a transcript and a message box, used by the chat page and by the builder's live preview. The caller
// says where answers come from (`stream`: messages -> the chunks of a streamed chat completion) and what to do with
// each finished one (`onTurn`: the chat page stores it); the view does the rest: streaming Markdown, Stop,
// Regenerate, Edit, starters, citations, usage and speed, errors with Retry.
//
//   const view = chatView({stream, onTurn, starters, label});  root.append(view.element);
//   view.setMessages([{role, content, citations?, usage?}]);  view.setStarters([...]);  view.abort();  view.focus();
//
// A turn is a question and its answer. onTurn gets {user, assistant, citations, usage, timings, finish_reason, keep}:
// `keep` is the number of turns before it that stay (fewer than the transcript had when an answer is regenerated or
// a question edited). A stopped answer is a turn too (finish_reason "stopped"), unless nothing of it came yet: then
// the question goes back to the box as if it had not been sent. setMessages drops an answer in progress.
//
// A stopped stream ends without the server's usage chunk: its usage and speed are then the page's own count, a
// token a chunk (which is how the server streams), timed from the first one.
import { errorText } from "./api.js";
import { FENCE, renderMarkdown } from "./markdown.js";
import { h, plural } from "./ui.js";

let views = 0;  // each view's own ids

export function chatView({ stream, onTurn = async () => {}, starters = [], label = "Message" }) {
  let messages = [];      // the conversation so far: {role, content, citations?, usage?, timings?}
  let pending = null;     // the turn being answered: {keep, user, assistant, citations, usage, timings, error}
  let controller = null;  // aborts the answer being streamed
  let editing = null;     // the index in `messages` of the question being edited

  const log = h("div", { class: "transcript", role: "log", "aria-label": "Conversation" });
  const startersBox = h("div", { class: "starters", role: "group", "aria-label": "Conversation starters" });
  const keys = h("small", { class: "composer-keys muted", id: `chatview-keys-${++views}` },
                 "Enter sends, Shift+Enter adds a line, Escape stops an answer");
  const input = h("textarea", { class: "composer-input", rows: 1, "aria-label": label, enterkeyhint: "send",
                                placeholder: "Ask anything", "aria-describedby": keys.id });
  const sendButton = h("button", { type: "submit", class: "primary" }, "Send");
  const stopButton = h("button", { type: "button", hidden: true, onclick: () => abort() }, "Stop");
  const form = h("form", { class: "composer" }, h("div", { class: "composer-row" }, input, sendButton, stopButton), keys);
  const element = h("section", { class: "chatview" }, log, startersBox, form);

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || controller) return;
    input.value = "";
    ask(text, keptTurns());
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  element.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && controller) {
      event.preventDefault();
      abort();
    }
  });

  // The turns an answer now builds on: those shown, a failed question's excepted.
  const keptTurns = () => (pending ? pending.keep : messages.length / 2);

  async function ask(user, keep) {
    editing = null;
    pending = { keep, user, assistant: "", citations: [], usage: null, timings: null, error: null };
    const turn = pending;
    controller = new AbortController();
    const history = [...messages.slice(0, 2 * keep), { role: "user", content: user }]
      .map(({ role, content }) => ({ role, content }));
    let finishReason = null;
    setBusy(true);
    draw({ scroll: true });
    const show = streamInto(log.querySelector(".streaming .content"));
    let frame = 0;
    const redraw = () => {
      frame = 0;
      follow(() => show(turn.assistant));
    };
    let tokens = 0, first = 0, last = 0;  // the chunks with content, and when the first and the last came
    try {
      for await (const chunk of stream(history, controller.signal)) {
        const choice = chunk.choices?.[0];
        if (choice) {
          if (choice.delta?.content) {
            turn.assistant += choice.delta.content;
            last = performance.now();
            first ||= last;
            tokens++;
            frame ||= requestAnimationFrame(redraw);
          }
          if (choice.delta?.annotations) turn.citations = choice.delta.annotations.map(citation);
          finishReason = choice.finish_reason || finishReason;
        }
        if (chunk.usage) turn.usage = chunk.usage;
        if (chunk.timings) turn.timings = chunk.timings;
      }
    } catch (error) {
      if (error.name !== "AbortError") turn.error = error;
      else finishReason = "stopped";
    }
    cancelAnimationFrame(frame);  // the answer is drawn whole below, once
    if (finishReason === "stopped" && !turn.usage) {
      turn.usage = { completion_tokens: tokens };
      if (tokens > 1) turn.timings = { predicted_n: tokens - 1, predicted_ms: last - first };
    }
    if (pending !== turn) return;  // the view was given another conversation meanwhile
    controller = null;
    setBusy(false);
    if (turn.error) return follow(draw);
    pending = null;
    if (!turn.assistant) {  // stopped before the first token: nothing was said, nothing is kept
      if (keep === messages.length / 2) input.value ||= user;
      draw();
      return input.focus();
    }
    const { assistant, citations, usage, timings } = turn;
    messages = [...messages.slice(0, 2 * keep), { role: "user", content: user },
                { role: "assistant", content: assistant, citations, usage, timings, finish_reason: finishReason }];
    follow(draw);
    input.focus({ preventScroll: true });
    await onTurn({ user, assistant, citations, usage, timings, finish_reason: finishReason, keep });
  }

  function abort() {
    controller?.abort();
  }

  function setBusy(busy) {
    log.setAttribute("aria-busy", String(busy));  // a screen reader reads the answer once, when it is whole
    sendButton.hidden = busy;
    stopButton.hidden = !busy;
    element.classList.toggle("busy", busy);
  }

  // Keep the end of a growing answer in sight, unless the reader has scrolled away to read something else. The
  // transcript may scroll in the window (the chat page) or in itself (the builder's preview).
  function follow(update) {
    const bottom = log.lastElementChild?.getBoundingClientRect().bottom;
    const seen = Math.min(window.innerHeight, log.getBoundingClientRect().bottom);
    const following = bottom === undefined || (bottom >= 0 && bottom <= seen + 64);
    update();
    if (following) scrollToEnd();
  }

  function scrollToEnd() {
    log.lastElementChild?.scrollIntoView({ block: "end" });
  }

  // -- drawing --------------------------------------------------------------------------------------------------------

  function draw({ scroll = false } = {}) {
    const shown = pending ? messages.slice(0, 2 * pending.keep) : messages;
    const turns = shown.length / 2;
    const articles = shown.map((message, i) => (message.role === "user"
      ? question(message.content, i)
      : answerArticle(message, { last: !pending && i === shown.length - 1, regenerate: () => ask(shown[i - 1].content, turns - 1) })));
    if (pending) {
      articles.push(question(pending.user, null), answerArticle({ ...pending, content: pending.assistant }, {
        streaming: !pending.error, error: pending.error, retry: () => ask(pending.user, pending.keep),
      }));
    }
    log.replaceChildren(...articles);
    showStarters();
    if (scroll) scrollToEnd();
  }

  function showStarters() {  // while the conversation is empty
    startersBox.hidden = log.childElementCount > 0 || startersBox.childElementCount === 0;
  }

  function question(text, index) {
    if (index !== null && index === editing) return editor(text, index);
    const edit = index !== null && !controller && h("button", {
      type: "button", class: "quiet small", title: "Edit this message and send it again",
      onclick: () => { editing = index; draw(); },
    }, "Edit");
    return h("article", { class: "message user" }, h("div", { class: "bubble" }, text),
      edit && h("div", { class: "actions" }, edit));
  }

  function editor(text, index) {
    const box = h("textarea", { "aria-label": "Edit message", rows: 3, value: text });
    const cancel = () => { editing = null; draw(); };
    const save = () => { if (box.value.trim()) ask(box.value.trim(), index / 2); };
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); save(); }
      if (event.key === "Escape") { event.stopPropagation(); cancel(); }
    });
    queueMicrotask(() => { box.focus(); box.setSelectionRange(box.value.length, box.value.length); });
    return h("article", { class: "message user editing" }, box, h("div", { class: "row end" },
      h("button", { type: "button", class: "quiet", onclick: cancel }, "Cancel"),
      h("button", { type: "button", class: "primary", onclick: save }, "Save and send")));
  }

  function answerArticle(message, { last = false, streaming = false, error = null, retry, regenerate } = {}) {
    const content = h("div", { class: "content markdown" }, renderMarkdown(message.content || ""));
    const article = h("article", { class: `message assistant${streaming ? " streaming" : ""}` }, content);
    if (streaming && !message.content) content.append(h("span", { class: "typing", "aria-hidden": "true" }));
    if (message.citations?.length) article.append(sources(message.citations));
    const details = meta(message);
    if (details) article.append(h("p", { class: "meta muted" }, details));
    if (error) {
      article.append(h("div", { class: "chat-error", role: "alert" }, h("span", {}, errorText(error)),
        h("button", { type: "button", onclick: retry }, "Retry")));
    }
    if (last) {
      article.append(h("div", { class: "actions" },
        h("button", { type: "button", class: "quiet small", onclick: regenerate }, "Regenerate")));
    }
    return article;
  }

  function setStarters(list) {
    startersBox.replaceChildren(...(list || []).map((text) => h("button", {
      type: "button", class: "starter", onclick: () => !controller && ask(text, keptTurns()),
    }, text)));
    showStarters();
  }

  setStarters(starters);
  setBusy(false);

  return {
    element,
    setMessages(list) {  // an answer in progress goes with the conversation it belonged to
      abort();
      controller = pending = editing = null;
      messages = (list || []).map((m) => ({ ...m, citations: (m.citations || []).map(citation) }));
      setBusy(false);
      draw({ scroll: true });
    },
    setStarters,
    abort,
    focus: () => input.focus(),
  };
}

// Draws a growing Markdown text into `box`, frame by frame. The finished blocks stay as drawn (a code block's Copy
// keeps working), and only the text after them is rendered again: a block ends at a blank line outside a code fence,
// where Markdown starts afresh, so the blocks before it render the same on their own.

function streamInto(box) {
  let settled = 0;   // the length of the text drawn for good
  let scanned = 0;   // where the line not yet looked at starts
  let fence = null;  // the marker of the code fence open at `scanned` (as markdown.js reads fences)
  let tail = [...box.childNodes];  // the nodes drawn for the text after `settled` (at first: the typing dots)
  return (text) => {
    let end, blank = settled;
    while ((end = text.indexOf("\n", scanned)) >= 0) {  // whole lines only: the last may still grow
      const line = text.slice(scanned, end);
      if (fence) {
        if (line.trim().startsWith(fence) && FENCE.test(line)) fence = null;
      } else if (FENCE.test(line)) {
        fence = FENCE.exec(line)[1];
      } else if (!line.trim()) {
        blank = end + 1;
      }
      scanned = end + 1;
    }
    for (const node of tail) node.remove();
    if (blank > settled) {
      box.append(renderMarkdown(text.slice(settled, blank)));
      settled = blank;
    }
    const rest = renderMarkdown(text.slice(settled));
    tail = [...rest.childNodes];
    box.append(rest);
  };
}

// A citation as the store keeps it ({file, chunk, pages|lines, quote}), from a stream's annotation
// ({type: "file_citation", file_citation: {filename, ...}}) or from a stored conversation.
function citation(item) {
  const { filename, file, ...place } = item.file_citation || item;
  return { file: file ?? filename, ...place };
}

// "guide.md, lines 3-9", "policies.pdf, page 2": as the CLI names a place.
function where({ file, pages, lines }) {
  const [span, [first, last]] = pages ? ["page", pages] : lines ? ["line", lines] : [null, []];
  if (!span) return file;
  return first === last ? `${file}, ${span} ${first}` : `${file}, ${span}s ${first}-${last}`;
}

function sources(citations) {
  const list = h("ul", { class: "citations" });
  for (const c of citations) {
    const quote = h("blockquote", { class: "quote markdown", hidden: true }, renderMarkdown(c.quote));
    const toggle = h("button", { type: "button", class: "citation", "aria-expanded": "false" }, where(c));
    toggle.addEventListener("click", () => {
      quote.hidden = !quote.hidden;
      toggle.setAttribute("aria-expanded", String(!quote.hidden));
    });
    list.append(h("li", {}, toggle, quote));
  }
  return h("div", { class: "sources" }, h("span", { class: "muted" }, "Sources"), list);
}

// "401 prompt + 60 generated tokens (400 cached) · 13.6 tokens/s", "12 generated tokens · 14.0 tokens/s · stopped":
// what of it is known.
function meta({ usage, timings, finish_reason }) {
  const parts = [];
  if (usage?.prompt_tokens !== undefined) {
    const cached = usage.prompt_tokens_details?.cached_tokens;
    parts.push(`${usage.prompt_tokens} prompt + ${plural(usage.completion_tokens, "generated token")}` +
               (cached ? ` (${cached} cached)` : ""));
  } else if (usage?.completion_tokens !== undefined) {
    parts.push(plural(usage.completion_tokens, "generated token"));
  }
  if (timings?.predicted_ms > 0) parts.push(`${(timings.predicted_n / timings.predicted_ms * 1000).toFixed(1)} tokens/s`);
  if (finish_reason === "stopped") parts.push("stopped");
  else if (finish_reason === "length") parts.push("cut at the token limit");
  return parts.join(" · ");
}
