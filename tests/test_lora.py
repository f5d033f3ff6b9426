"""LoRA: the layer, applying and merging, the adapter directory, and the PEFT export checked against
transformers + PEFT on tiny random models."""

import json

import pytest
import torch

from gpts import lora
from gpts.checkpoint import Checkpoint, save_native
from gpts.config import Config
from gpts.errors import GptsError
from gpts.lora import LoRAConfig, LoRALinear
from gpts.model import GPT
from gpts.registry import read_checkpoint
from gpts.tokenizer import Tokenizer

VOCAB = 97


def tiny(preset: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(Config.from_name(preset, vocab_size=VOCAB)).eval()


def trained(model: GPT) -> GPT:
    """Stand-in for training: nonzero B matrices, so the adapter changes the logits."""
    with torch.no_grad():
        for _, layer in lora.lora_layers(model):
            layer.lora_b.weight.normal_(0, 0.05)
    return model


def tokens(n: int = 12) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, n), generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=["gpt2-nano", "llama-nano"])
def preset(request):
    return request.param


def test_fresh_adapter_changes_nothing_and_merging_keeps_the_logits(preset):
    base = tiny(preset)
    idx = tokens()
    expected = base(idx)
    model = lora.apply_lora(tiny(preset), LoRAConfig(rank=4, alpha=8))
    torch.testing.assert_close(model(idx), expected, atol=0, rtol=0)
    trained(model)
    unmerged = model(idx)
    assert (unmerged - expected).abs().max() > 1e-3  # the adapter matters now
    merged = lora.merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert set(merged.state_dict()) == set(base.state_dict())
    torch.testing.assert_close(merged(idx), unmerged, atol=1e-5, rtol=0)


def test_only_the_adapters_train(preset):
    model = tiny(preset)
    c, r = model.config, 4
    kv = c.n_kv_head * c.head_dim
    shapes = {"q_proj": (c.n_embd, c.n_embd), "k_proj": (c.n_embd, kv), "v_proj": (c.n_embd, kv),
              "o_proj": (c.n_embd, c.n_embd), "up_proj": (c.n_embd, c.intermediate_size),
              "down_proj": (c.intermediate_size, c.n_embd)}
    if c.arch == "llama":
        shapes["gate_proj"] = (c.n_embd, c.intermediate_size)
    lora.apply_lora(model, LoRAConfig(rank=r))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_a." in n or ".lora_b." in n for n in trainable)
    assert sum(p.numel() for p in trainable.values()) == c.n_layer * sum(r * (i + o) for i, o in shapes.values())
    assert set(lora.lora_state_dict(model)) == set(trainable)
    model.train()
    model(tokens()).sum().backward()
    assert all(p.grad is not None for p in trainable.values())

    only_v = lora.apply_lora(tiny(preset), LoRAConfig(rank=r, targets=["v_proj"]))
    assert sorted(n for n, _ in lora.lora_layers(only_v)) == [f"blocks.{i}.attn.v_proj" for i in range(c.n_layer)]


def test_config_validation_and_json_round_trip():
    c = LoRAConfig(rank=2, alpha=4, dropout=0.1, targets=["q_proj", "v_proj"], base="x", base_fingerprint="sha256:0")
    assert LoRAConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    assert c.scaling == 2
    with pytest.raises(GptsError, match="qproj"):
        LoRAConfig(targets=["qproj"])
    with pytest.raises(GptsError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(GptsError, match="dropout"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(GptsError, match="Unknown LoRA config key"):
        LoRAConfig.from_dict({"r": 8})
    with pytest.raises(GptsError, match="gate_proj"):
        lora.apply_lora(tiny("gpt2-nano"), LoRAConfig(targets=["gate_proj"]))  # GPT-2 has no gate


def save_base(model: GPT, path) -> str:
    save_native(Checkpoint(model.config, model.state_dict(), generation={"temperature": 0.3}), path)
    return str(path)


def test_adapter_round_trip_and_a_different_base_is_refused(preset, tmp_path):
    base_ref = save_base(tiny(preset), tmp_path / "base")
    model = trained(lora.apply_lora(GPT.from_state_dict(*_ckpt(base_ref)), LoRAConfig(rank=4, alpha=8)))
    tokenizer = Tokenizer.char_level("abcdefgh")
    out = lora.save_adapter(model, LoRAConfig(rank=4, alpha=8, base=base_ref), tmp_path / "adapter",
                            tokenizer=tokenizer, generation={"top_p": 0.9}, extra={"steps": 10})
    assert lora.is_adapter_dir(out) and not lora.is_adapter_dir(out / "peft") and not lora.is_adapter_dir(base_ref)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left

    loaded = lora.load_adapter(out, read_checkpoint)
    idx = tokens()
    torch.testing.assert_close(loaded.model(idx), model(idx), atol=0, rtol=0)
    assert loaded.lora_config.base_fingerprint.startswith("sha256:") and loaded.extra == {"steps": 10}
    assert loaded.generation == {"temperature": 0.3, "top_p": 0.9}
    assert loaded.tokenizer.encode("abc", add_special=False) == tokenizer.encode("abc", add_special=False)

    merged = lora.read_adapter_checkpoint(out, read_checkpoint)
    assert merged.config.name == "adapter"
    merged_model = GPT.from_state_dict(merged.config, merged.state_dict)
    torch.testing.assert_close(merged_model(idx), model(idx), atol=1e-5, rtol=0)

    other = save_base(tiny(preset, seed=1), tmp_path / "other")
    with pytest.raises(GptsError, match="different base model") as e:
        lora.load_adapter(out, read_checkpoint, base=other)
    assert base_ref in str(e.value) and other in str(e.value)
    with pytest.raises(GptsError, match="cannot be loaded"):
        lora.load_adapter(out, read_checkpoint, base=str(tmp_path / "missing"))


def _ckpt(ref: str):
    ckpt = read_checkpoint(ref)
    return ckpt.config, ckpt.state_dict


def test_fingerprint_ignores_the_storage_dtype_but_not_the_weights():
    model = tiny("llama-nano")
    sd = model.state_dict()
    fp = lora.base_fingerprint(model.config, sd)
    assert lora.base_fingerprint(model.config, {k: v.to(torch.bfloat16) for k, v in sd.items()}) == fp
    changed = dict(sd, **{"blocks.3.mlp.down_proj.weight": sd["blocks.3.mlp.down_proj.weight"] * 1.1})
    assert lora.base_fingerprint(model.config, changed) != fp


def test_damaged_adapters_are_clear_errors(tmp_path):
    base_ref = save_base(tiny("llama-nano"), tmp_path / "base")
    with pytest.raises(GptsError, match="no LoRA layers"):
        lora.save_adapter(tiny("llama-nano"), LoRAConfig(base=base_ref), tmp_path / "a")
    model = lora.apply_lora(GPT.from_state_dict(*_ckpt(base_ref)), LoRAConfig(rank=2))
    out = lora.save_adapter(model, LoRAConfig(rank=2, base=base_ref), tmp_path / "a")
    meta = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**meta, "lora": {**meta["lora"], "rank": 3}}))
    with pytest.raises(GptsError, match="do not match"):
        lora.load_adapter(out, read_checkpoint)
    (out / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    assert not lora.is_adapter_dir(out)
    with pytest.raises(GptsError, match="not a gpts LoRA adapter"):
        lora.load_adapter(out, read_checkpoint)


@pytest.mark.parametrize("preset, targets", [
    ("llama-nano", lora.TARGETS),
    ("gpt2-nano", lora.TARGETS),
    ("gpt2-nano", ("k_proj", "down_proj")),  # c_attn adapted in its middle third only
])
def test_peft_export_matches_transformers_and_peft(preset, targets, tmp_path):
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    from gpts.weights.hf import write_hf_dir

    base = tiny(preset)
    write_hf_dir(Checkpoint(base.config, base.state_dict()), tmp_path / "hf")
    cfg = LoRAConfig(rank=4, alpha=8, targets=targets, base="hf:someone/tiny")
    model = trained(lora.apply_lora(base, cfg))
    out = lora.save_adapter(model, cfg, tmp_path / "adapter")
    peft_config = json.loads((out / "peft" / "adapter_config.json").read_text())
    assert peft_config["peft_type"] == "LORA" and peft_config["base_model_name_or_path"] == "someone/tiny"

    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32)
    peft_model = peft.PeftModel.from_pretrained(hf_model, out / "peft").eval()
    idx = tokens()
    with torch.no_grad():
        theirs = peft_model(input_ids=idx).logits
        torch.testing.assert_close(theirs, model(idx), atol=1e-4, rtol=0)
        with peft_model.disable_adapter():
            assert (theirs - peft_model(input_ids=idx).logits).abs().max() > 1e-3  # the adapter was applied
