"""A custom GPT answering: the one place where a GPT and a conversation become the model's messages.

    instructions (template variables filled) + the knowledge passages found for the question
    example conversations (few-shot)
    the conversation so far, oldest turns dropped whole when it outgrows the context
    the user's message

`gpts run`, `gpts eval --model SLUG` and the server all build prompts here. Retrieval runs on the store's index
(gpts.store.retrieval); the reply comes back with citations: the passages it draws on, and the sentence of each
that it matches best.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gpts.errors import ContextTooLong, GptsError
from gpts.spec import EVALUATION_KINDS, GptSpec, evaluation_kind, render_instructions
from gpts.store.catalogue import Gpt
from gpts.store.fts import query_terms
from gpts.store.retrieval import Passage, place, where

DEFAULT_REPLY_TOKENS = 256  # room kept for the reply when neither the request nor the spec says how long it may be
FOLLOW_UP_TERMS = 4  # a question with fewer words of its own ("and in June?") is searched with the one before it
CITE_OVERLAP = 0.3  # the share of a reply's words a passage must hold to be cited
QUOTE_CHARS = 300

KNOWLEDGE_HEADER = ("Answer from these excerpts of your knowledge files when they hold the answer, and name the "
                    "file you used. If they do not hold it, say that you do not know.")

Messages = list[dict[str, str]]


@dataclass
class Prompt:
    """The messages a model reads for one turn, and what had to be left out to fit its context."""

    messages: Messages
    passages: list[Passage]  # the knowledge in the prompt, best first
    tokens: int
    dropped_turns: int = 0  # the oldest user-and-reply pairs of the conversation that did not fit
    dropped_passages: int = 0


def system_message(spec: GptSpec, passages: Sequence[Passage], now: datetime | None = None) -> str:
    text = render_instructions(spec.instructions, spec.name, now).strip()
    if passages:
        excerpts = "\n\n".join(f"[{i}] {p.where()}\n{p.text.strip()}" for i, p in enumerate(passages, 1))
        text = f"{text}\n\n{KNOWLEDGE_HEADER}\n\n{excerpts}".strip()
    return text


def build_messages(spec: GptSpec, history: Messages, message: str, passages: Sequence[Passage],
                   now: datetime | None = None) -> Messages:
    system = system_message(spec, passages, now)
    examples = [{"role": m.role, "content": m.content} for conversation in spec.examples for m in conversation]
    return [*([{"role": "system", "content": system}] if system else []), *examples, *history,
            {"role": "user", "content": message}]


def fit_prompt(spec: GptSpec, history: Messages, message: str, passages: Sequence[Passage],
               count_tokens: Callable[[Messages], int], budget: int, now: datetime | None = None) -> Prompt:
    """The fullest prompt within `budget` tokens. What goes first: the oldest turns of the conversation (whole: a
    question never loses its answer), then the weakest passages. The instructions, the examples and the message
    itself always stay; when they alone do not fit, that is an error."""
    if not message.strip():
        raise GptsError("The message is blank.", "Type something to ask.")
    turns = [history[i:i + 2] for i in range(0, len(history), 2)]
    passages = list(passages)
    dropped_turns = dropped_passages = 0
    while True:
        messages = build_messages(spec, [m for turn in turns for m in turn], message, passages, now)
        tokens = count_tokens(messages)
        if tokens <= budget:
            return Prompt(messages, passages, tokens, dropped_turns, dropped_passages)
        if turns:
            turns.pop(0)
            dropped_turns += 1
        elif passages:
            passages.pop()
            dropped_passages += 1
        else:
            raise ContextTooLong(f"The instructions, examples and message take {tokens:,} tokens, more than the "
                            f"{budget:,} the model's context leaves beside the reply.",
                            "Shorten the instructions, the examples or the message, or ask for a shorter reply "
                            "(--max-new-tokens).")


def search_query(history: Messages, message: str) -> str:
    """What to look up in the knowledge: the message, and the question before it when the message is too short to
    stand alone ("what about in June?")."""
    if len(query_terms(message)) >= FOLLOW_UP_TERMS:
        return message
    previous = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
    return f"{previous}\n{message}".strip()


# -- citations ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Citation:
    file: str
    chunk: int
    pages: tuple[int, int] | None
    lines: tuple[int, int] | None
    quote: str

    def where(self) -> str:
        return where(self.file, self.pages, self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {**place(self.file, self.chunk, self.pages, self.lines), "quote": self.quote}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")  # "3.14" and "10:30" are no sentence ends


def sentences(text: str) -> list[str]:
    """The sentences of a passage; a line break inside a paragraph is a space (text wraps), a blank line ends one."""
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [s.strip() for p in paragraphs for s in _SENTENCE_END.split(p) if s.strip()]


def _overlap(terms: set[str], text: str) -> float:
    return len(terms & set(query_terms(text))) / len(terms) if terms else 0.0


def cite(reply: str, passages: Sequence[Passage]) -> list[Citation]:
    """The passages the reply draws on (those holding a good share of its words), each with its sentence nearest
    the reply as the quote; the closest first."""
    terms = set(query_terms(reply))
    scored = sorted(((_overlap(terms, p.text), i) for i, p in enumerate(passages)), reverse=True)
    citations = []
    for share, i in scored:
        if share < CITE_OVERLAP:
            break
        p = passages[i]
        quote = max(sentences(p.text) or [p.text.strip()], key=lambda s: _overlap(terms, s))
        citations.append(Citation(p.file, p.chunk, p.pages, p.lines, quote[:QUOTE_CHARS]))
    return citations


# -- answering ---------------------------------------------------------------------------------------------------


@dataclass
class Reply:
    text: str
    citations: list[Citation]
    usage: dict[str, int]  # prompt_tokens, completion_tokens
    prompt: Prompt
    timings: dict[str, float] = field(default_factory=dict)  # retrieval_ms, prompt_ms (building), generation_ms

    def to_dict(self) -> dict[str, Any]:
        """What `gpts run --json` prints after the GPT and conversation (and the server will return)."""
        return {"reply": self.text, "citations": [c.to_dict() for c in self.citations], "usage": self.usage,
                "dropped_turns": self.prompt.dropped_turns}


class ReplyStream:
    """Iterate for the reply's text as it is generated; `reply` holds the whole Reply afterwards."""

    def __init__(self, events: Any, prompt: Prompt, timings: dict[str, float]):
        self._events, self.prompt, self._timings = events, prompt, timings
        self._reply: Reply | None = None

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        for event in self._events:
            if event.text:
                yield event.text
        completion = self._events.completions[0]
        self._timings["generation_ms"] = (time.perf_counter() - start) * 1000
        self._reply = Reply(completion.text, cite(completion.text, self.prompt.passages),
                            {"prompt_tokens": completion.prompt_tokens,
                             "completion_tokens": completion.timings.predicted_n}, self.prompt, self._timings)

    @property
    def reply(self) -> Reply:
        if self._reply is None:
            for _ in self:
                pass
        return self._reply


class Assistant:
    """A GPT version with its model loaded, ready to answer."""

    def __init__(self, gpt: Gpt, model: Any, conn: Any = None):
        from gpts.store.db import connect

        self.gpt, self.model = gpt, model
        self.conn = conn or connect()

    @classmethod
    def load(cls, slug: str, version: int | None = None, dtype: str = "float32") -> Assistant:
        from gpts.api import load
        from gpts.store.catalogue import get_gpt
        from gpts.store.db import connect

        conn = connect()
        gpt = get_gpt(slug, version, conn=conn)
        return cls(gpt, load(gpt.spec.model, dtype), conn)

    @property
    def spec(self) -> GptSpec:
        return self.gpt.spec

    def options(self, sampling: dict[str, Any]) -> dict[str, Any]:
        """Generation settings: the model's defaults, then the spec's, then the request's."""
        return {**self.spec.generation.options(), **{k: v for k, v in sampling.items() if v is not None}}

    def passages(self, history: Messages, message: str) -> list[Passage]:
        if not self.gpt.knowledge:
            return []
        from gpts.store.retrieval import retrieve

        return retrieve(self.conn, self.gpt.id, self.gpt.version, search_query(history, message),
                        self.spec.retrieval.top_k)

    def prompt(self, history: Messages, message: str, sampling: dict[str, Any] | None = None,
               timings: dict[str, float] | None = None) -> Prompt:
        timings = {} if timings is None else timings
        start = time.perf_counter()
        passages = self.passages(history, message)
        timings["retrieval_ms"] = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        options = self.options(sampling or {})
        reply_tokens = options.get("max_new_tokens") or DEFAULT_REPLY_TOKENS
        context = self.model.config.context_length
        if reply_tokens >= context:
            raise GptsError(f"A reply of up to {reply_tokens:,} tokens leaves no room for a prompt in the model's "
                            f"{context:,}-token context.", f"Set max_tokens (or --max-new-tokens) below {context:,}.")
        budget = context - reply_tokens
        prompt = fit_prompt(self.spec, history, message, passages, lambda m: len(self.model.chat_prompt(m)), budget)
        timings["prompt_ms"] = (time.perf_counter() - start) * 1000
        return prompt

    def conversation(self, message: str) -> Messages:
        """The messages the model reads when `message` opens a conversation: what evaluating a GPT scores."""
        return self.prompt([], message).messages

    def stream(self, history: Messages, message: str, **sampling: Any) -> ReplyStream:
        timings: dict[str, float] = {}
        prompt = self.prompt(history, message, sampling, timings)
        return ReplyStream(self.model.chat_stream(prompt.messages, **self.options(sampling)), prompt, timings)

    def answer(self, history: Messages, message: str, **sampling: Any) -> Reply:
        return self.stream(history, message, **sampling).reply


# -- a GPT wherever a model goes, and measured ---------------------------------------------------------------------

GPT_PREFIX = "gpt:"


def gpt_slug(ref: str) -> str | None:
    """The custom GPT a model reference names: "gpt:SLUG", or the slug of a GPT in the store that is no model's
    name; None when `ref` names a model."""
    from gpts.refs import resolve
    from gpts.store.db import connect

    if ref.startswith(GPT_PREFIX):
        return ref.removeprefix(GPT_PREFIX)
    try:
        resolve(ref)
        return None
    except GptsError:
        if connect().execute("SELECT 1 FROM gpts WHERE slug = ?", (ref,)).fetchone():
            return ref
        raise


def evaluate_gpt(assistant: Assistant, path: Any | None = None, report: Any = None) -> dict[str, Any]:
    """Score a GPT on an evaluation set (its own, by default) through its prompt builder: {"kind", "metric",
    "score", "n", "details"}. The caller records it in the store when it is the GPT's own."""
    from gpts import evaluate
    from gpts.events import ignore
    from gpts.store.catalogue import file_bytes

    report = report or ignore
    if path is None:
        if assistant.gpt.file("evaluation") is None:
            raise GptsError(f"{assistant.gpt.slug} has no evaluation set.",
                            "Add one (evaluation: FILE in its spec, then gpts edit --spec), or pass a file.")
        path = file_bytes(assistant.gpt, "evaluation")
    kind = evaluation_kind(path)
    metric = EVALUATION_KINDS[kind][1]
    if kind == "classify":
        result = evaluate.classify(assistant.model, path, report=report, conversation=assistant.conversation)
        details = {k: result.metrics[k] for k in ("n", "accuracy", "macro")}
        score, n = result.metrics["accuracy"], result.metrics["n"]
    elif kind == "choice":
        result = evaluate.choice(assistant.model, path, report=report, conversation=assistant.conversation)
        details, score, n = {"acc": result.acc, "acc_norm": result.acc_norm}, result.acc, result.n
    else:
        max_tokens = assistant.options({}).get("max_new_tokens") or evaluate.GENERATE_MAX_NEW_TOKENS
        result = evaluate.generate_eval(assistant.model, path, max_tokens, report=report,
                                        conversation=assistant.conversation)
        details = {"exact_match": result.exact_match, "contains": result.contains}
        score, n = result.contains, result.n
    return {"kind": kind, "metric": metric, "score": score, "n": n, "details": details}
