// Markdown to DOM nodes, for model answers: paragraphs, headings, lists, quotes, fenced code (with a copy button),
// inline code, bold, italics and links. It builds nodes rather than HTML, so an answer cannot inject markup, and it
// takes half-written text (a stream): an unclosed code fence is code up to the end.
import { h } from "./ui.js";

export const FENCE = /^\s*(```|~~~)\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*(\d+)[.)]\s+(.*)$/;
const QUOTE = /^\s*>\s?(.*)$/;
const RULE = /^\s*([-*_])(\s*\1){2,}\s*$/;
const INLINE = /(`+)([\s\S]*?)\1|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|\b_([^_]+)_\b|\[([^\]]+)\]\(([^)\s]+)\)/g;

export function renderMarkdown(text) {
  const out = document.createDocumentFragment();
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      const body = [];
      for (i++; i < lines.length && !(lines[i].trim().startsWith(m[1]) && FENCE.test(lines[i])); i++) body.push(lines[i]);
      i++;
      out.append(codeBlock(body.join("\n"), m[2]));
    } else if ((m = HEADING.exec(line))) {
      out.append(h(`h${Math.min(m[1].length + 2, 6)}`, {}, inline(m[2])));
      i++;
    } else if (RULE.test(line)) {
      out.append(h("hr"));
      i++;
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const numbered = !BULLET.test(line);
      const pattern = numbered ? NUMBERED : BULLET;
      const list = h(numbered ? "ol" : "ul", numbered ? { start: NUMBERED.exec(line)[1] } : {});
      while (i < lines.length && pattern.test(lines[i])) {
        const match = pattern.exec(lines[i]);
        list.append(h("li", {}, inline(numbered ? match[2] : match[1])));
        i++;
      }
      out.append(list);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && QUOTE.test(lines[i]); i++) quoted.push(QUOTE.exec(lines[i])[1]);
      out.append(h("blockquote", {}, renderMarkdown(quoted.join("\n"))));
    } else if (!line.trim()) {
      i++;
    } else {
      const paragraph = [];
      for (; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) paragraph.push(lines[i]);
      const p = h("p");
      paragraph.forEach((l, k) => { if (k) p.append(h("br")); p.append(inline(l)); });
      out.append(p);
    }
  }
  return out;
}

function startsBlock(line) {
  return [FENCE, HEADING, BULLET, NUMBERED, QUOTE, RULE].some((pattern) => pattern.test(line));
}

function inline(text) {
  const out = document.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    out.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1]) out.append(h("code", {}, m[2]));
    else if (m[3] || m[4]) out.append(h("strong", {}, inline(m[3] || m[4])));
    else if (m[5] || m[6]) out.append(h("em", {}, inline(m[5] || m[6])));
    else out.append(safeLink(m[7], m[8]));
  }
  out.append(text.slice(last));
  return out;
}

function safeLink(label, href) {
  // Only web and mail links: a model's "javascript:" link stays text.
  if (!/^(https?:|mailto:)/i.test(href)) return `[${label}](${href})`;
  return h("a", { href, target: "_blank", rel: "noopener noreferrer" }, inline(label));
}

function codeBlock(code, language) {
  const copy = h("button", { type: "button", class: "copy quiet", "aria-label": "Copy code" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(code);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Select and copy";  // the clipboard needs a secure context (https or localhost)
    }
    setTimeout(() => (copy.textContent = "Copy"), 1500);
  });
  return h("div", { class: "code" },
    h("div", { class: "code-bar" }, h("span", { class: "muted" }, language || "code"), copy),
    h("pre", {}, h("code", language ? { "data-language": language } : {}, code)));
}
