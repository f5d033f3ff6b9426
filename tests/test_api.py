"""The Python API end to end on the bundled model: reference -> conversion cache -> our tokenizer, chat
template and generation loop, against transformers' greedy generate() on the same GGUF."""

import pytest
import torch

import gpts
from gpts import paths
from gpts.errors import GptsError

from helpers import tiny_model

CHAT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
RAW = "The history of the printing press begins in"


@pytest.fixture(scope="module")
def smol():
    return gpts.load("default")


def hf_greedy(hf, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        return hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           do_sample=False, max_new_tokens=n)[0, len(ids):].tolist()


@pytest.mark.slow
def test_chat_and_raw_greedy_match_transformers(smol, hf_smollm2):
    hf, hf_tok = hf_smollm2
    chat_ids = hf_tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert smol.chat_prompt(CHAT) == list(chat_ids)
    reply = smol.chat(CHAT, temperature=0, max_new_tokens=64)
    assert reply.token_ids == hf_greedy(hf, list(chat_ids), 64)[:len(reply.token_ids)]
    assert len(reply.token_ids) >= 48
    assert reply.text == hf_tok.decode(reply.token_ids, skip_special_tokens=True)

    raw_ids = hf_tok(RAW, add_special_tokens=False).input_ids
    raw = smol.generate(RAW, temperature=0, max_new_tokens=48, ignore_eos=True)[0]
    assert raw.token_ids == hf_greedy(hf, raw_ids, 48)


@pytest.mark.slow
def test_batch_of_different_lengths_equals_one_by_one(smol):
    prompts = [RAW, "Hi", smol.tokenizer.apply_chat_template(CHAT)]
    batch = smol.generate(prompts, temperature=0, max_new_tokens=24, ignore_eos=True)
    for prompt, completion in zip(prompts, batch):
        assert completion.token_ids == smol.generate(prompt, temperature=0, max_new_tokens=24,
                                                     ignore_eos=True)[0].token_ids


@pytest.mark.slow
def test_conversion_is_cached(smol):
    first = gpts.load("default")  # this test's own, empty $GPTS_HOME
    cached = list((paths.cache_dir() / "converted").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    before = (cached[0] / "model.safetensors").stat()
    again = gpts.load("smollm2-135m-instruct")  # read from the cache, not converted and written again
    after = (cached[0] / "model.safetensors").stat()
    assert list((paths.cache_dir() / "converted").iterdir()) == cached
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    for model in (first, again):
        torch.testing.assert_close(model.gpt.wte.weight, smol.gpt.wte.weight, atol=0, rtol=0)


@pytest.mark.slow
def test_the_bundled_sampling_defaults_go_with_the_file(smol, bundled_gguf, tmp_path):
    defaults = {"temperature": 0.2, "top_p": 0.9}  # from the model card; GGUF files carry none
    assert smol.generation_defaults.items() >= defaults.items()
    assert gpts.load(str(bundled_gguf)).generation_defaults.items() >= defaults.items()  # named by its path
    native = gpts.api.convert_model("default", "gpts", tmp_path / "native")
    assert gpts.load(str(native)).generation_defaults.items() >= defaults.items()


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(smol):
    a = smol.chat(CHAT, max_new_tokens=16, seed=5, temperature=0.8)
    b = smol.chat(CHAT, max_new_tokens=16, seed=5, temperature=0.8)
    c = smol.chat(CHAT, max_new_tokens=16, seed=6, temperature=0.8)
    assert a.token_ids == b.token_ids != c.token_ids


def test_chat_takes_one_message_as_a_string(tmp_path):
    lm = gpts.load(str(tiny_model(tmp_path / "tiny")))
    options = dict(max_new_tokens=4, temperature=0, ignore_eos=True)
    assert lm.chat("hello", **options).token_ids == lm.chat([{"role": "user", "content": "hello"}], **options).token_ids
    for bad in ([], [{"role": "user"}], {"role": "user", "content": "hi"}, [("user", "hi")]):
        with pytest.raises(GptsError, match="list of messages"):
            lm.chat(bad)


def test_one_rule_for_blank_prompts_and_messages(tmp_path):
    lm = gpts.load(str(tiny_model(tmp_path / "tiny")))
    for blank in ("", "  \n\t"):
        with pytest.raises(GptsError, match="The prompt is blank"):
            lm.generate(blank)
        with pytest.raises(GptsError, match=r"The last message \(user\) is blank"):
            lm.chat(blank)
    lm.generate(" hello", max_new_tokens=1)  # leading or trailing spaces are text
