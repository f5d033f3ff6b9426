"""Generation against transformers as the reference: greedy and seeded sampling token for token, each logits
processor against its transformers twin, and the bookkeeping around them (lengths, stops, streaming, errors)."""

import math

import pytest
import torch

from gpts.config import Config
from gpts.errors import GptsError
from gpts.engine import GenerationStream, generate, stream
from gpts.generate import (GenerationConfig, min_p_filter, process_logits, repetition_penalty, sample,
                           seen_tokens, top_k_filter, top_p_filter)
from gpts.model import GPT
from gpts.tokenizer import Tokenizer
from gpts.weights.hf import read_hf_dir

transformers = pytest.importorskip("transformers")
from transformers.generation import logits_process as hf_lp  # noqa: E402

VOCAB = 101


# -- tiny transformers models and their gpts twins ---------------------------------------------------


# A large initializer_range makes the random models' continuations varied rather than one token repeated.
def hf_gpt2():
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                  initializer_range=0.5, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg)


def hf_llama():
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                   tie_word_embeddings=False, initializer_range=0.5, bos_token_id=0,
                                   eos_token_id=0)
    return transformers.LlamaForCausalLM(cfg)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory):
    """A transformers model and the same weights in gpts, through the Hugging Face importer."""
    torch.manual_seed(0)
    hf = (hf_gpt2 if request.param == "gpt2" else hf_llama)().eval()
    path = tmp_path_factory.mktemp(request.param)
    hf.save_pretrained(path)
    ckpt = read_hf_dir(path)
    return hf, GPT.from_state_dict(ckpt.config, ckpt.state_dict).eval()


PROMPTS = [[5, 17, 33, 2, 81, 9, 44], [12, 7], [60, 61, 62, 63, 1]]


def hf_generate(hf, prompts, **kwargs):
    """transformers' generate on left-padded prompts; the new tokens of each row, cut after its eos."""
    L = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in prompts])
    eos = kwargs.pop("eos_token_id", None)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, pad_token_id=0, eos_token_id=eos, **kwargs)
    rows = []
    for row in out[:, L:].tolist():
        if eos is not None and eos in row:
            row = row[:row.index(eos) + 1]
        rows.append(row)
    return rows


# -- token for token against transformers -------------------------------------------------------------


def test_greedy_single_prompt_equals_transformers(pair):
    hf, model = pair
    want = hf_generate(hf, PROMPTS[:1], max_new_tokens=20, do_sample=False)
    got = generate(model, PROMPTS[0], max_new_tokens=20, temperature=0)
    assert [c.token_ids for c in got] == want
    assert got[0].finish_reason == "length" and got[0].prompt_tokens == len(PROMPTS[0])


def test_greedy_batch_with_left_padding_and_eos_equals_transformers(pair):
    hf, model = pair
    free = hf_generate(hf, PROMPTS, max_new_tokens=12, do_sample=False)
    eos = next(t for t in free[0][2:] if t not in free[0][:2])  # the first row stops mid-way
    want = hf_generate(hf, PROMPTS, max_new_tokens=12, do_sample=False, eos_token_id=eos)
    got = generate(model, PROMPTS, max_new_tokens=12, temperature=0, eos_token_ids=[eos])
    assert [c.token_ids for c in got] == want
    assert 3 <= len(got[0].token_ids) < 12 and got[0].token_ids[-1] == eos
    assert any(len(w) == 12 for w in want)  # and some row goes on to the end
    assert [c.finish_reason for c in got] == ["stop" if w[-1] == eos else "length" for w in want]


def test_greedy_with_repetition_penalty_equals_transformers(pair):
    hf, model = pair
    want = hf_generate(hf, PROMPTS, max_new_tokens=15, do_sample=False, repetition_penalty=1.3)
    got = generate(model, PROMPTS, max_new_tokens=15, temperature=0, repetition_penalty=1.3)
    assert [c.token_ids for c in got] == want


def test_seeded_sampling_equals_transformers(pair):
    """Same seed, same draws: transformers samples with the global generator, we with our own seeded one. (With
    filters that leave few candidates gpts draws among those alone: the same distribution, other draws; tested
    below and in test_few_candidates_are_drawn_in_proportion.)"""
    hf, model = pair
    settings = dict(temperature=0.8, top_k=0, repetition_penalty=1.1)
    torch.manual_seed(1234)
    want = hf_generate(hf, PROMPTS, max_new_tokens=15, do_sample=True, num_return_sequences=2, **settings)
    got = generate(model, PROMPTS, max_new_tokens=15, seed=1234, num_return_sequences=2, **settings)
    assert [c.token_ids for c in got] == want


def test_max_length_counts_the_longest_prompt_like_transformers(pair):
    hf, model = pair
    want = hf_generate(hf, PROMPTS, max_length=15, do_sample=False)
    got = generate(model, PROMPTS, max_length=15, temperature=0)
    assert [c.token_ids for c in got] == want
    assert all(len(c.token_ids) == 15 - 7 for c in got)
    # max_new_tokens wins when both are given
    assert len(generate(model, PROMPTS[0], max_length=15, max_new_tokens=3, temperature=0)[0].token_ids) == 3


# -- each logits processor against its transformers twin ----------------------------------------------


def test_few_candidates_are_drawn_in_proportion():
    """The cheap draw among the tokens top-k left: each candidate as often as its probability says, no other."""
    logits = torch.full((20000, 100), -math.inf)
    logits[:, [7, 30, 61]] = torch.tensor([0.0, 1.0, 2.0])
    drawn = sample(logits, torch.Generator().manual_seed(0), list(range(20000)), 20000)
    counts = torch.bincount(drawn, minlength=100).float() / 20000
    assert set(drawn.unique().tolist()) == {7, 30, 61}
    torch.testing.assert_close(counts[[7, 30, 61]], torch.tensor([0.0, 1.0, 2.0]).softmax(0), atol=0.015, rtol=0)


def random_logits(seed=0, shape=(4, 50)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g) * 3
    logits[0, :10] = logits[0, 0]  # ties at the top
    logits[1, 5:25] = 0.5  # ties in the middle
    logits[2] = 1.0  # all equal
    return logits


@pytest.mark.parametrize("k", [1, 3, 10, 49, 50, 1000])
def test_top_k_equals_transformers(k):
    logits = random_logits(k)
    torch.testing.assert_close(top_k_filter(logits, k), hf_lp.TopKLogitsWarper(k)(None, logits.clone()))


@pytest.mark.parametrize("p", [0.01, 0.3, 0.5, 0.9, 0.999, 1.0])
def test_top_p_equals_transformers(p):
    logits = random_logits(int(p * 100))
    got = top_p_filter(logits, p)
    torch.testing.assert_close(got, hf_lp.TopPLogitsWarper(p)(None, logits.clone()))
    assert (got > -torch.inf).sum(-1).min() >= 1
    if p == 1.0:
        torch.testing.assert_close(got, logits)


@pytest.mark.parametrize("min_p", [0.0, 0.05, 0.5, 0.99, 1.0])
def test_min_p_equals_transformers(min_p):
    logits = random_logits(7)
    torch.testing.assert_close(min_p_filter(logits, min_p), hf_lp.MinPLogitsWarper(min_p)(None, logits.clone()))


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_equals_transformers(penalty):
    logits = random_logits(3)
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    ids[0, :4] = 7  # repeats count once
    want = hf_lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    torch.testing.assert_close(repetition_penalty(logits, seen_tokens(ids, 50), penalty), want)


def test_repetition_penalty_ignores_left_padding():
    logits = random_logits(4)
    ids = torch.tensor([[3, 3, 3, 8, 9], [1, 2, 3, 4, 5], [0, 0, 0, 0, 6], [0, 1, 0, 1, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    hf_penalty = hf_lp.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=torch.tensor([2, 0, 4, 0]))
    want = hf_penalty(ids, logits.clone())
    torch.testing.assert_close(repetition_penalty(logits, seen_tokens(ids, 50, mask), 1.5), want)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 1.7])
def test_the_whole_chain_equals_transformers(temperature):
    logits = random_logits(11)
    ids = torch.randint(0, 50, (4, 6), generator=torch.Generator().manual_seed(2))
    cfg = GenerationConfig(temperature=temperature, top_k=30, top_p=0.8, min_p=0.1, repetition_penalty=1.2)
    chain = hf_lp.LogitsProcessorList([hf_lp.RepetitionPenaltyLogitsProcessor(1.2),
                                       hf_lp.TemperatureLogitsWarper(temperature), hf_lp.TopKLogitsWarper(30),
                                       hf_lp.TopPLogitsWarper(0.8), hf_lp.MinPLogitsWarper(0.1)])
    torch.testing.assert_close(process_logits(logits, cfg, seen_tokens(ids, 50)), chain(ids, logits.clone()))


# -- lengths, seeds, shapes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(Config.from_name("gpt2-nano", vocab_size=VOCAB, context_length=64)).eval()


def test_same_seed_same_tokens_different_seeds_differ(model):
    runs = [generate(model, PROMPTS[0], max_new_tokens=20, seed=s)[0].token_ids for s in (1, 1, 2)]
    assert runs[0] == runs[1] != runs[2]
    unseeded = [generate(model, PROMPTS[0], max_new_tokens=20)[0].token_ids for _ in range(2)]
    assert unseeded[0] != unseeded[1]


def test_num_return_sequences(model):
    out = generate(model, PROMPTS, max_new_tokens=6, num_return_sequences=3, seed=0)
    assert [(c.index, c.prompt_index) for c in out] == [(i, i // 3) for i in range(9)]
    assert all(len(c.token_ids) == 6 and c.finish_reason == "length" for c in out)
    assert len({tuple(c.token_ids) for c in out[:3]}) > 1  # the samples of one prompt differ
    assert [c.prompt_tokens for c in out] == [len(PROMPTS[i // 3]) for i in range(9)]


def test_ignore_eos(model):
    free = generate(model, PROMPTS[0], max_new_tokens=10, temperature=0)[0].token_ids
    stopped = generate(model, PROMPTS[0], max_new_tokens=10, temperature=0, eos_token_ids=[free[2]])[0]
    assert stopped.token_ids == free[:free.index(free[2]) + 1] and stopped.finish_reason == "stop"
    ignored = generate(model, PROMPTS[0], max_new_tokens=10, temperature=0, eos_token_ids=[free[2]], ignore_eos=True)
    assert ignored[0].token_ids == free and ignored[0].finish_reason == "length"


def test_stream_events_match_completions(model):
    events = stream(model, PROMPTS, max_new_tokens=8, seed=3, num_return_sequences=2)
    seen: dict[int, list[int]] = {}
    for e in events:
        seen.setdefault(e.index, []).append(e.token_id)
    assert seen == {c.index: c.token_ids for c in events.completions}


def test_timings(model):
    c = generate(model, PROMPTS[0], max_new_tokens=5, temperature=0)[0]
    t = c.timings
    assert (t.prompt_n, t.predicted_n) == (7, 5)
    assert t.prompt_ms > 0 and t.predicted_ms > 0 and t.predicted_per_second > 0
    assert set(t.to_dict()) >= {"prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "predicted_per_second"}


# -- the context ----------------------------------------------------------------------------------------


def test_context_overflow_is_an_error_or_truncates(model):
    prompt = list(range(1, 61))  # 60 of the 64 positions
    with pytest.raises(GptsError, match="prompt of 60 tokens plus 10 new tokens does not fit.* context of 64 tokens"):
        generate(model, prompt, max_new_tokens=10)
    with pytest.raises(GptsError, match="prompt of 64 tokens plus at least one new token does not fit"):
        generate(model, list(range(1, 65)))
    out = generate(model, prompt, max_new_tokens=10, temperature=0, truncate=True)[0]
    assert out.prompt_tokens == 54 and len(out.token_ids) == 10
    assert out.token_ids == generate(model, prompt[-54:], max_new_tokens=10, temperature=0)[0].token_ids
    with pytest.raises(GptsError, match="no room") as e:
        generate(model, prompt, max_new_tokens=64, truncate=True)
    assert e.value.fix == "Ask for at most 63 new tokens."


def test_default_length_fits_the_context(model):
    out = generate(model, list(range(1, 61)), temperature=0)[0]
    assert len(out.token_ids) == 4 and out.finish_reason == "length"


# -- validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                                 dict(min_p=1.5), dict(min_p=-0.1), dict(repetition_penalty=0.0),
                                 dict(max_new_tokens=0), dict(max_length=0), dict(num_return_sequences=0),
                                 dict(stop=[""]), dict(temperature=float("nan")), dict(top_k=2.5),
                                 dict(temperature=1e-40), dict(repetition_penalty=1e-40), dict(seed=-1),
                                 dict(seed=2**64)])
def test_invalid_settings_are_clear_errors(model, bad):
    name = next(iter(bad))
    with pytest.raises(GptsError, match=name) as e:
        generate(model, PROMPTS[0], **bad)
    assert f"--{name.replace('_', '-')}" in e.value.fix  # the flag to change, for CLI users


def test_the_smallest_temperature_and_penalty_sample_without_overflow(model):
    out = generate(model, PROMPTS[0], max_new_tokens=4, temperature=1e-6, repetition_penalty=1e-6, seed=0)[0]
    greedy = generate(model, PROMPTS[0], max_new_tokens=4, temperature=0, repetition_penalty=1e-6)[0]
    assert out.token_ids == greedy.token_ids


def test_bad_prompts_are_clear_errors(model):
    with pytest.raises(GptsError, match="empty"):
        generate(model, [[]])
    with pytest.raises(GptsError, match="No prompt"):
        generate(model, [])
    with pytest.raises(GptsError, match="vocabulary"):
        generate(model, [VOCAB])
    with pytest.raises(GptsError, match="tokenizer"):
        generate(model, "hello")
    with pytest.raises(GptsError, match="tokenizer"):
        generate(model, PROMPTS[0], stop=["x"])
    with pytest.raises(GptsError, match="max_length"):
        generate(model, PROMPTS[0], max_length=7)


def test_from_dict_reads_generation_config_json():
    cfg = GenerationConfig.from_dict({"eos_token_id": 2, "do_sample": False, "temperature": 0.6, "top_p": 0.9,
                                      "transformers_version": "4.45", "pad_token_id": None, "stop_strings": "###"})
    assert (cfg.eos_token_ids, cfg.temperature, cfg.top_p, cfg.stop) == ([2], 0.0, 0.9, ["###"])
    sampling = GenerationConfig.from_dict({"eos_token_id": [1, 2], "do_sample": True, "temperature": 0.6})
    assert (sampling.eos_token_ids, sampling.temperature) == ([1, 2], 0.6)


# -- text: a tiny real tokenizer, and a model that says what it is told ----------------------------------


@pytest.fixture(scope="module")
def tok():
    import tokenizers
    from tokenizers import decoders, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(tokenizers.models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["Hello world, the end of the story.", "The quick brown fox jumps over the dog.",
                                 "Stop here ### and there."] * 10, trainer)
    return Tokenizer(backend, eos_token="<|endoftext|>")


class Scripted(torch.nn.Module):
    """Stands in for a GPT: batch row r says scripts[r], one token per forward call, then its last token again."""

    def __init__(self, scripts: list[list[int]], vocab_size: int):
        super().__init__()
        self.config = Config(vocab_size=vocab_size, context_length=128, n_layer=1, n_head=1, n_embd=4)
        self.scripts, self.calls = scripts, 0
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    device = property(lambda self: self.anchor.device)
    dtype = property(lambda self: self.anchor.dtype)

    def forward(self, idx, pos=None, cache=None, key_mask=None, last_only=False, mask=None):
        if mask is None:  # the engine's prefill, whose logits it never reads
            return torch.zeros(idx.shape[0], 1, self.config.vocab_size)
        step, self.calls = self.calls, self.calls + 1
        logits = torch.zeros(idx.shape[0], 1, self.config.vocab_size)
        for row, script in enumerate(self.scripts[:idx.shape[0]]):  # row = the engine's slot = the prompt's index
            logits[row, 0, script[min(step, len(script) - 1)]] = 1
        return logits


def say(tok, *texts, eos=False):
    """A Scripted model that says each text (one per prompt), then eos if asked."""
    scripts = [tok.encode(t) + ([tok.eos_id] if eos else []) for t in texts]
    return Scripted(scripts, tok.vocab_size), max(len(s) for s in scripts)


def run(model, tok, prompts=((1,),), **options):
    events = stream(model, [list(p) for p in prompts], tokenizer=tok, temperature=0, **options)
    deltas = [(e.index, e.text) for e in events]
    for c in events.completions:  # streaming text is the final text
        assert "".join(t for i, t in deltas if i == c.index) == c.text
    return events.completions, [t for i, t in deltas if i == 0]


def test_stop_string_spanning_tokens_cuts_the_text_before_it(tok):
    model, n = say(tok, "Hello world, the end of the story.")
    [c], deltas = run(model, tok, stop=[", the"], max_new_tokens=n)
    assert (c.text, c.finish_reason) == ("Hello world", "stop")
    assert tok.decode(c.token_ids).endswith(", the")  # the tokens that made the stop string are kept
    assert deltas == ["Hello", " world", "", ""]  # "," and " the" were held back, then dropped


def test_the_first_stop_string_wins(tok):
    model, n = say(tok, "Hello world, the end of the story.")
    assert run(model, tok, stop=["end", "world", "Hello world, the end"], max_new_tokens=n)[0][0].text == "Hello "


def test_a_stop_string_prefix_that_does_not_complete_is_released(tok):
    model, n = say(tok, "Hello world, the end of the story.", eos=True)
    [c], deltas = run(model, tok, stop=[", them"], max_new_tokens=n + 5)
    assert (c.text, c.finish_reason) == ("Hello world, the end of the story.", "stop")
    assert deltas[:5] == ["Hello", " world", "", "", ", the end"]
    assert c.token_ids[-1] == tok.eos_id  # the tokenizer's eos ended it; its text is not part of the text


def test_text_held_back_at_the_length_limit_is_released(tok):
    model, _ = say(tok, "Hello world, the end")
    [c], _ = run(model, tok, stop=[", them"], max_new_tokens=4)
    assert (c.text, c.finish_reason) == ("Hello world, the", "length")
    [c], _ = run(say(tok, "Hello world, the end")[0], tok, stop=[", the"], max_new_tokens=4)
    assert (c.text, c.finish_reason) == ("Hello world", "stop")  # completed by the very last token


def test_streaming_never_splits_a_utf8_character(tok):
    text = "café 🙂 naïve"
    model, n = say(tok, text)
    assert any(tok.decode([i]) == "\ufffd" for i in tok.encode(text))  # the tokens do split characters
    [c], deltas = run(model, tok, max_new_tokens=n)
    assert c.text == text and all("\ufffd" not in d for d in deltas)
    assert run(say(tok, text)[0], tok, stop=["🙂"], max_new_tokens=n)[0][0].text == "café "


def test_rows_finish_on_their_own(tok):
    model, n = say(tok, "Hello world, the end", "The quick brown fox jumps", "Stop here ### and there.", eos=True)
    out, _ = run(model, tok, prompts=[[1], [2, 3], [4, 5, 6]], stop=["###", "fox"], max_new_tokens=n)
    assert [(c.text, c.finish_reason) for c in out] == [
        ("Hello world, the end", "stop"), ("The quick brown ", "stop"), ("Stop here ", "stop")]
    assert [c.timings.predicted_n for c in out] == [len(c.token_ids) for c in out]
    assert len(out[0].token_ids) == len(tok.encode("Hello world, the end")) + 1


def test_text_prompts_and_streaming_with_a_real_model(tok):
    torch.manual_seed(0)
    model = GPT(Config.from_name("gpt2-nano", vocab_size=tok.vocab_size, context_length=64)).eval()
    prompts = ["Hello world", "The quick brown fox jumps over"]
    for seed in range(3):
        events = stream(model, prompts, tokenizer=tok, max_new_tokens=12, seed=seed, num_return_sequences=2)
        texts: dict[int, str] = {}
        for e in events:
            texts[e.index] = texts.get(e.index, "") + e.text
        for c in events.completions:
            assert texts[c.index] == c.text == tok.decode(c.token_ids, skip_special=True)
            assert c.prompt_tokens == len(tok.encode(prompts[c.prompt_index]))
