"""Hugging Face checkpoints in and out, checked against transformers itself; and the hub cache, offline."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import (AutoModelForCausalLM, GenerationConfig, GPT2Config, GPT2LMHeadModel,  # noqa: E402
                          LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM)

from gpts.checkpoint import Checkpoint, load_native, save_native  # noqa: E402
from gpts.config import Config  # noqa: E402
from gpts.errors import GptsError  # noqa: E402
from gpts.model import GPT  # noqa: E402
from gpts.weights.hf import download_hf, is_hf_dir, parse_hf_ref, read_hf_dir, write_hf_dir  # noqa: E402

transformers.logging.set_verbosity_error()

VOCAB = 128
LLAMA = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=5000.0,
             bos_token_id=1, eos_token_id=2)
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}

HF_CONFIGS = {
    "gpt2": lambda: GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=64,
                               bos_token_id=0, eos_token_id=0),
    "gpt2-untied": lambda: GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=VOCAB, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=False),
    "llama-tied": lambda: LlamaConfig(**LLAMA, tie_word_embeddings=True),
    "llama-untied": lambda: LlamaConfig(**LLAMA, tie_word_embeddings=False),
    # wavelengths 6.3, 23.6, 89, ... against 64/4 and 64/1: every branch of the llama3 formula
    "llama3-rope": lambda: LlamaConfig(**{**LLAMA, "rope_theta": 20000.0}, tie_word_embeddings=False,
                                       rope_scaling=dict(LLAMA3_SCALING)),  # transformers edits it
    "mistral": lambda: MistralConfig(**LLAMA, sliding_window=None, tie_word_embeddings=False),
}
MODEL_CLASSES = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "mistral": MistralForCausalLM}


def hf_model(kind: str):
    torch.manual_seed(0)
    config = HF_CONFIGS[kind]()
    model = MODEL_CLASSES[config.model_type](config).eval()
    with torch.no_grad():  # perturb everything (norm weights start at 1, biases at 0) so that mix-ups show
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def prefix_of(model) -> str:
    return "transformer." if model.config.model_type == "gpt2" else "model."


def save_hf(model, out: Path, layout: str) -> Path:
    """Save as transformers does, then rearrange into the other layouts found on the hub."""
    model.save_pretrained(out, max_shard_size="20KB" if layout == "sharded" else "50GB")
    if layout in ("safetensors", "sharded"):
        return out
    (out / "model.safetensors").unlink()
    sd = model.state_dict()  # tied: lm_head.weight shares wte's storage, as in old .bin files
    if model.config.model_type == "gpt2":  # old transformers also saved the causal-mask buffers
        for i in range(model.config.n_layer):
            sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))
    if layout == "bare":  # base-model names (e.g. the original "gpt2" repository): no prefix; lm_head as is
        tied = model.config.tie_word_embeddings
        save_file({k.removeprefix(prefix_of(model)): v.contiguous() for k, v in sd.items()
                   if not (tied and k == "lm_head.weight")}, str(out / "model.safetensors"), metadata={"format": "pt"})
    elif layout == "bin":
        torch.save(sd, out / "pytorch_model.bin")  # what save_pretrained(safe_serialization=False) wrote
    elif layout == "bin-sharded":
        names = sorted(sd)
        halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
        for file, keys in halves.items():
            torch.save({k: sd[k] for k in keys}, out / file)
        weight_map = {k: file for file, keys in halves.items() for k in keys}
        (out / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return out


def tokens(batch: int = 2, length: int = 20) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def hf_logits(model, idx: torch.Tensor) -> torch.Tensor:
    return model(idx).logits


@torch.no_grad()
def assert_cached_decoding_matches(model: GPT, idx: torch.Tensor) -> None:
    full = model(idx)
    cache = model.new_cache(idx.shape[0])
    steps = [model(idx[:, :5], cache=cache)] + [model(idx[:, t:t + 1], cache=cache) for t in range(5, idx.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


# -- reading -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["safetensors", "sharded", "bin", "bin-sharded", "bare"])
@pytest.mark.parametrize("kind", list(HF_CONFIGS))
@torch.no_grad()
def test_read_matches_transformers(kind, layout, tmp_path):
    hf = hf_model(kind)
    path = save_hf(hf, tmp_path / "hf", layout)
    if layout == "sharded":
        assert (path / "model.safetensors.index.json").is_file()
    assert is_hf_dir(path)
    ckpt = read_hf_dir(path)
    assert ckpt.tokenizer is None  # no tokenizer files: fine, weights only
    model = GPT.from_state_dict(ckpt.config, ckpt.state_dict).eval()
    idx = tokens()
    torch.testing.assert_close(model(idx), hf_logits(hf, idx), atol=1e-4, rtol=0)
    assert_cached_decoding_matches(model, idx)


def test_read_config_fields(tmp_path):
    hf = hf_model("llama3-rope")
    GenerationConfig(bos_token_id=1, eos_token_id=[2, 3], temperature=0.3, top_p=0.9, do_sample=True
                     ).save_pretrained(save_hf(hf, tmp_path / "hf", "safetensors"))
    ckpt = read_hf_dir(tmp_path / "hf")
    c = ckpt.config
    assert (c.arch, c.n_layer, c.n_head, c.n_kv_head, c.n_embd, c.intermediate_size) == ("llama", 2, 4, 2, 64, 96)
    assert (c.context_length, c.norm_eps, c.rope_base, c.tie_embeddings, c.bias) == (64, 1e-5, 20000.0, False, False)
    assert c.rope_scaling == LLAMA3_SCALING
    assert ckpt.generation["temperature"] == 0.3 and ckpt.generation["eos_token_id"] == [2, 3]
    assert "transformers_version" not in ckpt.generation


@pytest.mark.parametrize("style", ["transformers4", "transformers5"])
def test_rope_theta_in_either_place(style, tmp_path):
    path = save_hf(hf_model("llama-untied"), tmp_path / "hf", "safetensors")
    cfg = json.loads((path / "config.json").read_text())
    cfg.pop("rope_theta", None)
    cfg.pop("rope_parameters", None)
    if style == "transformers4":
        cfg.update(rope_theta=123.0, rope_scaling={"type": "llama3", **{k: v for k, v in LLAMA3_SCALING.items()
                                                                            if k != "rope_type"}})
    else:
        cfg["rope_parameters"] = {"rope_theta": 123.0, **LLAMA3_SCALING}
    (path / "config.json").write_text(json.dumps(cfg))
    c = read_hf_dir(path).config
    assert c.rope_base == 123.0 and c.rope_scaling == LLAMA3_SCALING


def test_tied_checkpoint_with_lm_head_present_is_read(tmp_path):
    hf = hf_model("llama-tied")
    path = save_hf(hf, tmp_path / "hf", "bin")  # .bin keeps lm_head.weight (the same storage as the embedding)
    assert "lm_head.weight" in torch.load(path / "pytorch_model.bin", weights_only=True)
    ckpt = read_hf_dir(path)
    assert "lm_head.weight" not in ckpt.state_dict and ckpt.config.tie_embeddings


def test_hub_snapshot_is_named_by_repo(tmp_path):
    snap = tmp_path / "models--some-org--tiny" / "snapshots" / ("a" * 40)
    save_hf(hf_model("gpt2"), snap, "safetensors")
    assert read_hf_dir(snap).config.name == "some-org/tiny"


# -- writing -------------------------------------------------------------------------------------------

OUR_CONFIGS = {
    "gpt2": Config(arch="gpt2", vocab_size=VOCAB, context_length=64, n_layer=2, n_head=4, n_embd=64),
    "gpt2-untied": Config(arch="gpt2", vocab_size=VOCAB, context_length=64, n_layer=2, n_head=4, n_embd=64,
                          tie_embeddings=False, intermediate_size=80),
    "llama-tied": Config.from_name("llama-nano", vocab_size=VOCAB, n_layer=2, context_length=64, rope_base=5000.0),
    "llama-untied": Config.from_name("llama-nano", vocab_size=VOCAB, n_layer=2, context_length=64,
                                     tie_embeddings=False, norm_eps=1e-6),
    "llama3-rope": Config.from_name("llama-nano", vocab_size=VOCAB, n_layer=2, context_length=64,
                                    rope_base=20000.0, rope_scaling=dict(LLAMA3_SCALING)),
}


def our_model(kind: str) -> GPT:
    torch.manual_seed(0)
    model = GPT(OUR_CONFIGS[kind]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.mark.parametrize("kind", list(OUR_CONFIGS))
@torch.no_grad()
def test_write_loads_in_transformers(kind, tmp_path):
    model = our_model(kind)
    ckpt = Checkpoint(model.config, model.state_dict(), generation={"temperature": 0.5, "eos_token_id": 2})
    out = write_hf_dir(ckpt, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == model.config.arch and cfg["torch_dtype"] == "float32" and cfg["architectures"]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    idx = tokens()
    torch.testing.assert_close(hf_logits(hf, idx), model(idx), atol=1e-4, rtol=0)
    assert GenerationConfig.from_pretrained(out).temperature == 0.5
    # and back: exactly the same tensors
    back = read_hf_dir(out)
    assert back.config.to_dict() | {"name": ""} == model.config.to_dict() | {"name": ""}
    assert back.generation["temperature"] == 0.5
    for name, tensor in model.state_dict().items():
        assert torch.equal(back.state_dict[name], tensor), name


def test_write_uses_hf_layout(tmp_path):
    model = our_model("gpt2")
    write_hf_dir(Checkpoint(model.config, model.state_dict()), tmp_path / "out")
    tensors = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (64, 3 * 64)  # Conv1D: (in, out), q|k|v fused
    assert torch.equal(tensors["transformer.h.0.attn.c_attn.weight"][:, 64:128],
                       model.state_dict()["blocks.0.attn.k_proj.weight"].t())
    assert "lm_head.weight" not in tensors


def test_write_is_atomic_and_replaces(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    model = our_model("llama-tied")
    write_hf_dir(Checkpoint(model.config, model.state_dict()), out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary left behind


def test_write_rejects_what_hf_cannot_express(tmp_path):
    config = Config(arch="gpt2", vocab_size=VOCAB, context_length=64, n_layer=2, n_head=4, n_embd=64, bias=False)
    model = GPT(config)
    with pytest.raises(GptsError, match="biases"):
        write_hf_dir(Checkpoint(config, model.state_dict()), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@torch.no_grad()
def test_native_round_trip(tmp_path):
    hf = hf_model("llama3-rope")
    GenerationConfig(do_sample=True, temperature=0.2).save_pretrained(save_hf(hf, tmp_path / "hf", "sharded"))
    ckpt = read_hf_dir(tmp_path / "hf")
    save_native(ckpt, tmp_path / "native")
    again = load_native(tmp_path / "native")
    assert again.config == ckpt.config and again.generation == ckpt.generation
    idx = tokens()
    a = GPT.from_state_dict(ckpt.config, ckpt.state_dict).eval()(idx)
    b = GPT.from_state_dict(again.config, again.state_dict).eval()(idx)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.testing.assert_close(b, hf_logits(hf, idx), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["gpt2", "llama-untied"])
def test_mapping_copies_only_transposed_tensors(kind, tmp_path):
    from gpts.weights.hf import FORMATS, _read_weights, from_hf_tensors

    path = save_hf(hf_model(kind), tmp_path / "hf", "safetensors")
    loaded = _read_weights(path)
    storages = {t.untyped_storage().data_ptr() for t in loaded.values()}
    ckpt_config = read_hf_dir(path).config
    state_dict = from_hf_tensors(loaded, ckpt_config, FORMATS[ckpt_config.arch])
    copied = sorted(k for k, t in state_dict.items() if t.untyped_storage().data_ptr() not in storages)
    if kind == "gpt2":  # Conv1D weights are stored transposed; everything else (c_attn's bias split too) is a view
        assert copied == sorted(f"blocks.{i}.{m}.weight" for i in range(2) for m in
                                ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.up_proj",
                                 "mlp.down_proj"))
    else:
        assert copied == []


# -- tokenizer -----------------------------------------------------------------------------------------


def write_tokenizer_files(path: Path) -> None:
    from tokenizers import Tokenizer as BackendTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"<s>": 0, "</s>": 1, **{chr(c): i + 2 for i, c in enumerate(range(97, 123))}}
    backend = BackendTokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))


def test_tokenizer_in_and_out(tmp_path):
    path = save_hf(hf_model("llama-tied"), tmp_path / "hf", "safetensors")
    write_tokenizer_files(path)
    ckpt = read_hf_dir(path)
    assert ckpt.tokenizer is not None and ckpt.tokenizer.eos_token == "</s>"
    out = write_hf_dir(ckpt, tmp_path / "out")
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    back = read_hf_dir(out)
    assert back.tokenizer.vocab_size == ckpt.tokenizer.vocab_size and back.tokenizer.eos_id == 1
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 2  # the model config's, kept
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert hf_tokenizer("abc", add_special_tokens=False).input_ids == ckpt.tokenizer.encode("abc", add_special=False)
    assert hf_tokenizer.eos_token == "</s>"


def test_gpt2_style_vocab_and_merges(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "safetensors")
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(["hello world, hello tokens"] * 10, vocab_size=VOCAB + 256, show_progress=False)
    trainer.save_model(str(path))  # vocab.json + merges.txt
    ckpt = read_hf_dir(path)
    assert ckpt.tokenizer is not None
    expected = transformers.AutoTokenizer.from_pretrained(path)("hello world", add_special_tokens=False).input_ids
    assert ckpt.tokenizer.encode("hello world", add_special=False) == expected


# -- errors --------------------------------------------------------------------------------------------


def test_missing_config(tmp_path):
    with pytest.raises(GptsError, match="config.json"):
        read_hf_dir(tmp_path)
    with pytest.raises(GptsError, match="does not exist"):
        read_hf_dir(tmp_path / "nowhere")
    assert not is_hf_dir(tmp_path)


@pytest.mark.parametrize("model_type", ["qwen2", "bert"])
def test_unsupported_model_type(model_type, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert is_hf_dir(tmp_path)
    with pytest.raises(GptsError, match=rf"'{model_type}'.*gpt2, llama") as e:
        read_hf_dir(tmp_path)
    assert "Supported" in e.value.fix


def test_model_type_from_architectures(tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "safetensors")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["model_type"]
    (path / "config.json").write_text(json.dumps(cfg))
    assert read_hf_dir(path).config.arch == "gpt2"


@pytest.mark.parametrize("change, match", [
    ({"attention_bias": True}, "attention_bias"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"head_dim": 32}, "head_dim"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "yarn"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "linear"),
    ({"model_type": "mistral", "sliding_window": 16}, "sliding"),
])
def test_unsupported_llama_features(change, match, tmp_path):
    path = save_hf(hf_model("llama-untied"), tmp_path / "hf", "safetensors")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(GptsError, match=match):
        read_hf_dir(path)


def test_missing_weights(tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "safetensors")
    (path / "model.safetensors").unlink()
    with pytest.raises(GptsError, match="no weights"):
        read_hf_dir(path)


def test_missing_shard(tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "sharded")
    next(path.glob("model-*.safetensors")).unlink()
    with pytest.raises(GptsError, match="missing weight shard"):
        read_hf_dir(path)


def test_missing_tensor(tmp_path):
    path = save_hf(hf_model("llama-untied"), tmp_path / "hf", "safetensors")
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(GptsError, match="missing.*lm_head"):
        read_hf_dir(path)


def test_shape_mismatch(tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "safetensors")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "n_inner": 128}))
    with pytest.raises(GptsError, match="shape"):
        read_hf_dir(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(damage, tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "safetensors")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"not a safetensors file" * 10 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(GptsError, match="corrupt"):
        read_hf_dir(path)


def test_corrupt_bin(tmp_path):
    path = save_hf(hf_model("gpt2"), tmp_path / "hf", "bin")
    (path / "pytorch_model.bin").write_bytes(b"this is not a checkpoint")
    with pytest.raises(GptsError, match="corrupt"):
        read_hf_dir(path)


# -- hub references and the cache ------------------------------------------------------------------------


@pytest.mark.parametrize("ref, expected", [
    ("hf:HuggingFaceTB/SmolLM2-135M-Instruct", ("HuggingFaceTB/SmolLM2-135M-Instruct", None)),
    ("hf:openai-community/gpt2@main", ("openai-community/gpt2", "main")),
    ("hf:org/name@refs/pr/1", ("org/name", "refs/pr/1")),
    ("hf:gpt2@" + "a" * 40, ("gpt2", "a" * 40)),
])
def test_parse_hf_ref(ref, expected):
    assert parse_hf_ref(ref) == expected


@pytest.mark.parametrize("ref", ["hf:", "hf:org/", "hf:/name", "hf:a/b/c", "hf:org/name@", "hf:org/na me",
                                 "HuggingFaceTB/SmolLM2", "hf:org--x/name", "hf:org/name@a@b"])
def test_malformed_hf_ref(ref):
    with pytest.raises(GptsError, match="Malformed"):
        parse_hf_ref(ref)


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def populate_hub_cache(gpts_home: Path, repo: str, with_weights: bool = True) -> Path:
    """A snapshot laid out as huggingface_hub stores it: models--ORG--NAME/{refs/main, snapshots/<commit>/}."""
    repo_dir = gpts_home / "cache" / "hf" / ("models--" + repo.replace("/", "--"))
    snapshot = save_hf(hf_model("gpt2"), repo_dir / "snapshots" / COMMIT, "safetensors")
    if not with_weights:
        (snapshot / "model.safetensors").unlink()
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def unreachable_hub(monkeypatch):
    """Any request to the hub fails at once with a refused connection (nothing listens on port 9)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.mark.parametrize("revision", [None, "main", COMMIT])
def test_cached_snapshot_is_used_offline(revision, gpts_home, monkeypatch):
    snapshot = populate_hub_cache(gpts_home, "tiny-org/tiny-gpt2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = download_hf("tiny-org/tiny-gpt2", revision)
    assert path.resolve() == snapshot.resolve()
    assert read_hf_dir(path).config.name == "tiny-org/tiny-gpt2"


def test_cached_snapshot_needs_no_network(gpts_home, unreachable_hub):
    snapshot = populate_hub_cache(gpts_home, "tiny-org/tiny-gpt2")
    assert download_hf("tiny-org/tiny-gpt2", None).resolve() == snapshot.resolve()


def test_offline_and_not_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GptsError, match="Could not reach.*offline") as e:
        download_hf("tiny-org/not-cached", None)
    assert "local" in e.value.fix and "HF_HUB_OFFLINE" in e.value.fix


def test_offline_with_incomplete_snapshot(gpts_home, monkeypatch):
    populate_hub_cache(gpts_home, "tiny-org/tiny-gpt2", with_weights=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GptsError, match="offline"):
        download_hf("tiny-org/tiny-gpt2", None)


def test_unreachable_hub(unreachable_hub):
    with pytest.raises(GptsError, match="Could not reach.*offline"):
        download_hf("tiny-org/not-cached", "main")


class FakeHub:
    """Stands in for huggingface_hub.snapshot_download: serves the files of local directories, filtered by
    allow_patterns as the hub does, into one snapshot folder of the cache; records every call."""

    def __init__(self, repos: dict[str, Path]):
        self.repos, self.calls = repos, []

    def __call__(self, repo_id, *, revision, cache_dir, allow_patterns, local_files_only):
        from fnmatch import fnmatch

        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

        self.calls.append((list(allow_patterns), local_files_only))
        snapshot = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / COMMIT
        if local_files_only:
            if not snapshot.is_dir():
                raise LocalEntryNotFoundError("Cannot find an appropriate cached snapshot folder")
            return str(snapshot)
        if repo_id not in self.repos:
            error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)  # its constructor wants an HTTP response
            Exception.__init__(error, "404 Repository Not Found")
            raise error
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in self.repos[repo_id].iterdir():
            if any(fnmatch(file.name, p) for p in allow_patterns):
                shutil.copy(file, snapshot / file.name)
        return str(snapshot)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    import huggingface_hub

    both = save_hf(hf_model("gpt2"), tmp_path / "remote-both", "safetensors")
    torch.save(load_file(str(both / "model.safetensors")), both / "pytorch_model.bin")
    (both / "notes.md").write_text("not fetched")
    hub = FakeHub({"org/both": both, "org/bin-only": save_hf(hf_model("gpt2"), tmp_path / "remote-bin", "bin"),
                   "org/no-weights": tmp_path / "remote-none"})
    (tmp_path / "remote-none").mkdir()
    shutil.copy(both / "config.json", tmp_path / "remote-none")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    return hub


def test_download_prefers_safetensors_then_uses_the_cache(fake_hub, gpts_home):
    path = download_hf("org/both", None)
    assert path.is_relative_to(gpts_home / "cache" / "hf")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    assert [local for _, local in fake_hub.calls] == [True, False]
    assert not any("pytorch_model.bin" in patterns for patterns, _ in fake_hub.calls)
    fake_hub.calls.clear()
    assert download_hf("org/both", None) == path
    assert [local for _, local in fake_hub.calls] == [True]  # cached: no network


def test_download_falls_back_to_bin(fake_hub):
    path = download_hf("org/bin-only", "main")
    assert (path / "pytorch_model.bin").is_file() and not (path / "model.safetensors").exists()
    assert read_hf_dir(path).config.arch == "gpt2"


def test_download_errors(fake_hub):
    with pytest.raises(GptsError, match="no model hf:org/missing"):
        download_hf("org/missing", None)
    with pytest.raises(GptsError, match="no weights"):
        download_hf("org/no-weights", None)
