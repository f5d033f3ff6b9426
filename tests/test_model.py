import pytest
import torch

from gpts.config import Config
from gpts.errors import GptsError
from gpts.model import GPT


@pytest.fixture(params=["gpt2-nano", "llama-nano"])
def model(request):
    torch.manual_seed(0)
    return GPT(Config.from_name(request.param, vocab_size=97)).eval()


def test_cached_decoding_equals_full_recomputation(model):
    idx = torch.randint(0, 97, (2, 24))
    full = model(idx)
    cache = model.new_cache(2)
    steps = [model(idx[:, :10], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(10, 24)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_left_padding_gives_the_unpadded_logits(model):
    idx = torch.randint(0, 97, (2, 16))
    key_mask = torch.ones(2, 16, dtype=torch.bool)
    key_mask[1, :5] = False  # row 1 is an 11-token prompt, left-padded
    pos = (key_mask.cumsum(1) - 1).clamp(min=0)
    padded = model(idx, pos=pos, key_mask=key_mask)
    assert not padded.isnan().any()
    torch.testing.assert_close(padded[1, 5:], model(idx[1:, 5:])[0], atol=1e-5, rtol=0)


def test_last_only_returns_the_last_position(model):
    idx = torch.randint(0, 97, (1, 8))
    torch.testing.assert_close(model(idx, last_only=True), model(idx)[:, -1:])


def test_context_overflow_is_a_clear_error(model):
    idx = torch.zeros(1, model.config.context_length + 1, dtype=torch.long)
    with pytest.raises(GptsError, match="context"):
        model(idx)


def test_from_state_dict_round_trip(model):
    clone = GPT.from_state_dict(model.config, model.state_dict())
    idx = torch.randint(0, 97, (1, 8))
    torch.testing.assert_close(clone(idx), model(idx))


def test_unknown_preset_and_arch():
    with pytest.raises(GptsError, match="gpt2-nano"):
        Config.from_name("gpt2-nan")
    with pytest.raises(GptsError, match="architecture"):
        Config(arch="mamba")
    with pytest.raises(GptsError, match="Unknown config key"):
        Config.from_dict({"arch": "gpt2", "n_layers": 3})


def test_config_serializes():
    c = Config.from_name("smollm2-135m")
    assert Config.from_dict(c.to_dict()) == c
    assert c.n_kv_head == 3 and c.head_dim == 64


def test_cpu_autocast_keeps_attention_in_float32(model, monkeypatch):
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording_sdpa(q, k, v, **kwargs):
        seen.append((q.dtype, torch.is_autocast_enabled("cpu")))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    idx = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(idx)
    logits.float().sum().backward()  # the float32 attention trains under autocast
    assert seen and all(entry == (torch.float32, False) for entry in seen)
    assert logits.dtype == torch.bfloat16
    assert all(p.grad is not None for p in model.parameters())
    seen.clear()
    model(idx)
    assert seen[0] == (torch.float32, False)
