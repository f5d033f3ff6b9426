"""Text generation with Hugging Face `generate()` semantics, one token per step from a KV cache.

Layers, bottom up:
- logits processors: repetition penalty, then temperature, top-k, top-p, min-p (transformers' order and
  definitions), and the sampler (argmax when temperature is 0, else a seeded multinomial draw);
- the core loop on token ids: a batch of left-padded prompts, prefilled once, `num_return_sequences` samples
  per prompt sharing that prefill, per-sequence finish on eos, stop string or length;
- a thin text layer per sequence (a tokenizer's stream decoder): text deltas that never hold half a UTF-8
  character and never show text that a stop string later removes.

`stream()` yields one `StreamEvent` per sequence per step; `generate()` drains the same stream and returns
the `Completion`s. There is no second code path.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from gpts.errors import GptsError

if TYPE_CHECKING:
    from gpts.model import GPT
    from gpts.tokenizer import Tokenizer

# New tokens when neither max_new_tokens nor max_length is set (capped by what the context has left).
DEFAULT_MAX_NEW_TOKENS = 256
# The smallest temperature and repetition penalty. Logits divided by both stay far inside float32's range;
# much smaller ones overflow to inf, and softmax(inf) is nan. (Temperature 0 already means greedy.)
MIN_SCALE = 1e-6

BLANK_FIX = "Give it some text: a model has nothing to answer or continue in whitespace alone."

FinishReason = Literal["stop", "length"]
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


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most probable tokens whose probabilities add up to at least p (never none)."""
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


def process_logits(logits: torch.Tensor, config: GenerationConfig, seen: torch.Tensor | None = None) -> torch.Tensor:
    """All processors in transformers' order; the warpers only when sampling, as there."""
    if config.repetition_penalty != 1.0:
        logits = repetition_penalty(logits, seen, config.repetition_penalty)
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


def sample(logits: torch.Tensor, config: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Next token ids (B,) from processed logits (B, V)."""
    if config.greedy:
        return logits.argmax(-1)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


# -- results ------------------------------------------------------------------------------------------


@dataclass
class Timings:
    """llama.cpp's figures: prompt processing (the prefill) and prediction (every step after it)."""

    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float

    @property
    def prompt_per_second(self) -> float:
        return _per_second(self.prompt_n, self.prompt_ms)

    @property
    def predicted_per_second(self) -> float:
        return _per_second(self.predicted_n, self.predicted_ms)

    def to_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "prompt_per_second": self.prompt_per_second,
                "predicted_per_second": self.predicted_per_second}


def _tokens(n: int, kind: str = "") -> str:
    return f"{n:,} {kind}token{'s' * (n != 1)}"


def _per_second(n: int, ms: float) -> float:
    return n / ms * 1000 if ms > 0 else 0.0


@dataclass
class Completion:
    index: int  # prompt_index * num_return_sequences + the sample's number
    prompt_index: int
    text: str  # without the eos token, cut before a stop string
    token_ids: list[int]  # every generated token, the final eos or stop-string tokens included
    finish_reason: FinishReason
    timings: Timings

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


# -- the text layer -----------------------------------------------------------------------------------


class _TextStream:
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


@dataclass
class _Sequence:
    prompt_index: int
    text: _TextStream
    token_ids: list[int] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finished_at: float = 0.0


# -- the generation loop ------------------------------------------------------------------------------


class GenerationStream:
    """Iterate for `StreamEvent`s; afterwards `completions` holds the results.

    Everything that can be wrong with the request (config, prompts, context overflow) is checked when the
    stream is created, before any event.
    """

    # Queue each step on the device before the previous step's tokens reach the host, so the device never
    # waits for Python (the price: one step computed in vain at the end). None: on accelerators, not on CPU.
    lookahead: bool | None = None

    def __init__(self, model: GPT, prompts: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
                 tokenizer: Tokenizer | None = None, **overrides: Any):
        config = dataclasses.replace(config or GenerationConfig(), **overrides)
        config.validate()
        if config.stop and tokenizer is None:
            raise GptsError("Stop strings need a tokenizer.", "Pass the model's tokenizer, or drop `stop`.")
        self.model, self.config, self.tokenizer = model, config, tokenizer
        prompts = self._prompt_ids(prompts)
        if config.ignore_eos:
            eos_ids: list[int] = []
        elif config.eos_token_ids is not None:
            eos_ids = config.eos_token_ids
        else:
            eos_ids = sorted(tokenizer.eos_ids) if tokenizer is not None else []
        self.eos_ids = [i for i in eos_ids if i < model.config.vocab_size]  # others can never come
        self.prompts, self.steps = self._fit_context(prompts)
        self._events = self._run()
        self._completions: list[Completion] | None = None

    def __iter__(self) -> Iterator[StreamEvent]:
        return self._events

    @property
    def completions(self) -> list[Completion]:
        if self._completions is None:
            raise RuntimeError("The stream has not been read to the end yet.")
        return self._completions

    # -- preparation ----------------------------------------------------------------------------------

    def _prompt_ids(self, prompts: Prompt | Sequence[Prompt]) -> list[list[int]]:
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.tolist()
        if isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts
                                        and all(isinstance(t, int) for t in prompts)):
            prompts = [prompts]
        if not prompts:
            raise GptsError("No prompt given.", "Pass a prompt (text or token ids), or a list of them.")
        out = []
        for p in prompts:
            if isinstance(p, str):
                if self.tokenizer is None:
                    raise GptsError("A text prompt needs a tokenizer.", "Pass the tokenizer, or token ids.")
                if not p.strip():
                    raise GptsError("The prompt is blank.", BLANK_FIX)
                p = self.tokenizer.encode(p)
            ids = [int(t) for t in p]
            if not ids:
                raise GptsError("The prompt is empty (no tokens).",
                                "Give at least one token of prompt; the model needs something to continue.")
            vocab = self.model.config.vocab_size
            if min(ids) < 0 or max(ids) >= vocab:
                raise GptsError(f"The prompt has token ids outside the vocabulary (0..{vocab - 1}).",
                                "The tokenizer and the model do not belong together.")
            out.append(ids)
        return out

    def _fit_context(self, prompts: list[list[int]]) -> tuple[list[list[int]], int]:
        """The prompts (truncated if asked) and the number of steps, the same for every row as in HF."""
        cfg, context = self.config, self.model.config.context_length
        longest = max(len(p) for p in prompts)
        if cfg.max_new_tokens is not None:
            steps = cfg.max_new_tokens
        elif cfg.max_length is not None:
            steps = cfg.max_length - longest
            if steps < 1:
                raise GptsError(f"max_length={cfg.max_length} leaves no room for new tokens after the "
                                f"{longest}-token prompt.", "Raise max_length, or set max_new_tokens instead.")
        else:  # neither: a default that shrinks to what the context has left
            steps = max(1, min(DEFAULT_MAX_NEW_TOKENS, context - longest))
        if longest + steps <= context:
            return prompts, steps
        keep = context - steps
        if keep < 1:
            raise GptsError(f"{steps} new tokens leave no room for a prompt in the model's {context}-token context.",
                            f"Ask for at most {context - 1} new tokens.")
        if not cfg.truncate:
            asked = cfg.max_new_tokens is not None or cfg.max_length is not None
            new = _tokens(steps, "new ") if asked else "at least one new token"
            raise GptsError(f"A prompt of {_tokens(longest)} plus {new} does not fit the model's context of "
                            f"{_tokens(context)}.",
                            "Shorten the prompt, ask for fewer new tokens, or turn on truncation (--truncate), "
                            "which drops the start of the prompt.")
        return [p[-keep:] for p in prompts], steps

    # -- the loop -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _run(self) -> Iterator[StreamEvent]:
        model, cfg, n = self.model, self.config, self.config.num_return_sequences
        device, vocab = model.device, model.config.vocab_size
        lengths = [len(p) for p in self.prompts]
        P, L, B = len(self.prompts), max(lengths), len(self.prompts) * n
        started = time.perf_counter()

        idx = torch.tensor([[0] * (L - len(p)) + p for p in self.prompts], device=device)  # left-padded (P, L)
        padded = min(lengths) < L
        key_mask = pos = None
        if padded:  # one mask for the whole run: the model reads its first S columns each step
            key_mask = torch.ones(P, L + self.steps, dtype=torch.bool, device=device)
            key_mask[:, :L] = torch.arange(L, device=device) >= L - torch.tensor(lengths, device=device)[:, None]
            pos = (key_mask[:, :L].cumsum(1) - 1).clamp(min=0)
        seen = seen_tokens(idx, vocab, key_mask[:, :L] if padded else None) if cfg.repetition_penalty != 1 else None

        cache = model.new_cache(P, L + self.steps - 1)
        logits = model(idx, pos=pos, cache=cache, key_mask=key_mask, last_only=True)[:, -1]
        pos = pos[:, -1:] if padded else None  # (P, 1): each row's last position; None: the cache's length
        if n > 1:  # the samples of one prompt share its prefill
            rows = torch.arange(P, device=device).repeat_interleave(n)
            cache.select(rows)
            logits, key_mask, pos, seen = (t if t is None else t[rows] for t in (logits, key_mask, pos, seen))

        generator = None
        if not cfg.greedy:
            generator = torch.Generator(device=device)
            if cfg.seed is None:
                generator.seed()
            else:
                generator.manual_seed(cfg.seed)
        eos = torch.tensor(self.eos_ids, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)  # rows that produced an eos: fed eos after
        feed = self.eos_ids[0] if self.eos_ids else 0

        def pick(logits: torch.Tensor) -> torch.Tensor:
            token = sample(process_logits(logits.float(), cfg, seen), cfg, generator)
            if self.eos_ids:
                token = token.masked_fill(done, feed)
                done.logical_or_(torch.isin(token, eos))
            if seen is not None:
                seen.scatter_(1, token[:, None], True)
            return token

        def advance(token: torch.Tensor) -> torch.Tensor:
            nonlocal pos
            if pos is not None:
                pos = pos + 1
            return pick(model(token[:, None], pos=pos, cache=cache, key_mask=key_mask, last_only=True)[:, -1])

        seqs = [_Sequence(i // n, _TextStream(self.tokenizer, cfg.stop)) for i in range(B)]
        eos_ids = set(self.eos_ids)
        lookahead = device.type != "cpu" if self.lookahead is None else self.lookahead
        token = pick(logits)
        prompt_ms = None
        for step in range(self.steps):
            last = step == self.steps - 1
            queued = advance(token) if lookahead and not last else None
            ids = token.tolist()
            now = time.perf_counter()
            if prompt_ms is None:
                prompt_ms, first_at = (now - started) * 1000, now
            for i, (seq, tid) in enumerate(zip(seqs, ids)):
                if seq.finish_reason:
                    continue
                seq.token_ids.append(tid)
                if tid in eos_ids:
                    text, reason = seq.text.finish(), "stop"
                else:
                    text, stopped = seq.text.push(tid)
                    reason = "stop" if stopped else "length" if last else None
                    if reason == "length":
                        text += seq.text.finish()
                if reason:
                    seq.finish_reason, seq.finished_at = reason, now
                yield StreamEvent(i, tid, text, reason)
            if last or all(s.finish_reason for s in seqs):
                break
            token = queued if queued is not None else advance(token)

        self._completions = [
            Completion(i, s.prompt_index, s.text.text, s.token_ids, s.finish_reason,
                       Timings(lengths[s.prompt_index], prompt_ms, len(s.token_ids), (s.finished_at - first_at) * 1000))
            for i, s in enumerate(seqs)]


def stream(model: GPT, prompts: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
           tokenizer: Tokenizer | None = None, **overrides: Any) -> GenerationStream:
    """Generate, event by event. `overrides` replace fields of `config` (e.g. max_new_tokens=20)."""
    return GenerationStream(model, prompts, config, tokenizer, **overrides)


def generate(model: GPT, prompts: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
             tokenizer: Tokenizer | None = None, **overrides: Any) -> list[Completion]:
    """Generate to the end: one Completion per prompt and sample, in order (see Completion.index)."""
    events = stream(model, prompts, config, tokenizer, **overrides)
    for _ in events:
        pass
    return events.completions
