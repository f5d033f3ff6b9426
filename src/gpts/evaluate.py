"""Evaluation: perplexity, classification, multiple choice and generation, on any loaded model.

- `perplexity`: Hugging Face's sliding-window method ("Perplexity of fixed-length models"): windows of `context`
  tokens moving by `stride`, each scoring only the tokens the previous window did not score.
- `classify`: labeled JSONL ({"text", "label"}); the prompt is `classification_messages` (fine-tuning trains on
  the same one), the prediction the label whose reply is most likely (or a greedy reply matched to a label).
- `choice`: multiple choice JSONL ({"context", "choices", "answer"}), scored as lm-evaluation-harness scores
  HellaSwag: `acc` (highest log-likelihood) and `acc_norm` (highest log-likelihood per character).
- `generate_eval`: prompt/answer JSONL, greedy generation, exact-match and contains scores.

One scoring primitive serves the first three: `score_continuations` runs a prefix once, then all its
continuations on top of its KV cache, many prefixes per batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from gpts.engine import Engine
from gpts.errors import GptsError
from gpts.events import Meter, Report, ignore
from gpts.fileio import atomic_path, read_jsonl
from gpts.task import classification_messages, read_task

if TYPE_CHECKING:
    from gpts.api import LoadedModel
    from gpts.generate import Completion
    from gpts.model import GPT
    from gpts.tokenizer import Tokenizer

# Tokens (padded batch rows x length) one forward pass may take, and float logits one pass may return:
# together they bound memory whatever the window, prompt or continuation lengths.
BATCH_TOKENS = 8192
LOGITS_BUDGET = 1 << 25  # 128 MB of float32
GENERATE_BATCH = 16
GENERATE_MAX_NEW_TOKENS = 64
# A greedy classification reply may say a little more than the label ("Label: positive").
LABEL_SLACK_TOKENS = 16

Fields = Mapping[str, type | tuple[type, ...]]
Examples = str | Path | Sequence[Mapping[str, Any]]
# How an example's text becomes the conversation the model answers, when something other than the evaluation's own
# prompt builds it: a custom GPT's instructions, examples and knowledge (gpts.assistant.Assistant.conversation).
Conversation = Callable[[str], list[dict[str, str]]]


# -- input ------------------------------------------------------------------------------------------------------


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", float: "a number", list: "a list", dict: "an object",
             bool: "true/false"}
    return " or ".join(names.get(t, t.__name__) for t in (types if isinstance(types, tuple) else (types,)))


def _check_fields(row: Any, required: Fields, where: str) -> None:
    like = "{" + ", ".join(f'"{name}": ...' for name in required) + "}"
    if not isinstance(row, dict):
        raise GptsError(f"{where}: expected a JSON object, found {type(row).__name__}.",
                        f"Write each example as {like}.")
    for name, types in required.items():
        if name not in row:
            raise GptsError(f"{where}: the field {name!r} is missing.", f"Each example needs {like}.")
        value, allowed = row[name], types if isinstance(types, tuple) else (types,)
        # bool is an int to Python, never to a dataset
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise GptsError(f"{where}: the field {name!r} is {json.dumps(value)[:60]}, not {_type_names(types)}.",
                            f"Each example needs {like}.")


def read_examples(path: str | Path, required_fields: Fields) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; `required_fields` maps each field every object
    must have to its type(s). Anything else (not UTF-8, not JSON, a missing or mistyped field, no examples at all)
    is a GptsError naming the file and line."""
    rows = []
    for line in read_jsonl(path):
        where = f"{path}, line {line.number}"
        if line.error is not None:
            raise GptsError(f"{where}: not valid JSON ({line.error}).", "A .jsonl file holds one JSON object a line.")
        _check_fields(line.value, required_fields, where)
        rows.append((line.number, line.value))
    if not rows:
        raise GptsError(f"{path} holds no examples.", "Write one JSON object a line.")
    return rows


def _examples(source: Examples, required: Fields) -> list[tuple[str, dict[str, Any]]]:
    """(where, example) pairs from a JSONL path or from objects in memory; `where` names the line for errors."""
    if isinstance(source, (str, Path)):
        return [(f"{source}, line {n}", row) for n, row in read_examples(source, required)]
    if not source:
        raise GptsError("No examples given.", "Pass at least one example.")
    for i, row in enumerate(source, 1):
        _check_fields(row, required, f"example {i}")
    return [(f"example {i}", dict(row)) for i, row in enumerate(source, 1)]


# -- scoring ----------------------------------------------------------------------------------------------------


Group = tuple[Sequence[int], Sequence[Sequence[int]]]  # a prefix and the continuations to score after it


@torch.inference_mode()
def score_continuations(model: GPT, groups: Sequence[Group], batch_tokens: int = BATCH_TOKENS,
                        advance: Callable[[int], None] | None = None, greedy: bool = False) -> list[list[Any]]:
    """log P(continuation | prefix), summed over the continuation's tokens, for every continuation of every group;
    with `greedy`, (log P, is_greedy) pairs instead, is_greedy telling whether every token of the continuation is
    the model's most likely next token (lm-evaluation-harness' is_greedy).

    A prefix too long for the context loses its start (as lm-evaluation-harness truncates), so that it and its
    longest continuation fit; a continuation longer than the context is an error.
    """
    context = model.config.context_length
    fitted: list[tuple[list[int], list[list[int]]]] = []
    for prefix, conts in groups:
        conts = [list(c) for c in conts]
        if not prefix or not conts or not all(conts):
            raise GptsError("A prefix or continuation to score has no tokens.", "Give every text some content.")
        longest = max(map(len, conts))
        if longest > context:
            raise GptsError(f"A {longest}-token continuation does not fit the model's {context}-token context.",
                            "Shorten the answers or choices.")
        # fed: prefix + every continuation token but the last (the last is only predicted)
        fitted.append((list(prefix)[-(context - longest + 1):], conts))

    # Longest first, packed under the token budget: similar lengths share a batch, so little padding.
    order = sorted(range(len(fitted)), key=lambda i: -(len(fitted[i][0]) + max(map(len, fitted[i][1]))))
    batches: list[list[int]] = []
    for i in order:
        if batches and _fits([fitted[j] for j in batches[-1] + [i]], batch_tokens, context):
            batches[-1].append(i)
        else:
            batches.append([i])
    scores: list[list[Any]] = [[] for _ in fitted]
    for batch in batches:
        for i, group_scores in zip(batch, _score_batch(model, [fitted[i] for i in batch])):
            scores[i] = group_scores if greedy else [logprob for logprob, _ in group_scores]
        if advance:
            advance(len(batch))
    return scores


def _fits(groups: list[tuple[list[int], list[list[int]]]], batch_tokens: int, context: int) -> bool:
    """Whether groups can share a batch: the padded prefixes and continuations within the token budget, and the
    cache (the longest prefix, then the longest continuation) within the context."""
    prefix_len = max(len(p) for p, _ in groups)
    conts = [c for _, cs in groups for c in cs]
    cont_len = max(map(len, conts))
    return (len(groups) * prefix_len + len(conts) * cont_len <= batch_tokens
            and prefix_len + cont_len - 1 <= context)


def _score_batch(model: GPT, groups: list[tuple[list[int], list[list[int]]]]) -> list[list[tuple[float, bool]]]:
    """One batch: prefixes left-padded and prefilled together, then their continuations (right-padded, which a causal
    model needs no mask for) on the repeated cache rows, in time chunks that keep the logits within budget."""
    device = model.device
    lengths = torch.tensor([len(p) for p, _ in groups], device=device)
    P = int(lengths.max())
    idx = torch.tensor([[0] * (P - len(p)) + p for p, _ in groups], device=device)  # (B, P)
    padded = bool((lengths < P).any())
    conts = [c for _, cs in groups for c in cs]
    rows = torch.tensor([b for b, (_, cs) in enumerate(groups) for _ in cs], device=device)  # (R,) group of each
    C = max(map(len, conts))
    prefix_mask = pos = key_mask = None
    if padded:
        prefix_mask = torch.arange(P, device=device) >= P - lengths[:, None]  # (B, P)
        pos = (prefix_mask.cumsum(1) - 1).clamp(min=0)
    cache = model.new_cache(len(groups), P + C - 1)
    logits = model(idx, pos=pos, cache=cache, key_mask=prefix_mask, last_only=True)[:, -1][rows]  # (R, V)
    cache.select(rows)
    if padded:
        key_mask = torch.cat([prefix_mask[rows], prefix_mask.new_ones(len(conts), C - 1)], dim=1)  # (R, P + C - 1)

    targets = torch.tensor([c + [0] * (C - len(c)) for c in conts], device=device)  # (R, C)
    valid = torch.arange(C, device=device) < torch.tensor([len(c) for c in conts], device=device)[:, None]
    total, top = _token_scores(logits[:, None], targets[:, :1], valid[:, :1])
    chunk = max(1, LOGITS_BUDGET // (len(conts) * model.config.vocab_size))
    for start in range(0, C - 1, chunk):  # feed targets[:, t] to predict targets[:, t + 1]
        end = min(start + chunk, C - 1)
        step_pos = lengths[rows][:, None] + torch.arange(start, end, device=device)  # each row's own positions
        logits = model(targets[:, start:end], pos=step_pos, cache=cache, key_mask=key_mask)
        chunk_total, chunk_top = _token_scores(logits, targets[:, start + 1:end + 1], valid[:, start + 1:end + 1])
        total, top = total + chunk_total, top & chunk_top
    scores = list(zip(total.tolist(), top.tolist()))
    out, k = [], 0
    for _, cs in groups:
        out.append(scores[k:k + len(cs)])
        k += len(cs)
    return out


def _token_scores(logits: torch.Tensor, targets: torch.Tensor,
                  valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For logits (R, T, V) and targets, valid (R, T): the sums over time of log P(target) where valid, (R,)
    float64, and whether every valid target is the most likely token, (R,) bool."""
    logits = logits.float()
    logprobs = logits.log_softmax(-1).gather(-1, targets[..., None]).squeeze(-1)
    top = (logits.argmax(-1) == targets) | ~valid
    return logprobs.masked_fill(~valid, 0).sum(-1, dtype=torch.float64), top.all(-1)


def _scored(loaded: LoadedModel, groups: Sequence[Group], batch_tokens: int, report: Report, task: str,
            unit: str) -> list[list[float]]:
    """score_continuations with its progress reported, one unit per group."""
    meter = Meter(report, task, len(groups), unit)
    scores = score_continuations(loaded.gpt, groups, batch_tokens, meter.advance)
    meter.done()
    return scores


# -- perplexity -------------------------------------------------------------------------------------------------


def sliding_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Hugging Face's windows as (begin, split, end): the window is tokens[begin:end] and it scores
    tokens[split:end], those the previous window did not score, never its own first token (nothing precedes it).
    So with stride < context every token but the text's first is scored once; with stride == context the windows
    are disjoint and each window's first token goes unscored."""
    windows, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + context, n_tokens)
        windows.append((begin, max(prev_end, begin + 1), end))
        prev_end = end
        if end == n_tokens:
            break
    return windows


@dataclass
class Perplexity:
    """Negative log-likelihood of `tokens` scored tokens of a text of `bytes` UTF-8 bytes; `parts`: one per text."""

    nll_sum: float  # nats
    tokens: int
    bytes: int
    parts: list[Perplexity] = field(default_factory=list)

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood, nats per token."""
        return self.nll_sum / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    @property
    def bits_per_byte(self) -> float:
        return self.nll_sum / math.log(2) / self.bytes

    def to_dict(self) -> dict[str, float | int]:
        return {"nll": self.nll, "perplexity": self.perplexity, "bits_per_byte": self.bits_per_byte,
                "tokens": self.tokens, "bytes": self.bytes}


def perplexity(loaded: LoadedModel, texts: str | Sequence[str], context: int | None = None,
               stride: int | None = None, batch_tokens: int = BATCH_TOKENS, report: Report = ignore) -> Perplexity:
    """Sliding-window perplexity of each text's token stream (BOS first when the model adds one), and of all of
    them together: windows never cross from one text into the next. `context` defaults to the model's context
    length, `stride` to half of `context`."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    limit = loaded.config.context_length
    context = context or limit
    stride = stride or max(1, context // 2)
    if not 2 <= context <= limit:
        raise GptsError(f"--context {context} is out of range.", f"Use 2 to {limit} (the model's context length).")
    if not 1 <= stride <= context:
        raise GptsError(f"--stride {stride} is out of range.",
                        f"Use 1 to {context} (the window): a larger stride would leave tokens unscored.")
    streams = loaded.tokenizer.encode_batch(texts)
    for i, ids in enumerate(streams):
        if len(ids) < 2:
            raise GptsError(f"Text {i + 1} has {len(ids)} token(s): there is nothing to predict.",
                            "Give each text at least two tokens.")
    groups, owner = [], []
    for i, ids in enumerate(streams):
        for begin, split, end in sliding_windows(len(ids), context, stride):
            groups.append((ids[begin:split], [ids[split:end]]))
            owner.append(i)
    scores = _scored(loaded, groups, batch_tokens, report, "Scoring windows", "windows")
    nll, scored = [0.0] * len(texts), [0] * len(texts)
    for i, (_, (cont,)), (score,) in zip(owner, groups, scores):
        nll[i] -= score
        scored[i] += len(cont)
    parts = [Perplexity(*part, len(t.encode("utf-8"))) for part, t in zip(zip(nll, scored), texts)]
    return Perplexity(sum(nll), sum(p.tokens for p in parts), sum(p.bytes for p in parts), parts)


# -- classification ---------------------------------------------------------------------------------------------


def reply_tokens(tokenizer: Tokenizer, messages: list[dict[str, str]],
                 replies: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """The prompt's token ids (the conversation ready for the assistant), and each reply's: the tokens the chat
    template puts after the prompt when the reply is the assistant's turn, through its end-of-turn token (what
    follows, a newline say, is no part of the answer). As lm-evaluation-harness splits a context and continuation,
    the conversation is tokenized whole and the reply is what follows the prompt's own tokens."""
    prompt = tokenizer.encode_chat(messages)
    ends = tokenizer.eos_ids
    out = []
    for reply in replies:
        ids = tokenizer.encode_chat([*messages, {"role": "assistant", "content": reply}], add_generation_prompt=False)
        ids = ids[len(prompt):]
        end = next((i for i, t in enumerate(ids) if t in ends), None)
        out.append(ids if end is None else ids[:end + 1])
    return prompt, out


def match_label(output: str, labels: Sequence[str]) -> str | None:
    """The label a generated reply names: equal to it (after strip and casefold), else the longest label it starts
    with, else the label it mentions first (the longest of those starting there); None when it names none."""
    text = output.strip().casefold()
    folded = [(label.strip().casefold(), label) for label in labels]
    for key, label in folded:
        if text == key:
            return label
    starts = [(len(key), label) for key, label in folded if key and text.startswith(key)]
    if starts:
        return max(starts, key=lambda s: s[0])[1]
    found = [(text.find(key), -len(key), label) for key, label in folded if key and key in text]
    return min(found)[2] if found else None


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0  # scikit-learn's zero_division=0


def _prf(tp: float, predicted: float, true: float) -> dict[str, float]:
    # F1 as 2 tp / (predicted + true): the harmonic mean of precision and recall, and 0 where both are 0
    return {"precision": _ratio(tp, predicted), "recall": _ratio(tp, true), "f1": _ratio(2 * tp, predicted + true)}


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str | None],
                           labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy; precision, recall and F1 per class and averaged (macro, micro, weighted); the confusion matrix
    (rows: true label, columns: predicted). scikit-learn's definitions with `labels` given and zero_division=0.
    A prediction outside `labels` (None: a reply that named no label) is wrong, and counted in "unmatched"."""
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    matrix = [[0] * k for _ in range(k)]
    unmatched = 0
    for t, p in zip(y_true, y_pred, strict=True):
        if p in index:
            matrix[index[t]][index[p]] += 1
        else:
            unmatched += 1
    support = [sum(1 for t in y_true if t == label) for label in labels]
    predicted = [sum(matrix[i][j] for i in range(k)) for j in range(k)]
    tp = [matrix[i][i] for i in range(k)]
    per_class = {label: {**_prf(tp[i], predicted[i], support[i]), "support": support[i]}
                 for i, label in enumerate(labels)}
    keys = ("precision", "recall", "f1")
    n = len(y_true)
    return {
        "accuracy": _ratio(sum(tp), n),
        "macro": {m: sum(c[m] for c in per_class.values()) / k for m in keys},
        "micro": _prf(sum(tp), sum(predicted), sum(support)),
        "weighted": {m: _ratio(sum(c[m] * c["support"] for c in per_class.values()), n) for m in keys},
        "per_class": per_class,
        "confusion_matrix": {"labels": list(labels), "matrix": matrix},
        "unmatched": unmatched,
        "n": n,
    }


@dataclass
class Classification:
    metrics: dict[str, Any]  # classification_metrics(...)
    labels: list[str]
    predictions: list[str | None]  # None: a generated reply that named no label
    scores: list[list[float]] | None  # loglik: each example's log-likelihood of each label's reply


def classify(loaded: LoadedModel, examples: Examples, labels: Sequence[str] | None = None,
             instructions: str | None = None, method: Literal["loglik", "generate"] = "loglik",
             batch_tokens: int = BATCH_TOKENS, report: Report = ignore,
             conversation: Conversation | None = None) -> Classification:
    """Classify {"text", "label"} examples (a JSONL path or dicts; a label may be a string or a number).

    Labels: `labels`, else those in the model's task.json (from fine-tuning), else the sorted labels of the examples.
    Instructions: `instructions`, else task.json's, else DEFAULT_INSTRUCTIONS. With `conversation` (a custom GPT),
    the text goes through it instead, and the GPT's own instructions say what to answer.
    """
    rows = _examples(examples, {"text": str, "label": (str, int)})
    task = read_task(loaded.ref.directory)
    if labels is None and task is not None:
        labels = task.labels
    if instructions is None and task is not None:
        instructions = task.instructions
    truth = [str(row["label"]) for _, row in rows]
    labels = list(labels) if labels is not None else sorted(set(truth))
    for (where, _), label in zip(rows, truth):
        if label not in labels:
            raise GptsError(f"{where}: the label {label!r} is not one of the labels ({', '.join(labels)}).",
                            "Fix the example, or pass every label with --labels.")
    tok = loaded.tokenizer
    conversations = [conversation(row["text"]) if conversation else
                     classification_messages(row["text"], labels, instructions) for _, row in rows]
    if method == "loglik":
        groups = [reply_tokens(tok, messages, labels) for messages in conversations]
        scores = _scored(loaded, groups, batch_tokens, report, "Scoring labels", "examples")
        predictions: list[str | None] = [labels[_argmax(s)] for s in scores]
    elif method == "generate":
        longest = max(len(ids) for ids in reply_tokens(tok, conversations[0], labels)[1])
        prompts = [tok.encode_chat(messages) for messages in conversations]
        outputs = _greedy(loaded, prompts, longest + LABEL_SLACK_TOKENS, [where for where, _ in rows], report)
        predictions, scores = [match_label(o, labels) for o in outputs], None
    else:
        raise GptsError(f"Unknown method {method!r}.", "Use --method loglik or --method generate.")
    return Classification(classification_metrics(truth, predictions, labels), labels, predictions, scores)


def _greedy(loaded: LoadedModel, prompts: list[list[int]], max_new_tokens: int, where: list[str],
            report: Report) -> list[str]:
    """Greedy replies (no sampling, no repetition penalty, whatever the model's defaults), batched by length."""
    context = loaded.config.context_length
    for ids, w in zip(prompts, where):
        if len(ids) + max_new_tokens > context:
            raise GptsError(f"{w}: the {len(ids)}-token prompt and {max_new_tokens} new tokens do not fit the "
                            f"model's {context}-token context.", "Shorten the prompt, or ask for fewer new tokens.")
    meter = Meter(report, "Generating replies", len(prompts), "examples")
    completions = generate_in_batches(loaded, prompts, GENERATE_BATCH, meter.advance, temperature=0.0,
                                      repetition_penalty=1.0, max_new_tokens=max_new_tokens)
    meter.done()
    return [c.text for c in completions]


def generate_in_batches(loaded: LoadedModel, prompts: list[list[int]], batch_size: int,
                        advance: Callable[[int], None], **options: Any) -> list[Completion]:
    """One completion per prompt, in prompt order, on one engine of `batch_size` slots: a reply that ends frees its
    slot for the next prompt at once."""
    engine = Engine(loaded.gpt, loaded.tokenizer, max_batch=batch_size, max_queue=len(prompts))
    config = loaded.generation_config(**options)
    requests = [engine.submit(prompt, config) for prompt in prompts]
    for request in requests:
        for _ in request.events():  # reading one request runs the engine for all of them
            pass
        advance(1)
    return [request.completions[0] for request in requests]


def plot_confusion(metrics: dict[str, Any], path: str | Path) -> Path:
    """The confusion matrix as a PNG heat map with counts, written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    labels, matrix = metrics["confusion_matrix"]["labels"], metrics["confusion_matrix"]["matrix"]
    size = 2.5 + 0.5 * len(labels)
    fig = Figure(figsize=(size + 1, size), layout="tight")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {metrics['accuracy']:.3f}, n = {metrics['n']}")
    high = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center", color="white" if count > high / 2 else "black")
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


# -- multiple choice --------------------------------------------------------------------------------------------


def choice_tokens(tokenizer: Tokenizer, context: str,
                  continuations: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """lm-evaluation-harness' split of (context, continuation) into tokens: trailing whitespace of the context moves
    to the continuation; the context and continuation are tokenized together and the continuation's tokens are those
    after the context's own tokens. An empty context becomes the BOS (else EOS) token. Unlike the harness's default
    the context starts with BOS when the model's tokenizer adds one (Llama 2 style models need it)."""
    stripped = context.rstrip()
    tail = context[len(stripped):]
    if not stripped:
        start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
        if start is None:
            raise GptsError("An empty context needs a BOS or EOS token to stand for it; this tokenizer has neither.",
                            "Give every example some context.")
        return [start], [tokenizer.encode(tail + c, add_special=False) for c in continuations]
    prefix = tokenizer.encode(stripped)
    return prefix, [ids[len(prefix):] for ids in tokenizer.encode_batch([stripped + tail + c for c in continuations])]


@dataclass
class Choice:
    acc: float
    acc_norm: float
    n: int
    logliks: list[list[float]]  # each example's total log-likelihood of each choice
    predictions: list[int]  # argmax of the logliks (acc)
    predictions_norm: list[int]  # argmax of the logliks per character of the choice (acc_norm)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima, as numpy's


def choice(loaded: LoadedModel, examples: Examples, delimiter: str = " ", batch_tokens: int = BATCH_TOKENS,
           report: Report = ignore, conversation: Conversation | None = None) -> Choice:
    """Multiple choice {"context", "choices": [...], "answer": index}, scored as lm-evaluation-harness scores
    HellaSwag: each continuation is `delimiter + choice` after the raw context (no chat template); acc picks the
    highest total log-likelihood, acc_norm the highest log-likelihood divided by the choice's length in characters
    (len(choice), the delimiter not counted, as the harness's `completion_len`). With `conversation` (a custom GPT)
    the context is its user's message and each choice a reply of its assistant."""
    rows = _examples(examples, {"context": str, "choices": list, "answer": int})
    for where, row in rows:
        choices = row["choices"]
        if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise GptsError(f"{where}: \"choices\" must be a list of at least two non-empty texts.",
                            'Write it like "choices": ["a cat", "a dog"].')
        if not 0 <= row["answer"] < len(choices):
            raise GptsError(f"{where}: \"answer\" is {row['answer']}, not the index of a choice "
                            f"(0 to {len(choices) - 1}).",
                            "The answer is the 0-based position of the right choice.")
    tok = loaded.tokenizer
    groups = [reply_tokens(tok, conversation(row["context"]), row["choices"]) if conversation else
              choice_tokens(tok, row["context"], [delimiter + c for c in row["choices"]]) for _, row in rows]
    for (where, _), (_, conts) in zip(rows, groups):
        if not all(conts):
            raise GptsError(f"{where}: a choice has no tokens of its own after the context.",
                            "Give every choice some text.")
    logliks = _scored(loaded, groups, batch_tokens, report, "Scoring choices", "examples")
    answers = [row["answer"] for _, row in rows]
    predictions = [_argmax(ll) for ll in logliks]
    predictions_norm = [_argmax([x / len(c) for x, c in zip(ll, row["choices"])])
                        for ll, (_, row) in zip(logliks, rows)]
    n = len(rows)
    return Choice(sum(p == a for p, a in zip(predictions, answers)) / n,
                  sum(p == a for p, a in zip(predictions_norm, answers)) / n, n, logliks, predictions, predictions_norm)


# -- generation -------------------------------------------------------------------------------------------------


@dataclass
class GenerationScores:
    exact_match: float  # the reply equals the answer, both stripped
    contains: float  # the reply contains the stripped answer
    n: int
    outputs: list[str]
    chat: bool


def generate_eval(loaded: LoadedModel, examples: Examples, max_new_tokens: int = GENERATE_MAX_NEW_TOKENS,
                  chat: bool | None = None, report: Report = ignore, conversation: Conversation | None = None) -> GenerationScores:
    """Greedy replies to {"prompt", "answer"} examples. `chat`: render each prompt as a user turn with the chat
    template (None: when the model has a chat template of its own), else continue the raw prompt. With
    `conversation` (a custom GPT), each prompt is the user's message in the conversation it builds."""
    rows = _examples(examples, {"prompt": str, "answer": str})
    if max_new_tokens < 1:
        raise GptsError(f"--max-new-tokens {max_new_tokens} is out of range.", "Use 1 or more.")
    tok = loaded.tokenizer
    chat = conversation is not None or (tok.chat_template is not None if chat is None else chat)
    conversation = conversation or (lambda text: [{"role": "user", "content": text}])
    prompts = [tok.encode_chat(conversation(row["prompt"])) if chat else tok.encode(row["prompt"]) for _, row in rows]
    for (where, _), ids in zip(rows, prompts):
        if not ids:
            raise GptsError(f"{where}: the prompt has no tokens.", "Give every prompt some text.")
    outputs = _greedy(loaded, prompts, max_new_tokens, [where for where, _ in rows], report)
    answers = [row["answer"].strip() for _, row in rows]
    n = len(rows)
    return GenerationScores(sum(o.strip() == a for o, a in zip(outputs, answers)) / n,
                            sum(a in o for o, a in zip(outputs, answers)) / n, n, outputs, chat)
