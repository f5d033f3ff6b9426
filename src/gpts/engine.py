"""The batching engine: every generation in gpts runs here, from `gpts generate` to the server's many clients.

A fixed number of KV-cache slots (`max_batch`), each holding one sequence with its own length. Between decode
steps requests join (their prompts are prefilled into free slots, in chunks, so running streams keep flowing) and
leave (a finished or aborted sequence frees its slot at once). Each decode step feeds every running sequence one
token in one forward pass over the slots [0, B); the rows' different lengths are a mask, not padding.

    submit() -> waiting -> (all its sequences get slots) prefilling -> (all prefilled) running -> finished

- A request is one or more prompts times `num_return_sequences`; its sequences are admitted together, start
  decoding together and share one seeded generator, so its tokens never depend on the other requests in the batch
  (and a request of many prompts draws exactly as Hugging Face's `generate()` does for the same batch).
- Prefill stops one token short of the prompt: that last token is the sequence's first decode input, so logits
  come only from decode steps, one code path for every first and later token.
- Prefix reuse: a slot keeps the keys and values of what it last held. A new sequence copies the longest prefix it
  shares with any slot (a GPT's fixed instructions, the samples of one prompt, a conversation's earlier turns) and
  prefills only the rest; `Timings.cache_n` and `stats()["reused_prompt_tokens"]` count what that saved.
- Threads: `start()` runs the loop on its own thread and requests hand events to any thread (`events()`) or to
  asyncio (`aevents()`) without blocking an event loop; without `start()`, reading a request's events drives the
  engine in the reader's thread (`stream()` and `generate()` below do that on a private engine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from gpts.errors import ContextTooLong, GptsError
from gpts.generate import (BLANK_FIX, DEFAULT_MAX_NEW_TOKENS, Completion, FinishReason, GenerationConfig, Prompt,
                           StreamEvent, TextStream, Timings, TopLogprobs, count_tokens, process_logits, sample,
                           seen_tokens)

if TYPE_CHECKING:
    from gpts.model import GPT
    from gpts.tokenizer import Tokenizer

DEFAULT_MAX_BATCH = 8  # sequences decoded together on a CPU: 8 streams cost little more than one (bench/serve.py)
DEFAULT_MAX_QUEUE = 64  # requests in flight beyond max_batch; one more is QueueFull (429)
PREFILL_CHUNK = 256  # prompt tokens prefilled per step: a long prompt delays running streams by one chunk at most
# When the engine falls idle, each slot keeps at most this many tokens of what it held (prefixes to reuse) and the
# cache shrinks to fit: one long request does not hold every slot's memory at its length for good.
IDLE_KEEP = 1024


class QueueFull(GptsError):
    """More requests wait for a slot than the engine queues (the server answers 429)."""


class EngineClosed(GptsError):
    """The engine is shutting down and takes no new requests (the server answers 503)."""


class TokenConstraint(Protocol):
    """What a sequence may say next (JSON mode: gpts.constrain)."""

    def mask(self) -> torch.Tensor | None: ...  # (V,) bool of the allowed next tokens; None: any

    def advance(self, token_id: int) -> None: ...

    def done(self) -> bool: ...  # the output is complete: the sequence ends with "stop"


# -- requests -------------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Sequence:
    request: EngineRequest
    index: int  # within the request: prompt_index * n + sample
    prompt: list[int]
    text: TextStream
    constraint: TokenConstraint | None
    slot: int = -1
    cache_n: int = 0  # prompt tokens reused from the prefix cache
    visited: bool = False  # its prefill has begun (the prefix to reuse is chosen on the first visit)
    prefilled: bool = False
    next_input: int = 0  # the token the next decode step feeds
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[TopLogprobs] = field(default_factory=list)
    finish_reason: FinishReason | None = None
    finished_at: float = 0.0

    @property
    def prompt_index(self) -> int:
        return self.index // self.request.config.num_return_sequences


class EngineRequest:
    """One submitted request: read its events from any thread or from asyncio; abort it from anywhere."""

    def __init__(self, engine: Engine, prompts: list[list[int]], config: GenerationConfig, steps: int,
                 eos_ids: list[int], logprobs: int | None, constraint: Callable[[], TokenConstraint] | None):
        self.engine, self.config, self.steps, self.logprobs = engine, config, steps, logprobs
        self.eos_ids = set(eos_ids)
        n = config.num_return_sequences
        self.seqs = [_Sequence(self, i, prompts[i // n], TextStream(engine.tokenizer, config.stop),
                               constraint() if constraint else None) for i in range(len(prompts) * n)]
        self.generator: torch.Generator | None = None
        self.seen: torch.Tensor | None = None  # (R, V) tokens in prompt and output: the repetition penalty
        self.counts: torch.Tensor | None = None  # (R, V) occurrences in the output: presence/frequency penalties
        self.admitted_at = self.first_token_at = 0.0
        self.running = False
        self.error: BaseException | None = None
        self._aborted = False
        self._buffer: deque[StreamEvent] = deque()
        self._cond = threading.Condition()
        self._wake: Callable[[], None] | None = None  # set by aevents(): wakes its event loop
        self._completions: list[Completion] | None = None

    @property
    def finished(self) -> bool:
        return self._completions is not None or self.error is not None

    @property
    def completions(self) -> list[Completion]:
        if self._completions is None:
            raise RuntimeError("The request has not finished yet.")
        return self._completions

    def abort(self) -> None:
        """Stop generating: the sequences still running end with "abort" at the engine's next step."""
        self._aborted = True
        self.engine._notify()

    def events(self) -> Iterator[StreamEvent]:
        """Events as they come, blocking; leaving early aborts the request."""
        try:
            while True:
                events, done = self._take()
                yield from events
                if done:
                    return
                if not events:
                    if self.engine.threaded:
                        with self._cond:
                            self._cond.wait_for(lambda: self._buffer or self.finished)
                    else:
                        self.engine.step()
        finally:
            if not self.finished:
                self.abort()

    async def aevents(self) -> AsyncIterator[StreamEvent]:
        """Events as they come, for asyncio (needs a started engine); leaving early aborts the request."""
        loop, wake = asyncio.get_running_loop(), asyncio.Event()
        self._wake = lambda: _call_soon(loop, wake.set)
        try:
            while True:
                events, done = self._take()
                for event in events:
                    yield event
                if done:
                    return
                if not events:
                    await wake.wait()
                    wake.clear()
        finally:
            self._wake = None
            if not self.finished:
                self.abort()

    def _take(self) -> tuple[list[StreamEvent], bool]:
        """The buffered events, and whether that is all there will be (raises the engine's error, if any)."""
        with self._cond:
            events, done = list(self._buffer), self.finished
            self._buffer.clear()
        if done and not events and self.error is not None:
            raise self.error
        return events, done

    def _deliver(self, events: list[StreamEvent], completions: list[Completion] | None = None,
                 error: BaseException | None = None) -> None:
        with self._cond:
            self._buffer.extend(events)
            if completions is not None:
                self._completions = completions
            if error is not None:
                self.error = error
            self._cond.notify_all()
        if self._wake is not None:
            self._wake()


# -- the engine -----------------------------------------------------------------------------------------------------


class Engine:
    def __init__(self, model: GPT, tokenizer: Tokenizer | None = None, max_batch: int = DEFAULT_MAX_BATCH,
                 max_queue: int = DEFAULT_MAX_QUEUE, prefill_chunk: int = PREFILL_CHUNK):
        if max_batch < 1 or max_queue < 0 or prefill_chunk < 1:
            raise GptsError(f"Invalid engine size: max_batch={max_batch}, max_queue={max_queue}.",
                            "max_batch (--max-batch) must be at least 1, max_queue (--max-queue) at least 0.")
        from gpts.model import SlotCache

        self.model, self.tokenizer = model, tokenizer
        self.max_batch, self.max_queue, self.prefill_chunk = max_batch, max_queue, prefill_chunk
        self.vocab = model.config.vocab_size
        self.context = model.config.context_length
        self.cache = SlotCache(model.config, max_batch, model.dtype, model.device)
        self.slots: list[_Sequence | None] = [None] * max_batch
        self.slot_tokens: list[list[int]] = [[] for _ in range(max_batch)]  # whose keys/values each slot holds
        self.waiting: deque[EngineRequest] = deque()
        self.active: list[EngineRequest] = []  # admitted: prefilling or running
        self.totals = {"prompt_tokens": 0, "generated_tokens": 0, "reused_prompt_tokens": 0}
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = self._stopping = False

    # -- the public side ----------------------------------------------------------------------------------------

    @property
    def threaded(self) -> bool:
        return self._thread is not None

    def submit(self, prompts: Prompt | Sequence[Prompt], config: GenerationConfig | None = None, *,
               logprobs: int | None = None, constraint: Callable[[], TokenConstraint] | None = None,
               **overrides: Any) -> EngineRequest:
        """Queue a request; everything wrong with it is an error here, before any event."""
        config = dataclasses.replace(config or GenerationConfig(), **overrides)
        config.validate()
        if config.stop and self.tokenizer is None:
            raise GptsError("Stop strings need a tokenizer.", "Pass the model's tokenizer, or drop `stop`.")
        if logprobs is not None and not (isinstance(logprobs, int) and 0 <= logprobs <= 20):
            raise GptsError(f"Invalid logprobs={logprobs!r}.", "Ask for 0 to 20 top log-probabilities.")
        ids = prompt_ids(prompts, self.tokenizer, self.vocab)
        rows = len(ids) * config.num_return_sequences
        if rows > self.max_batch:
            raise GptsError(f"The request needs {rows} sequences at once, but this engine decodes at most "
                            f"{self.max_batch}.", "Ask for fewer samples (n), or start it with a larger --max-batch.")
        ids, steps = self._fit_context(ids, config)
        request = EngineRequest(self, ids, config, steps, self._eos_ids(config), logprobs, constraint)
        with self._lock:
            if self._closed:
                raise EngineClosed("The engine is shutting down.", "Retry on another server, or after the restart.")
            if len(self.waiting) + len(self.active) >= self.max_batch + self.max_queue:
                raise QueueFull(f"The engine is full (requests running: {len(self.active)}, waiting: "
                                f"{len(self.waiting)}).", "Retry in a moment.")
            self.waiting.append(request)
            self._lock.notify_all()
        return request

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"max_batch": self.max_batch, "busy_slots": sum(s is not None for s in self.slots),
                    "waiting": len(self.waiting), "running": len(self.active), **self.totals}

    def start(self) -> Engine:
        """Run the loop on a daemon thread; requests are then read from other threads or from asyncio."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gpts-engine", daemon=True)
            self._thread.start()
        return self

    def shutdown(self, timeout: float = 30.0) -> None:
        """Take no new requests, let running ones finish for up to `timeout` seconds, abort the rest, stop."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            if self.threaded:
                self._lock.wait_for(lambda: not self._has_work(), timeout=max(0.0, deadline - time.monotonic()))
            for request in [*self.waiting, *self.active]:
                request._aborted = True
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:
            while self._has_work():
                self.step()

    # -- validation -----------------------------------------------------------------------------------------------

    def _eos_ids(self, config: GenerationConfig) -> list[int]:
        if config.ignore_eos:
            return []
        ids = config.eos_token_ids if config.eos_token_ids is not None else sorted(self.tokenizer.eos_ids) \
            if self.tokenizer is not None else []
        return [i for i in ids if i < self.vocab]  # others can never come

    def _fit_context(self, prompts: list[list[int]], config: GenerationConfig) -> tuple[list[list[int]], int]:
        """The prompts (truncated if asked) and the new tokens at most, the same for every row as in HF."""
        context, longest = self.context, max(len(p) for p in prompts)
        if config.max_new_tokens is not None:
            steps = config.max_new_tokens
        elif config.max_length is not None:
            steps = config.max_length - longest
            if steps < 1:
                raise GptsError(f"max_length={config.max_length} leaves no room for new tokens after the "
                                f"{longest}-token prompt.", "Raise max_length, or set max_new_tokens instead.")
        else:  # neither: a default that shrinks to what the context has left
            steps = max(1, min(DEFAULT_MAX_NEW_TOKENS, context - longest))
        if longest + steps <= context:
            return prompts, steps
        keep = context - steps
        if keep < 1:
            raise ContextTooLong(f"{steps} new tokens leave no room for a prompt in the model's {context}-token "
                                 "context.", f"Ask for at most {context - 1} new tokens.")
        if not config.truncate:
            asked = config.max_new_tokens is not None or config.max_length is not None
            new = count_tokens(steps, "new ") if asked else "at least one new token"
            raise ContextTooLong(f"A prompt of {count_tokens(longest)} plus {new} does not fit the model's context "
                                 f"of {count_tokens(context)}.",
                                 "Shorten the prompt, ask for fewer new tokens, or turn on truncation (--truncate), "
                                 "which drops the start of the prompt.")
        return [p[-keep:] for p in prompts], steps

    # -- the loop ---------------------------------------------------------------------------------------------------

    def _notify(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def _has_work(self) -> bool:
        return bool(self.waiting or self.active)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._has_work() or self._stopping)
                if self._stopping and not self._has_work():
                    return
            try:
                self.step()
            except Exception as e:  # a bug or out of memory: every request in flight gets the error, not a hang
                self._fail_all(e)
            with self._lock:
                self._lock.notify_all()  # shutdown() waits for the work to run out

    def _fail_all(self, error: BaseException) -> None:
        with self._lock:
            requests, self.waiting, self.active = [*self.waiting, *self.active], deque(), []
        for request in requests:
            for seq in request.seqs:
                if seq.slot >= 0 and self.slots[seq.slot] is seq:
                    self.slots[seq.slot], self.slot_tokens[seq.slot] = None, []
            request._deliver([], error=error)

    @torch.inference_mode()
    def step(self) -> None:
        """One iteration: drop aborted requests, admit waiting ones, prefill a chunk, decode one token for all."""
        self._drop_aborted()
        self._admit()
        self._prefill()
        self._decode()
        if not self.active and not self.waiting and self.cache.max_len > IDLE_KEEP:
            for held in self.slot_tokens:
                del held[IDLE_KEEP:]
            self.cache.shrink(max(64, *map(len, self.slot_tokens)))

    def _drop_aborted(self) -> None:
        with self._lock:
            gone = [r for r in self.waiting if r._aborted]
            self.waiting = deque(r for r in self.waiting if not r._aborted)
        for request in gone:
            self._finish_request(request, [], "abort")
        for request in [r for r in self.active if r._aborted]:
            self._finish_request(request, [], "abort")

    def _admit(self) -> None:
        """Waiting requests, first come first served, when all their sequences get a slot at once."""
        while True:
            with self._lock:
                free = [i for i, s in enumerate(self.slots) if s is None]
                if not self.waiting or len(self.waiting[0].seqs) > len(free):
                    return
                request = self.waiting.popleft()
                self.active.append(request)
            request.admitted_at = time.perf_counter()
            for seq in request.seqs:  # the free slot whose old contents share the most with the prompt
                seq.slot = max(free, key=lambda i: (_common_prefix(self.slot_tokens[i], seq.prompt), -i))
                free.remove(seq.slot)
                self.slots[seq.slot] = seq
            self._start_sampling(request)
            longest = max(len(s.prompt) for s in request.seqs)
            self.cache.ensure(min(self.context, longest + request.steps))

    def _start_sampling(self, request: EngineRequest) -> None:
        cfg, device = request.config, self.model.device
        if not cfg.greedy:
            request.generator = torch.Generator(device=device)
            if cfg.seed is None:
                request.generator.seed()
            else:
                request.generator.manual_seed(cfg.seed)
        if cfg.repetition_penalty != 1.0:
            request.seen = torch.cat([seen_tokens(torch.tensor([s.prompt], device=device), self.vocab)
                                      for s in request.seqs])
        if cfg.presence_penalty or cfg.frequency_penalty:
            request.counts = torch.zeros(len(request.seqs), self.vocab, device=device)

    def _prefill(self) -> None:
        """Up to `prefill_chunk` prompt tokens (all but each prompt's last), request by request in order."""
        budget = self.prefill_chunk
        for request in [r for r in self.active if not r.running]:
            for seq in request.seqs:
                if seq.prefilled:
                    continue
                if budget <= 0:
                    return
                budget -= self._prefill_chunk(seq, budget)
            if all(s.prefilled for s in request.seqs):
                request.running = True

    def _prefill_chunk(self, seq: _Sequence, budget: int) -> int:
        """Prefill part of one sequence's prompt; returns the tokens it computed."""
        slot, target = seq.slot, seq.prompt[:-1]
        if not seq.visited:  # copy the longest prefix any slot shares with the prompt (its own slot on a tie)
            seq.visited = True
            source = max(range(self.max_batch), key=lambda i: (_common_prefix(self.slot_tokens[i], target), i == slot))
            reuse = _common_prefix(self.slot_tokens[source], target)
            if source != slot:
                self.cache.copy(source, slot, reuse)
            self.slot_tokens[slot] = target[:reuse]
            seq.cache_n = reuse
            self.totals["reused_prompt_tokens"] += reuse
        held = self.slot_tokens[slot]
        start = len(held)
        chunk = target[start:start + budget]
        if chunk:
            idx = torch.tensor([chunk], device=self.model.device)
            self.model(idx, cache=self.cache.prefill(slot, start), last_only=True)
            held.extend(chunk)
        if len(held) == len(target):
            seq.prefilled, seq.next_input = True, seq.prompt[-1]
            self.totals["prompt_tokens"] += len(seq.prompt)
        return len(chunk)

    def _decode(self) -> None:
        """One token for every running sequence, in one forward pass over the slots [0, B)."""
        rows = [s for s in self.slots if s is not None and s.request.running and not s.finish_reason]
        if not rows:
            return
        device, B = self.model.device, max(s.slot for s in rows) + 1
        self.cache.ensure(max(len(self.slot_tokens[s.slot]) for s in rows) + 1)
        idx, cols = [0] * B, []
        for slot in range(B):  # rows that are not decoding compute a throwaway token just past what they hold
            held = self.slot_tokens[slot]
            if len(held) >= self.cache.max_len:
                del held[self.cache.max_len - 1:]
            cols.append(len(held))
        for seq in rows:
            idx[seq.slot] = seq.next_input
        S = max(cols[s.slot] for s in rows) + 1
        cols_t = torch.tensor(cols, device=device)
        mask = (torch.arange(S, device=device) <= cols_t[:, None])[:, None, None, :]  # (B, 1, 1, S)
        logits = self.model(torch.tensor(idx, device=device)[:, None], pos=cols_t[:, None],
                            cache=self.cache.decode(cols_t, S), mask=mask, last_only=True)[:, -1]  # (B, V)
        for seq in rows:
            self.slot_tokens[seq.slot].append(seq.next_input)
        now = time.perf_counter()
        for request in dict.fromkeys(s.request for s in rows):
            mine = [s for s in rows if s.request is request]
            tokens, logprobs = self._sample(request, mine, logits[[s.slot for s in mine]].float())
            self._emit(request, mine, tokens, logprobs, now)

    def _sample(self, request: EngineRequest, seqs: list[_Sequence],
                logits: torch.Tensor) -> tuple[list[int], list[tuple[float, TopLogprobs]] | None]:
        """The next token of each of a request's running sequences (logits (R', V)), and their logprobs."""
        cfg, rows = request.config, [s.index for s in seqs]
        logprobs = None
        if request.logprobs is not None:  # the model's own distribution, before any processor (as vLLM reports)
            raw = logits.log_softmax(-1)
        for i, seq in enumerate(seqs):
            allowed = seq.constraint.mask() if seq.constraint is not None else None
            if allowed is not None:
                logits[i, :len(allowed)].masked_fill_(~allowed.to(logits.device), -torch.inf)
                logits[i, len(allowed):] = -torch.inf
        seen = request.seen[rows] if request.seen is not None else None
        counts = request.counts[rows] if request.counts is not None else None
        processed = process_logits(logits, cfg, seen, counts)
        if cfg.greedy:
            tokens = processed.argmax(-1)
        else:
            tokens = sample(processed, request.generator, rows, len(request.seqs))
        tokens_list = tokens.tolist()
        if request.logprobs is not None:
            chosen = raw.gather(1, tokens[:, None]).squeeze(1).tolist()
            top = raw.topk(request.logprobs)
            tops = [tuple(zip(ids, values)) for ids, values in zip(top.indices.tolist(), top.values.tolist())]
            logprobs = list(zip(chosen, tops))
        return tokens_list, logprobs

    def _emit(self, request: EngineRequest, seqs: list[_Sequence], tokens: list[int],
              logprobs: list[tuple[float, TopLogprobs]] | None, now: float) -> None:
        if not request.first_token_at:
            request.first_token_at = now
        events = []
        for i, (seq, token) in enumerate(zip(seqs, tokens)):
            seq.token_ids.append(token)
            if request.seen is not None:
                request.seen[seq.index, token] = True
            if request.counts is not None:
                request.counts[seq.index, token] += 1
            if seq.constraint is not None:
                seq.constraint.advance(token)
            lp, top = logprobs[i] if logprobs is not None else (None, None)
            if logprobs is not None:
                seq.logprobs.append(lp)
                seq.top_logprobs.append(top)
            if token in request.eos_ids:
                text, reason = seq.text.finish(), "stop"
            else:
                text, stopped = seq.text.push(token)
                done = seq.constraint is not None and seq.constraint.done()
                reason = "stop" if stopped or done else "length" if len(seq.token_ids) >= request.steps else None
                if reason and not stopped:
                    text += seq.text.finish()
            seq.next_input = token
            if reason:
                seq.finish_reason, seq.finished_at = reason, now
                self.slots[seq.slot] = None
            events.append(StreamEvent(seq.index, token, text, reason, lp, top))
        self.totals["generated_tokens"] += len(tokens)
        if all(s.finish_reason for s in request.seqs):
            self._finish_request(request, events, None)
        else:
            request._deliver(events)

    def _finish_request(self, request: EngineRequest, events: list[StreamEvent], reason: FinishReason | None) -> None:
        now = time.perf_counter()
        for seq in request.seqs:
            if not seq.finish_reason:
                seq.finish_reason, seq.finished_at = reason or "abort", now
            if seq.slot >= 0 and self.slots[seq.slot] is seq:
                self.slots[seq.slot] = None
        with self._lock:
            if request in self.active:
                self.active.remove(request)
        first = request.first_token_at or now
        admitted = request.admitted_at or now
        completions = [
            Completion(s.index, s.prompt_index, s.text.text, s.token_ids, s.finish_reason,
                       Timings(len(s.prompt), (first - admitted) * 1000, len(s.token_ids),
                               max(0.0, s.finished_at - first) * 1000, s.cache_n),
                       s.logprobs if request.logprobs is not None else None,
                       s.top_logprobs if request.logprobs is not None else None)
            for s in request.seqs]
        request._deliver(events, completions)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], Any]) -> None:
    """Run callback on an event loop from another thread; a loop that has closed meanwhile wants nothing."""
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prompt_ids(prompts: Prompt | Sequence[Prompt], tokenizer: Tokenizer | None, vocab: int) -> list[list[int]]:
    """Prompts as lists of token ids: one prompt (text or ids) or several; empty or out-of-vocabulary is an error."""
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
            if tokenizer is None:
                raise GptsError("A text prompt needs a tokenizer.", "Pass the tokenizer, or token ids.")
            if not p.strip():
                raise GptsError("The prompt is blank.", BLANK_FIX)
            p = tokenizer.encode(p)
        ids = [int(t) for t in p]
        if not ids:
            raise GptsError("The prompt is empty (no tokens).",
                            "Give at least one token of prompt; the model needs something to continue.")
        if min(ids) < 0 or max(ids) >= vocab:
            raise GptsError(f"The prompt has token ids outside the vocabulary (0..{vocab - 1}).",
                            "The tokenizer and the model do not belong together.")
        out.append(ids)
    return out


# -- one request on a private engine, in the caller's thread ----------------------------------------------------------


class GenerationStream:
    """Iterate for `StreamEvent`s; afterwards `completions` holds the results. Everything that can be wrong with
    the request (settings, prompts, context) is an error when the stream is created, before any event."""

    def __init__(self, model: GPT, prompts: Prompt | Sequence[Prompt], config: GenerationConfig | None = None,
                 tokenizer: Tokenizer | None = None, **overrides: Any):
        config = dataclasses.replace(config or GenerationConfig(), **overrides)
        config.validate()
        rows = len(prompt_ids(prompts, tokenizer, model.config.vocab_size)) * config.num_return_sequences
        self.request = Engine(model, tokenizer, max_batch=rows, max_queue=0).submit(prompts, config)

    def __iter__(self) -> Iterator[StreamEvent]:
        return self.request.events()

    @property
    def completions(self) -> list[Completion]:
        return self.request.completions


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
