"""Fine-tuning data: read a JSONL file of examples, check every line, and tokenize each example with a loss mask.

Formats, told apart by the keys of the file's first non-blank line (every other line must be in the same format):

    chat               {"messages": [{"role": "system" | "user" | "assistant", "content": "...", "weight": 0 | 1}]}
                       OpenAI's chat fine-tuning format, any number of turns. "weight" (assistant messages only)
                       and "name" are optional; "name" is accepted and not shown to the chat template.
    prompt_completion  {"prompt": "...", "completion": "..."}
                       -> user: prompt; assistant: completion
    alpaca             {"instruction": "...", "input": "...", "output": "..."}  ("input" optional, may be empty)
                       -> user: instruction, plus "\\n\\n" + input when input is not blank; assistant: output
    classification     {"text": "...", "label": "..."}  (a label may also be an integer; it becomes text)
                       -> gpts.evaluate.classification_messages(text, labels, instructions); assistant: label.
                       labels: the sorted distinct labels of the file unless given.

The checks are OpenAI's, under the names its cookbook ("Data preparation and analysis for chat model
fine-tuning") gives them (data_type, missing_messages_list, message_missing_key, message_unrecognized_key,
unrecognized_role, missing_content, example_missing_assistant_message), plus gpts's own (ERRORS) for what the
cookbook leaves out. Every line is checked, and all problems are reported together in one GptsError: each name
with its count and first line numbers. Warnings (fewer than 10 examples, examples cut to max_len, examples left
with nothing to train) go to the `report` callback as Message events.

Trained tokens (labels that are not IGNORE_INDEX): for each assistant message with weight 1 (the default), the
tokens the chat template writes for its content and the end of its turn, through the last end-of-turn/eos token
(Tokenizer.eos_ids) of the turn: "Hello!<|im_end|>" in ChatML, neither the "<|im_start|>assistant\\n" before it
nor the "\\n" after. Where a turn ends in no such token (ChatML on a GPT-2 vocabulary writes "<|im_end|>" as plain
text), the turn's text up to its trailing whitespace is trained and the tokenizer's eos token is inserted after
it, so the model still learns to stop. System and user messages, weight-0 assistant messages and everything
else the template writes are never trained.

How the turns are found, for any Jinja chat template: render the conversation up to each trained assistant
message with the generation prompt, then through that message; the assistant's text is the difference. The
longer render must start with the shorter, and the whole conversation with both (true of ChatML, Llama,
Gemma, Mistral, ...); a template that breaks this is a GptsError. The tokens are those of the whole rendered
conversation (as Tokenizer.encode_chat gives them), and a token is the assistant's when it starts inside the
assistant's text. labels are aligned with input_ids (Hugging Face's convention): the loss shifts them by one.
"""

from __future__ import annotations

import dataclasses
import json
import random
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from gpts.errors import GptsError, LinesError
from gpts.events import Message, Meter, Report, ignore
from gpts.fileio import JsonLine, read_jsonl
from gpts.task import ClassificationTask, classification_messages
from gpts.tokenizer import Tokenizer

IGNORE_INDEX = -100  # the label cross_entropy skips (its default ignore_index)
MIN_EXAMPLES = 10  # OpenAI refuses a file with fewer
SHOWN_LINES = 5  # line numbers listed per error or warning

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")

# The keys that identify each format, tried in this order on a line.
FORMATS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "alpaca": ("instruction", "output"),
    "classification": ("text", "label"),
}
EXAMPLE_LINES = {
    "chat": '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}',
    "prompt_completion": '{"prompt": "2+2=", "completion": "4"}',
    "alpaca": '{"instruction": "Translate to French.", "input": "cat", "output": "chat"}',
    "classification": '{"text": "What a great film!", "label": "positive"}',
}

# Every error a line can have: OpenAI's names (the cookbook's format checks) first, then gpts's own.
ERRORS: dict[str, str] = {
    "data_type": "the line is not a JSON object",
    "missing_messages_list": 'no "messages" list, or an empty one',
    "message_missing_key": 'a message without "role" or "content"',
    "message_unrecognized_key": f'a message key other than {", ".join(map(repr, MESSAGE_KEYS))}',
    "unrecognized_role": f'a role other than {", ".join(map(repr, ROLES))}',
    "missing_content": "a message whose content is empty or not text",
    "example_missing_assistant_message": "no assistant message",
    "invalid_weight": "a weight other than 0 or 1, or a weight on a message that is not the assistant's",
    "invalid_json": "the line is not valid JSON",
    "mixed_formats": "the line is in another format than the file's first line",
    "missing_field": "a required field is missing",
    "field_not_text": "a field that is not text",
    "empty_field": "a required field is empty",
    "unknown_label": "a label outside the label set",
    "chat_template": "the model's chat template cannot render the example",
}

AddProblem = Callable[[str, str], None]  # (error name, detail)


class FinetuneExample(NamedTuple):
    """One tokenized example; unpacks as (input_ids, labels)."""

    input_ids: np.ndarray  # int32 token ids
    labels: np.ndarray  # int32, aligned with input_ids: the id where trained, else IGNORE_INDEX

    @property
    def trained_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass
class FinetuneDataset:
    path: Path
    format: str  # a key of FORMATS
    examples: list[FinetuneExample]
    lines: list[int]  # the file's line number of each example
    labels: list[str] | None = None  # classification: the label set (the labels the model chooses from)
    instructions: str | None = None  # classification: the instructions given to classification_messages

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(e.trained_tokens for e in self.examples)

    @property
    def task(self) -> ClassificationTask | None:
        """What a classifier fine-tuned on this data records (gpts.evaluate.write_task writes it as task.json): the
        label set and the instructions. None for the other formats."""
        return None if self.labels is None else ClassificationTask(self.labels, self.instructions)

    def split(self, val_fraction: float, seed: int = 0) -> tuple[FinetuneDataset, FinetuneDataset]:
        """(train, validation): a `val_fraction` of the examples drawn at random with `seed` (at least one when
        the fraction is above zero), the same for the same file and seed. Both keep the file's order."""
        if not 0 <= val_fraction < 1:
            raise GptsError(f"A validation fraction of {val_fraction} is out of range.", "Use 0 <= fraction < 1.")
        n = len(self.examples)
        n_val = max(round(n * val_fraction), 1 if val_fraction > 0 else 0)
        if n_val >= n:
            raise GptsError(f"{self.path} has {n} example{'s' * (n != 1)}: too few to hold {n_val} out for "
                            "validation and train on the rest.",
                            "Add examples, lower the validation fraction, or pass a separate validation file.")
        val = set(random.Random(seed).sample(range(n), n_val))
        return self._subset([i for i in range(n) if i not in val]), self._subset(sorted(val))

    def _subset(self, indices: list[int]) -> FinetuneDataset:
        return dataclasses.replace(self, examples=[self.examples[i] for i in indices],
                                   lines=[self.lines[i] for i in indices])


# -- tokenization -------------------------------------------------------------------------------------------


def _render(tokenizer: Tokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template([{"role": m["role"], "content": m["content"]} for m in messages],
                                         add_generation_prompt=add_generation_prompt)


def _assistant_text(tokenizer: Tokenizer, messages: list[dict[str, Any]], i: int, text: str) -> tuple[int, int]:
    """Where in `text` (the whole conversation rendered) the template wrote assistant message i: (start, end)."""
    before = _render(tokenizer, messages[:i], add_generation_prompt=True)
    through = _render(tokenizer, messages[:i + 1], add_generation_prompt=False)
    if not (through.startswith(before) and text.startswith(through)):
        raise GptsError(f"The chat template renders the conversation differently from its beginnings (at message "
                        f"{i + 1}), so the assistant's tokens cannot be told apart.",
                        "Fine-tune a model whose chat template renders a conversation as the sum of its turns "
                        "(ChatML, Llama, Gemma, Mistral do), or reshape the examples (e.g. start with a user "
                        "message).")
    return len(before), len(through)


def tokenize_conversation(tokenizer: Tokenizer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one conversation; labels are IGNORE_INDEX except on the assistant turns that are
    trained (see the module docstring for exactly which tokens)."""
    text = _render(tokenizer, messages, add_generation_prompt=False)
    turns = [_assistant_text(tokenizer, messages, i, text) for i, m in enumerate(messages)
             if m["role"] == "assistant" and m.get("weight", 1) == 1]
    encoding = tokenizer.backend.encode(text, add_special_tokens=False)
    starts = [start for start, _ in encoding.offsets]
    stops, eos = tokenizer.eos_ids, tokenizer.eos_id
    # BOS as encode_chat adds it: where the tokenizer wants one and the template did not write it.
    add_bos = tokenizer.add_bos and not (tokenizer.bos_token and text.startswith(tokenizer.bos_token))
    ids = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
    labels = [IGNORE_INDEX] * len(ids)
    done = 0  # encoding.ids[:done] are in ids
    for start, end in turns:
        first, last = bisect_left(starts, start), bisect_left(starts, end)
        stop = next((j for j in reversed(range(first, last)) if encoding.ids[j] in stops), None)
        if stop is not None:
            cut, inserted = stop + 1, []
        else:  # no token ends the turn: train its text without the trailing whitespace, then eos
            cut = bisect_left(starts, start + len(text[start:end].rstrip()))
            inserted = [eos] if eos is not None else []
        ids += encoding.ids[done:cut] + inserted
        labels += [IGNORE_INDEX] * (first - done) + encoding.ids[first:cut] + inserted
        done = cut
    ids += encoding.ids[done:]
    labels += [IGNORE_INDEX] * (len(encoding.ids) - done)
    return ids, labels


# -- reading and checking -----------------------------------------------------------------------------------


@dataclass
class _Found:
    count: int
    detail: str  # the first occurrence's
    lines: list[int]  # the first SHOWN_LINES lines
    n_lines: int


class _Problems:
    """Errors found so far, by name: how many, on which lines, and what the first one was."""

    def __init__(self) -> None:
        self.found: dict[str, _Found] = {}
        self._last: dict[str, int] = {}

    def adder(self, line: int) -> AddProblem:
        def add(name: str, detail: str) -> None:
            found = self.found.setdefault(name, _Found(0, detail, [], 0))
            found.count += 1
            if self._last.get(name) != line:
                self._last[name] = line
                found.n_lines += 1
                if len(found.lines) < SHOWN_LINES:
                    found.lines.append(line)
        return add

    def raise_if_any(self, path: Path, fmt: str) -> None:
        if not self.found:
            return
        found = sorted(self.found.items(), key=lambda kv: list(ERRORS).index(kv[0]))
        rows = [f"  {name}: {f.count} ({_lines_text(f.lines, f.n_lines)}): {ERRORS[name]}; "
                f"e.g. line {f.lines[0]}: {f.detail}" for name, f in found]
        problems = [{"kind": name, "description": ERRORS[name], "count": f.count, "lines": f.lines,
                     "more_lines": f.n_lines - len(f.lines), "detail": f.detail} for name, f in found]
        total = sum(f.count for f in self.found.values())
        raise LinesError(f"{path} ({fmt} format, from its first line) has {total} error{'s' * (total != 1)}:\n"
                         + "\n".join(rows),
                         f"Fix those lines: each line must be one JSON object in the {fmt} format, like\n"
                         f"  {EXAMPLE_LINES[fmt]}", problems, EXAMPLE_LINES[fmt])


def _lines_text(lines: list[int], n_lines: int) -> str:
    more = f" and {n_lines - len(lines)} more" if n_lines > len(lines) else ""
    return f"line{'s' * (n_lines != 1)} {', '.join(map(str, lines))}{more}"


def _format_of(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    return next((name for name, keys in FORMATS.items() if all(k in row for k in keys)), None)


def _detect_format(path: Path) -> str:
    first = next(read_jsonl(path), None)
    if first is None:
        raise GptsError(f"{path} is empty: it holds no examples.",
                        f"Write one example a line, like\n  {EXAMPLE_LINES['chat']}")
    lineno, row = first.number, first.value
    formats = "\n".join(f"  {name}: {example}" for name, example in EXAMPLE_LINES.items())
    if first.error is not None:
        raise GptsError(f"{path}, line {lineno}: not valid JSON ({first.error}); fine-tuning data is JSONL.",
                        f"Write one JSON object a line (not one JSON array for the whole file), in one of these "
                        f"formats:\n{formats}")
    fmt = _format_of(row)
    if fmt is None:
        what = (f"a JSON {type(row).__name__}" if not isinstance(row, dict) else
                f"keys {', '.join(map(repr, row))}" if row else "an empty object")
        raise GptsError(f"{path}, line {lineno}: cannot tell the format of the data from it ({what}).",
                        f"Write each line in one of these formats:\n{formats}")
    return fmt


def _label(value: Any) -> str | None:
    """A label as text: a string, or an integer (not a bool) written out; None when it is neither."""
    if isinstance(value, str):
        return value
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _labels_in(path: Path) -> list[str]:
    """The sorted distinct labels of a classification file (lines in error are checked later)."""
    labels = {_label(line.value.get("label")) for line in read_jsonl(path) if isinstance(line.value, dict)}
    return sorted(label for label in labels if label)


def _message_problems(message: Any) -> Iterator[tuple[str, str]]:
    """OpenAI's checks of one message, as its cookbook makes them, plus the weight: (error name, detail)."""
    if not isinstance(message, dict):
        yield "message_missing_key", "is not a JSON object"
        return
    if "role" not in message or "content" not in message:
        yield "message_missing_key", f'has no "{"role" if "role" not in message else "content"}"'
    if unknown := [key for key in message if key not in MESSAGE_KEYS]:
        yield "message_unrecognized_key", f"has {', '.join(map(repr, unknown))}"
    role = message.get("role")
    if role not in ROLES:
        yield "unrecognized_role", f"has role {_short(role)}"
    content = message.get("content")
    if not content or not isinstance(content, str):
        yield "missing_content", "has empty content" if content == "" else f"has content {_short(content)}, not text"
    if "weight" in message:
        weight = message["weight"]
        if type(weight) is not int or weight not in (0, 1):
            yield "invalid_weight", f"has weight {_short(weight)}; it must be 0 or 1"
        elif role != "assistant":
            yield "invalid_weight", f"is a {role} message with a weight; only assistant messages have one"


def _chat_problems(row: dict[str, Any]) -> Iterator[tuple[str, str]]:
    messages = row.get("messages")
    if not messages or not isinstance(messages, list):
        yield "missing_messages_list", f'"messages" is {_short(messages)}, not a list of messages'
        return
    for k, message in enumerate(messages, 1):
        yield from ((name, f"message {k} {detail}") for name, detail in _message_problems(message))
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        yield "example_missing_assistant_message", "no message has the role 'assistant'"


def _field_problems(row: dict[str, Any], fmt: str) -> Iterator[tuple[str, str]]:
    """The checks of a prompt_completion / alpaca / classification line."""
    optional = ("input",) if fmt == "alpaca" else ()
    for key in FORMATS[fmt] + optional:
        if key not in row:
            if key not in optional:
                yield "missing_field", f'no "{key}"'
        elif _text(row, key) is None:
            yield "field_not_text", f'"{key}" is {_short(row[key])}, not text'
        elif not _text(row, key).strip() and key not in optional:
            yield "empty_field", f'"{key}" is empty'


def _text(row: dict[str, Any], key: str) -> str | None:
    value = row[key]
    if key == "label":
        return _label(value)
    return value if isinstance(value, str) else None


def _short(value: Any) -> str:
    """A value as JSON, cut short to quote in an error."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _messages(line: JsonLine, fmt: str, label_set: list[str] | None, instructions: str | None,
              add: AddProblem) -> list[dict[str, Any]] | None:
    """One line as the conversation to train on; None when it has errors (reported through `add`)."""
    if line.error is not None:
        add("invalid_json", line.error)
        return None
    row = line.value
    if not isinstance(row, dict):
        add("data_type", f"a JSON {type(row).__name__}")
        return None
    if not all(k in row for k in FORMATS[fmt]) and (other := _format_of(row)) is not None:
        add("mixed_formats", f"a {other} line in a {fmt} file")
        return None
    problems = list(_chat_problems(row) if fmt == "chat" else _field_problems(row, fmt))
    if fmt == "classification" and not problems and (label := _text(row, "label")) not in label_set:
        problems.append(("unknown_label", f"label {label!r} is not one of {', '.join(map(repr, label_set))}"))
    for name, detail in problems:
        add(name, detail)
    if problems:
        return None
    if fmt == "chat":
        return row["messages"]
    if fmt == "prompt_completion":
        return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    if fmt == "alpaca":
        extra = row.get("input", "")
        user = row["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return classification_messages(row["text"], label_set, instructions) + [
        {"role": "assistant", "content": _text(row, "label")}]


def _check_labels(labels: list[str]) -> list[str]:
    if not labels or not all(isinstance(x, str) and x.strip() for x in labels) or len(set(labels)) != len(labels):
        raise GptsError(f"Bad label set {labels!r}: labels must be distinct, non-empty texts, at least one.",
                        "Pass each label once, or leave the labels out to take them from the training file.")
    return list(labels)


def check_file(path: str | Path) -> tuple[str, int]:
    """The checks of `load_dataset` that need no model (all but the chat template's), for a file that arrives before
    its model is known, such as an upload to `gpts serve`: (its format, its number of examples), or one GptsError
    listing every problem with its line numbers."""
    path = Path(path)
    fmt = _detect_format(path)
    label_set = _labels_in(path) if fmt == "classification" else None
    problems = _Problems()
    examples = sum(_messages(line, fmt, label_set, None, problems.adder(line.number)) is not None
                   for line in read_jsonl(path))
    problems.raise_if_any(path, fmt)
    return fmt, examples


def load_dataset(path: str | Path, tokenizer: Tokenizer, max_len: int, labels: list[str] | None = None,
                 instructions: str | None = None, report: Report = ignore,
                 purpose: Literal["training", "validation"] = "training") -> FinetuneDataset:
    """Read, check and tokenize the fine-tuning file at `path` (any format of FORMATS), streaming it line by
    line. Errors: one GptsError listing all of them; warnings: Message events to `report`, with the progress of
    the reading. `labels` and `instructions` are for classification data: the label set (default: the labels in
    the file) and the instructions of the prompt. A validation file may be small."""
    path = Path(path)
    if not path.is_file():
        raise GptsError(f"No such file: {path}." if not path.exists() else f"{path} is not a file.",
                        "Pass a JSONL file of fine-tuning examples.")
    if max_len < 1:
        raise GptsError(f"max_len {max_len} is too small.", "Use the model's context length, or at least 1.")
    fmt = _detect_format(path)
    label_set = None
    if fmt == "classification":
        label_set = _check_labels(labels) if labels is not None else _labels_in(path)
    problems = _Problems()
    examples: list[FinetuneExample] = []
    lines: list[int] = []
    truncated: list[int] = []
    untrained: list[int] = []
    meter = Meter(report, f"Reading {path.name}", path.stat().st_size, "bytes")
    for line in read_jsonl(path, on_line=lambda raw: meter.advance(len(raw))):
        lineno = line.number
        add = problems.adder(lineno)
        messages = _messages(line, fmt, label_set, instructions, add)
        if messages is None:
            continue
        try:
            ids, targets = tokenize_conversation(tokenizer, messages)
        except GptsError as e:
            add("chat_template", e.problem)
            continue
        if len(ids) > max_len:
            truncated.append(lineno)
            ids, targets = ids[:max_len], targets[:max_len]
        example = FinetuneExample(np.array(ids, np.int32), np.array(targets, np.int32))
        if example.trained_tokens:
            examples.append(example)
            lines.append(lineno)
        else:
            untrained.append(lineno)
    meter.done()
    problems.raise_if_any(path, fmt)
    if not examples:
        raise GptsError(f"{path}: no example has a token to train on (every assistant message has weight 0, or "
                        f"is cut off by max_len={max_len}).",
                        "Give assistant messages weight 1 (the default), or shorten the examples.")
    warnings = []
    if purpose == "training" and len(examples) < MIN_EXAMPLES:
        warnings.append(f"{path} has only {len(examples)} example{'s' * (len(examples) != 1)} to train on; OpenAI "
                        f"requires at least {MIN_EXAMPLES}, and a model learns little from so few. Add examples.")
    if truncated:
        warnings.append(f"{path}: {len(truncated)} example{'s are' if len(truncated) != 1 else ' is'} longer than "
                        f"{max_len} tokens and will be cut to the first {max_len} "
                        f"({_lines_text(truncated[:SHOWN_LINES], len(truncated))}).")
    if untrained:
        warnings.append(f"{path}: {len(untrained)} example{'s' * (len(untrained) != 1)} with nothing left to train on "
                        f"(every assistant message has weight 0, or is cut off by max_len) "
                        f"{'are' if len(untrained) != 1 else 'is'} left out "
                        f"({_lines_text(untrained[:SHOWN_LINES], len(untrained))}).")
    if label_set is not None and len(label_set) == 1:
        warnings.append(f"{path} has a single label, {label_set[0]!r}: the model can only learn to always answer it.")
    for warning in warnings:
        report(Message(warning, level="warning"))
    return FinetuneDataset(path, fmt, examples, lines, label_set, instructions if fmt == "classification" else None)
