"""Text generation with Hugging Face `generate()` semantics: the settings, the logits processors, the results.

- `GenerationConfig`: how to generate (Hugging Face's names; `stop` and the presence/frequency penalties are
  OpenAI's);
- logits processors: repetition penalty, then temperature, top-k, top-p, min-p (transformers' order and
  definitions), and OpenAI's presence and frequency penalties on the tokens generated so far;
- a text layer per sequence (a tokenizer's stream decoder): text deltas that never hold half a UTF-8 character and
  never show text that a stop string later removes;
- the results: `StreamEvent` (one token of one sequence), `Completion` (a finished sequence), `Timings`.

The loop that runs them is the batching engine (gpts.engine), which every caller uses: `stream()` and
`generate()` there run a request on a private engine in the caller's thread, the server on a shared one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from gpts.errors import GptsError

if TYPE_CHECKING:
    from gpts.tokenizer import Tokenizer

# New tokens when neither max_new_tokens nor max_length is set (capped by what the context has left).
DEFAULT_MAX_NEW_TOKENS = 256
# The smallest temperature and repetition penalty. Logits divided by both stay far inside float32's range;
# much smaller ones overflow to inf, and softmax(inf) is nan. (Temperature 0 already means greedy.)
MIN_SCALE = 1e-6

BLANK_FIX = "Give it some text: a model has nothing to answer or continue in whitespace alone."

FinishReason = Literal["stop", "length", "abort"]  # abort: the caller cancelled it
Prompt = str | Sequence[int]


@dataclass
class GenerationConfig:
    """How to generate. Field names follow Hugging Face where they exist; `stop` is OpenAI's."""

    max_new_tokens: int | None = None  # wins over max_length when both are set
    max_length: int | None = None  # prompt + new tokens (the longest prompt of a batch, as in HF)
    temperature: float = 1.0  # 0 means greedy
    top_k: int | None = 50  # 0 or None: off
    top_p: float = 1.0  # 1.0: off
    min_p: float = 0.0  # 0.0: off
    repetition_penalty: float = 1.0  # 1.0: off
    presence_penalty: float = 0.0  # OpenAI's: subtracted once from every token generated so far; 0: off
    frequency_penalty: float = 0.0  # OpenAI's: subtracted once per occurrence in the generated tokens; 0: off
    stop: list[str] = field(default_factory=list)  # the text is cut before the first one that appears
    eos_token_ids: list[int] | None = None  # None: the tokenizer's
    ignore_eos: bool = False
    num_return_sequences: int = 1
    seed: int | None = None  # None: a fresh random seed each call
    truncate: bool = False  # keep the end of a prompt that leaves no room for the new tokens

    def __post_init__(self) -> None:
        if isinstance(self.stop, (str, tuple)):
            self.stop = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if isinstance(self.eos_token_ids, int):
            self.eos_token_ids = [self.eos_token_ids]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationConfig:
        """From a generation_config.json (Hugging Face keys) or our own; unknown keys and nulls are ignored.

        Hugging Face aliases: eos_token_id -> eos_token_ids, stop_strings -> stop, do_sample false -> greedy.
        """
        data = {k: v for k, v in data.items() if v is not None}
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        for alias, name in (("eos_token_id", "eos_token_ids"), ("stop_strings", "stop")):
            if alias in data and name not in kwargs:
                kwargs[name] = data[alias]
        if data.get("do_sample") is False:
            kwargs["temperature"] = 0.0
        return cls(**kwargs)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def validate(self) -> None:
        def bad(name: str, rule: str) -> GptsError:
            flag = "" if name == "eos_token_ids" else f" (--{name.replace('_', '-')})"  # the only one with no flag
            return GptsError(f"Invalid {name}={getattr(self, name)!r}.", f"{name}{flag} must be {rule}.")

        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        def is_num(x: Any) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        for name in ("max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and not (is_int(value) and value >= 1):
                raise bad(name, "a whole number >= 1")
        if not (is_num(self.temperature) and (self.temperature == 0 or self.temperature >= MIN_SCALE)):
            raise bad("temperature", f"0 (greedy) or a number >= {MIN_SCALE:g}")
        if self.top_k is not None and not (is_int(self.top_k) and self.top_k >= 0):
            raise bad("top_k", "a whole number >= 0 (0 turns it off)")
        if not (is_num(self.top_p) and 0 < self.top_p <= 1):
            raise bad("top_p", "in (0, 1] (1 turns it off)")
        if not (is_num(self.min_p) and 0 <= self.min_p <= 1):
            raise bad("min_p", "in [0, 1] (0 turns it off)")
        if not (is_num(self.repetition_penalty) and self.repetition_penalty >= MIN_SCALE):
            raise bad("repetition_penalty", f"a number >= {MIN_SCALE:g} (1 turns it off)")
        for name in ("presence_penalty", "frequency_penalty"):
            if not (is_num(getattr(self, name)) and -2 <= getattr(self, name) <= 2):
                raise bad(name, "in [-2, 2] (0 turns it off)")
        if not (is_int(self.num_return_sequences) and self.num_return_sequences >= 1):
            raise bad("num_return_sequences", "a whole number >= 1")
        if not (isinstance(self.stop, list) and all(isinstance(s, str) and s for s in self.stop)):
            raise bad("stop", "a list of non-empty strings")
        if self.eos_token_ids is not None and not (
                isinstance(self.eos_token_ids, list) and all(is_int(i) and i >= 0 for i in self.eos_token_ids)):
            raise bad("eos_token_ids", "a list of token ids")
        if self.seed is not None and not (is_int(self.seed) and 0 <= self.seed < 2**64):
            raise bad("seed", "a whole number from 0 to 2**64 - 1")


# -- logits processors (Hugging Face's definitions, on (B, V) float logits) -----------------------------


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide the positive logits and multiply the negative ones of every token in `seen` (B, V) bool."""
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def seen_tokens(ids: torch.Tensor, vocab_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) bool: which tokens occur in ids (B, L), counting only where mask (B, L) is True."""
    if mask is not None:
        ids = ids.masked_fill(~mask, vocab_size)  # send padding to an extra column, dropped below
    seen = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.bool, device=ids.device)
    return seen.scatter_(1, ids, True)[:, :vocab_size]


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k highest logits (and every logit tied with the k-th); the rest become -inf."""
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1:]
    return logits.masked_fill(logits < kth, -math.inf)


def few_candidates(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """When earlier filters (top-k, min-p, a constraint) left few tokens standing in logits (B, V): their logits and
    ids (B, C), most likely first, C the most any row kept; None when many are left. Work on these alone is the same
    as on the whole vocabulary, for a small fraction of the cost."""
    candidates = int(torch.isfinite(logits).sum(-1).max())
    return logits.topk(candidates) if candidates < logits.shape[-1] // 4 else None


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose probabilities add up to at least p (never none)."""
    if (few := few_candidates(logits)) is not None:
        top, order = few
        kept = top_p_filter(top, p)
        return torch.full_like(logits, -math.inf).scatter(-1, order, kept)
    sorted_logits, order = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(-1).cumsum(-1)
    remove = cumulative <= 1 - p
    remove[..., -1:] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), -math.inf)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p times the top token's probability."""
    probs = logits.softmax(-1)
    remove = probs < min_p * probs.amax(-1, keepdim=True)
    remove.scatter_(-1, probs.argmax(-1, keepdim=True), False)
    return logits.masked_fill(remove, -math.inf)


def presence_frequency_penalty(logits: torch.Tensor, counts: torch.Tensor, presence: float,
                               frequency: float) -> torch.Tensor:
    """OpenAI's penalties: counts (B, V) are the occurrences of each token in what was generated so far."""
    return logits - presence * (counts > 0) - frequency * counts


def process_logits(logits: torch.Tensor, config: GenerationConfig, seen: torch.Tensor | None = None,
                   counts: torch.Tensor | None = None) -> torch.Tensor:
    """All processors in transformers' order, OpenAI's penalties after the repetition penalty (as vLLM); the
    warpers only when sampling, as in transformers."""
    if config.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, seen, config.repetition_penalty)
    if config.presence_penalty or config.frequency_penalty:
        logits = presence_frequency_penalty(logits, counts, config.presence_penalty, config.frequency_penalty)
    if config.greedy:
        return logits
    if config.temperature != 1.0:
        logits = logits / config.temperature
    if config.top_k:
        logits = top_k_filter(logits, config.top_k)
    if config.top_p < 1.0:
        logits = top_p_filter(logits, config.top_p)
    if config.min_p > 0:
        logits = min_p_filter(logits, config.min_p)
    return logits


def sample(logits: torch.Tensor, generator: torch.Generator | None, rows: list[int], total: int) -> torch.Tensor:
    """Draw the next token ids (R,) from processed logits (R, V): rows `rows` of a request's `total` sequences.

    When the processors (or a constraint) left few candidates, the draw is among those alone: the same distribution,
    for a fraction of the cost (drawing over a 50k vocabulary costs ~1.5 ms a row on a CPU). Otherwise all `total`
    rows draw, finished ones from a dummy distribution, so the generator is used exactly as a Hugging Face batch
    uses it: the same seed gives transformers' tokens.
    """
    if (few := few_candidates(logits)) is not None:
        top, order = few
        return order.gather(1, torch.multinomial(top.softmax(-1), 1, generator=generator)).squeeze(1)
    probs = torch.full((total, logits.shape[-1]), 1.0 / logits.shape[-1], device=logits.device)
    probs[rows] = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)[rows]


# -- results ------------------------------------------------------------------------------------------


@dataclass
class Timings:
    """llama.cpp's figures: prompt processing (the prefill) and prediction (every step after it)."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    cache_n: int = 0  # prompt tokens whose keys and values came from the prefix cache (not computed again)

    @property
    def prompt_per_second(self) -> float:
        return _per_second(self.prompt_n, self.prompt_ms)

    @property
    def predicted_per_second(self) -> float:
        return _per_second(self.predicted_n, self.predicted_ms)

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "prompt_per_second": self.prompt_per_second,
                "predicted_per_second": self.predicted_per_second}


def count_tokens(n: int, kind: str = "") -> str:
    return f"{n:,} {kind}token{'s' * (n != 1)}"


def _per_second(n: int, ms: float) -> float:
    return n / ms * 1000 if ms > 0 else 0.0


TopLogprobs = tuple[tuple[int, float], ...]


@dataclass
class Completion:
    index: int  # prompt_index * num_return_sequences + the sample's number
    prompt_index: int
    text: str  # without the eos token, cut before a stop string
    token_ids: list[int]  # every generated token, the final eos or stop-string tokens included
    finish_reason: FinishReason
    timings: Timings
    logprobs: list[float] | None = None  # when asked: each token's log-probability under the model
    top_logprobs: list[TopLogprobs] | None = None  # when asked: the most likely tokens at each step

    @property
    def prompt_tokens(self) -> int:
        return self.timings.prompt_n


@dataclass(frozen=True)
class StreamEvent:
    """One generated token of one sequence. `text` is the new text it completes (often "", e.g. inside a
    UTF-8 character or while it may still be the start of a stop string); finish_reason is set on the
    sequence's last event."""

    index: int
    token_id: int
    text: str
    finish_reason: FinishReason | None = None
    logprob: float | None = None  # when asked: log P(token) under the model's own distribution (before sampling)
    top_logprobs: TopLogprobs | None = None  # when asked: (token id, log-probability), most likely first


# -- the text layer -----------------------------------------------------------------------------------


class TextStream:
    """One sequence's text: the tokenizer's stream decoder, then stop strings.

    Invariant: the emitted text never contains the start of a stop string that could still complete, because
    the longest suffix of the pending text that is a prefix of a stop string is held back. So a stop string can
    only start inside `pending`, and searching there finds the first one.
    """

    def __init__(self, tokenizer: Tokenizer | None, stop: list[str]):
        # Special tokens (an eos past ignore_eos, say) are no part of the text, as in transformers' pipelines.
        self.decoder = tokenizer.stream_decoder(skip_special=True) if tokenizer is not None else None
        self.stop = stop
        self.pending = ""
        self.text = ""

    def push(self, token_id: int) -> tuple[str, bool]:
        """The text now safe to show, and whether a stop string ended the sequence."""
        return self._emit(self.decoder.push(token_id), final=False) if self.decoder else ("", False)

    def finish(self) -> str:
        return self._emit(self.decoder.flush(), final=True)[0] if self.decoder else ""

    def _emit(self, new: str, final: bool) -> tuple[str, bool]:
        pending = self.pending + new
        cut = min((i for i in (pending.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            out, self.pending = pending[:cut], ""
        else:
            hold = 0 if final else self._held_back(pending)
            out, self.pending = pending[:len(pending) - hold], pending[len(pending) - hold:]
        self.text += out
        return out, cut >= 0

    def _held_back(self, pending: str) -> int:
        longest = max((len(s) for s in self.stop), default=1) - 1
        for n in range(min(longest, len(pending)), 0, -1):
            if any(s.startswith(pending[-n:]) for s in self.stop):
                return n
        return 0
