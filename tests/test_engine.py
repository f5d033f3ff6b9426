"""The batching engine: requests join and leave a running batch, and a request's tokens never depend on its
neighbours (greedy and seeded sampling, alone and in a busy batch), aborts free slots, prefixes are reused."""

import asyncio

import pytest
import torch

from gpts.config import Config
from gpts.engine import ContextTooLong, Engine, EngineClosed, QueueFull, generate
from gpts.errors import GptsError
from gpts.generate import GenerationConfig, presence_frequency_penalty, process_logits

VOCAB = 97
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest, and immune to busy cores

PROMPTS = [[5, 17, 33, 2, 81, 9, 44], [12, 7], [60, 61, 62, 63, 1, 2, 3, 4, 5, 6, 7, 8, 9], [3], [40, 41, 42]]


@pytest.fixture(scope="module", params=["gpt2-nano", "llama-nano"])
def model(request):
    """A tiny float32 model with large weights, so that its continuations vary rather than repeat one token."""
    from gpts.model import GPT

    torch.manual_seed(0)
    gpt = GPT(Config.from_name(request.param, vocab_size=VOCAB, context_length=96)).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            if p.dim() > 1:
                p.mul_(20)
    return gpt


def alone(model, prompt, **settings):
    return generate(model, prompt, max_new_tokens=12, **settings)[0]


def drain(engine, requests):
    while not all(r.finished for r in requests):
        engine.step()
    return [r.completions for r in requests]


SETTINGS = [dict(temperature=0), dict(seed=3), dict(seed=4, top_p=0.8, temperature=0.7),
            dict(temperature=0, repetition_penalty=1.3), dict(seed=5, top_k=5, presence_penalty=1.0,
                                                             frequency_penalty=0.5)]


def test_a_request_gives_the_same_tokens_alone_and_in_a_busy_batch(model):
    """Mixed settings, more requests than slots, requests joining while others run: each gets what it gets alone."""
    expected = [alone(model, p, **s) for p, s in zip(PROMPTS, SETTINGS)]
    engine = Engine(model, max_batch=3, prefill_chunk=4)
    first = [engine.submit(p, max_new_tokens=12, **s) for p, s in zip(PROMPTS[:2], SETTINGS[:2])]
    for _ in range(3):  # the first two are decoding when the others arrive
        engine.step()
    later = [engine.submit(p, max_new_tokens=12, **s) for p, s in zip(PROMPTS[2:], SETTINGS[2:])]
    assert engine.stats()["waiting"] >= 1  # 5 requests, 3 slots: some wait for a slot to free
    got = [c[0] for c in drain(engine, first + later)]
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    assert engine.stats()["busy_slots"] == 0


def test_many_samples_of_many_prompts_match_their_own_run(model):
    expected = generate(model, PROMPTS[:3], max_new_tokens=10, seed=7, num_return_sequences=2)
    engine = Engine(model, max_batch=8)
    noise = engine.submit(PROMPTS[3], max_new_tokens=30, seed=1)
    engine.step()
    request = engine.submit(PROMPTS[:3], max_new_tokens=10, seed=7, num_return_sequences=2)
    drain(engine, [noise, request])
    assert [c.token_ids for c in request.completions] == [c.token_ids for c in expected]
    assert [c.prompt_index for c in request.completions] == [0, 0, 1, 1, 2, 2]


def test_rows_leave_the_batch_when_they_finish(model):
    short = alone(model, PROMPTS[0], temperature=0)
    engine = Engine(model, max_batch=2)
    a = engine.submit(PROMPTS[0], max_new_tokens=3, temperature=0)
    b = engine.submit(PROMPTS[1], max_new_tokens=12, temperature=0)
    while not a.finished:
        engine.step()
    assert a.completions[0].token_ids == short.token_ids[:3]
    assert a.completions[0].finish_reason == "length"
    assert engine.stats()["busy_slots"] == 1  # a's slot is free while b runs on
    drain(engine, [b])
    assert b.completions[0].token_ids == alone(model, PROMPTS[1], temperature=0).token_ids


def test_abort_frees_the_slot_at_the_next_step_and_others_go_on(model):
    engine = Engine(model, max_batch=2)
    a = engine.submit(PROMPTS[0], max_new_tokens=50, temperature=0)
    b = engine.submit(PROMPTS[1], max_new_tokens=12, temperature=0)
    engine.step()
    engine.step()
    a.abort()
    engine.step()
    assert a.finished and a.completions[0].finish_reason == "abort"
    assert engine.stats()["busy_slots"] == 1
    c = engine.submit(PROMPTS[2], max_new_tokens=12, temperature=0)  # takes a's slot
    drain(engine, [b, c])
    assert b.completions[0].token_ids == alone(model, PROMPTS[1], temperature=0).token_ids
    assert c.completions[0].token_ids == alone(model, PROMPTS[2], temperature=0).token_ids


def test_a_disconnected_async_reader_frees_its_slot(model):
    """The server's case: the client goes away mid-stream, its reader is closed, the slot is free."""
    engine = Engine(model, max_batch=2).start()

    async def read_three():
        request = engine.submit(PROMPTS[0], max_new_tokens=80, temperature=0, ignore_eos=True)
        events = request.aevents()
        got = [await events.__anext__() for _ in range(3)]
        await events.aclose()  # what a cancelled streaming response does
        return request, got

    request, got = asyncio.run(read_three())
    assert len(got) == 3
    other = engine.submit(PROMPTS[1], max_new_tokens=5, temperature=0)
    assert [e.token_id for e in other.events()] == alone(model, PROMPTS[1], temperature=0).token_ids[:5]
    assert request.finished and request.completions[0].finish_reason == "abort"
    assert engine.stats()["busy_slots"] == 0
    engine.shutdown()


def test_threaded_engine_serves_concurrent_asyncio_readers(model):
    engine = Engine(model, max_batch=4).start()

    async def one(prompt, settings):
        request = engine.submit(prompt, max_new_tokens=12, **settings)
        return [e.token_id async for e in request.aevents()]

    async def all_of_them():
        return await asyncio.gather(*(one(p, s) for p, s in zip(PROMPTS, SETTINGS)))

    got = asyncio.run(all_of_them())
    engine.shutdown()
    assert got == [alone(model, p, **s).token_ids for p, s in zip(PROMPTS, SETTINGS)]


def test_prefix_reuse_skips_the_shared_prompt_and_changes_nothing(model):
    system = list(range(10, 40))
    engine = Engine(model, max_batch=2, prefill_chunk=8)
    first = engine.submit(system + [50, 51], max_new_tokens=4, temperature=0)
    drain(engine, [first])
    second = engine.submit(system + [52, 53, 54], max_new_tokens=8, temperature=0)
    drain(engine, [second])
    assert first.completions[0].timings.cache_n == 0
    assert second.completions[0].timings.cache_n == len(system)
    assert engine.stats()["reused_prompt_tokens"] == len(system)
    assert second.completions[0].token_ids == alone(model, system + [52, 53, 54], temperature=0).token_ids[:8]


def test_an_idle_engine_gives_back_a_long_requests_memory_and_keeps_the_prefix(model, monkeypatch):
    monkeypatch.setattr("gpts.engine.IDLE_KEEP", 24)
    engine = Engine(model, max_batch=2)
    prompt = list(range(1, 31))
    drain(engine, [engine.submit(prompt, max_new_tokens=60, temperature=0, ignore_eos=True)])
    assert engine.cache.max_len == 64  # 90 tokens were held; the first 24 stay, in the smallest cache
    again = engine.submit(prompt, max_new_tokens=5, temperature=0)
    drain(engine, [again])
    assert again.completions[0].timings.cache_n == 24
    assert again.completions[0].token_ids == alone(model, prompt, temperature=0).token_ids[:5]


def test_samples_of_one_prompt_share_its_prefill(model):
    engine = Engine(model, max_batch=4)
    request = engine.submit(PROMPTS[2], max_new_tokens=4, seed=1, num_return_sequences=4)
    drain(engine, [request])
    assert [c.timings.cache_n for c in request.completions] == [0] + [len(PROMPTS[2]) - 1] * 3


def test_logprobs_are_the_models_own(model):
    request = Engine(model).submit(PROMPTS[0], max_new_tokens=5, seed=2, temperature=0.8, logprobs=3)
    events = list(request.events())
    tokens = [e.token_id for e in events]
    with torch.no_grad():
        logits = model(torch.tensor([PROMPTS[0] + tokens]))[0, len(PROMPTS[0]) - 1:-1].log_softmax(-1)
    expected = logits.gather(1, torch.tensor(tokens)[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor([e.logprob for e in events]), expected, atol=1e-4, rtol=1e-4)
    for e, row in zip(events, logits):
        assert [t for t, _ in e.top_logprobs] == row.topk(3).indices.tolist()
    assert request.completions[0].logprobs == [e.logprob for e in events]


def test_presence_and_frequency_penalties_are_openais():
    logits, counts = torch.zeros(1, 4), torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    got = presence_frequency_penalty(logits, counts, presence=0.5, frequency=0.25)
    assert got.tolist() == [[0.0, -0.75, -1.25, 0.0]]
    cfg = GenerationConfig(temperature=0, presence_penalty=0.5, frequency_penalty=0.25)
    assert process_logits(logits, cfg, counts=counts).tolist() == got.tolist()


class AllowOnly:
    """A constraint that allows one token, then says it is done."""

    def __init__(self, token):
        self.token, self.said = token, False

    def mask(self):
        allowed = torch.zeros(VOCAB, dtype=torch.bool)
        allowed[self.token] = True
        return allowed

    def advance(self, token_id):
        assert token_id == self.token
        self.said = True

    def done(self):
        return self.said


def test_a_constraint_decides_the_tokens_and_the_end(model):
    request = Engine(model).submit(PROMPTS[0], max_new_tokens=10, seed=1, constraint=lambda: AllowOnly(42))
    assert [e.token_id for e in request.events()] == [42]
    assert request.completions[0].finish_reason == "stop"


def test_full_queue_closed_engine_and_oversized_requests_are_errors(model):
    engine = Engine(model, max_batch=1, max_queue=1)
    engine.submit(PROMPTS[0], max_new_tokens=2)
    engine.submit(PROMPTS[1], max_new_tokens=2)
    with pytest.raises(QueueFull):
        engine.submit(PROMPTS[2], max_new_tokens=2)
    with pytest.raises(GptsError, match="at most 1"):
        Engine(model, max_batch=1).submit(PROMPTS[0], num_return_sequences=2)
    with pytest.raises(ContextTooLong):
        engine.submit(list(range(90)), max_new_tokens=10)
    engine.shutdown(timeout=0)
    with pytest.raises(EngineClosed):
        engine.submit(PROMPTS[0])


def test_shutdown_lets_running_requests_finish(model):
    engine = Engine(model, max_batch=2).start()
    request = engine.submit(PROMPTS[0], max_new_tokens=6, temperature=0)
    engine.shutdown(timeout=60)
    assert request.completions[0].finish_reason in ("length", "stop")
    assert request.completions[0].token_ids == alone(model, PROMPTS[0], temperature=0).token_ids[:6]


def test_an_engine_error_reaches_every_reader(model):
    engine = Engine(model, max_batch=2).start()

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    engine.model = type("Broken", (), {"__call__": broken, "config": model.config, "device": model.device})()
    request = engine.submit(PROMPTS[0], max_new_tokens=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        list(request.events())
    engine.shutdown()


@pytest.mark.slow
def test_the_bundled_model_says_the_same_alone_and_in_a_batch(bundled_gguf):
    from gpts.api import load

    lm = load("default")
    questions = ["What is the capital of France?", "Name three colors.", "Write a haiku about rain.",
                 "What is 2 + 2?"]
    prompts = [lm.chat_prompt(q) for q in questions]
    expected = [lm.generate(p, max_new_tokens=24, temperature=0)[0].text for p in prompts]
    engine = Engine(lm.gpt, lm.tokenizer, max_batch=4)
    requests = [engine.submit(p, lm.generation_config(max_new_tokens=24, temperature=0)) for p in prompts]
    drain(engine, requests)
    assert [r.completions[0].text for r in requests] == expected
