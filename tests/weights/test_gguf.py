"""GGUF in and out: round trips, parity with transformers' GGUF loader, every dequantizer against an
independent decoder written from llama.cpp's C code, the bundled SmolLM2 file, and damaged files.

Tiny models are written without a tokenizer (write_gguf then writes a weights-only GGUF, which
read_gguf loads with tokenizer None); the tokenizer's own GGUF round trip is tested on the bundled
model's vocabulary."""

from __future__ import annotations

import dataclasses
import math
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from gpts.checkpoint import Checkpoint
from gpts.config import Config
from gpts.errors import GptsError
from gpts.model import GPT
from gpts.weights.gguf import read_gguf, write_gguf

Q = gguf.GGMLQuantizationType
V = 97  # tiny vocabulary


def tiny_model(name: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(Config.from_name(name, vocab_size=V, **overrides)).eval()
    # GPT's init (std 0.02, zero biases) gives near-zero logits; larger random weights and biases make
    # the logits O(1) and exercise every tensor, so that a misplaced row cannot hide.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1 if p.ndim > 1 else 0.3)
        for norm in [model.norm_f, *(n for b in model.blocks for n in (b.norm_1, b.norm_2))]:
            norm.weight.add_(1.0)  # gains near 1
    return model


def logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)


def reload(path: Path, **kw) -> tuple[Checkpoint, GPT]:
    ckpt = read_gguf(path, **kw)
    return ckpt, GPT.from_state_dict(ckpt.config, ckpt.state_dict).eval()


# -- round trips ------------------------------------------------------------------------------------

# Lossy types: (max relative error of each weight tensor, max relative RMS error of the logits).
# Random tiny models amplify weight errors about tenfold by the logits; Q8_0 weights are ~0.5% off.
TOLERANCE = {"f16": (1e-3, 1e-2), "q8_0": (1e-2, 0.1)}


@pytest.mark.parametrize("name", ["gpt2-nano", "llama-nano"])
@pytest.mark.parametrize("dtype", ["f32", "f16", "q8_0"])
@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_gives_the_same_logits(tmp_path, name, dtype, tied):
    model = tiny_model(name, tie_embeddings=tied)
    idx = torch.randint(0, V, (2, 24))
    generation = {"bos_token_id": 1, "eos_token_id": [3, 5], "temperature": 0.7, "top_k": 40, "top_p": 0.9}
    out = write_gguf(Checkpoint(model.config, model.state_dict(), None, generation), tmp_path / "m.gguf", dtype)

    ckpt, clone = reload(out)
    assert ckpt.config == model.config
    assert ckpt.tokenizer is None
    assert ckpt.generation == generation
    assert set(ckpt.state_dict) == set(model.state_dict())
    ref, got = logits(model, idx), logits(clone, idx)
    assert ref.abs().max() > 1.0  # logits of a useful scale
    if dtype == "f32":
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
        return
    weight_tol, logit_tol = TOLERANCE[dtype]
    for key, want in model.state_dict().items():
        err = ((ckpt.state_dict[key] - want).norm() / want.norm()).item()
        assert err <= (weight_tol if want.ndim > 1 else 0.0), (key, err)  # 1-D tensors stay F32: exact
    assert ((got - ref).norm() / ref.norm()).item() <= logit_tol
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.9  # the greedy choice, per position


def test_written_file_is_what_llama_cpp_expects(tmp_path):
    """Tensor names, types and GGUF (fastest-first) shapes as llama.cpp's converter writes them."""
    model = tiny_model("llama-nano", tie_embeddings=False)
    out = write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "q8_0")
    reader = gguf.GGUFReader(out)
    tensors = {t.name: t for t in reader.tensors}
    c = model.config
    assert tensors["token_embd.weight"].shape.tolist() == [c.n_embd, V]
    assert tensors["blk.0.attn_k.weight"].shape.tolist() == [c.n_embd, c.n_kv_head * c.head_dim]
    assert tensors["blk.3.ffn_down.weight"].shape.tolist() == [c.intermediate_size, c.n_embd]
    assert tensors["output.weight"].tensor_type == Q.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == Q.F32  # 1-D tensors stay F32
    assert tensors["output_norm.weight"].tensor_type == Q.F32
    assert len(tensors) == 2 + 1 + 9 * c.n_layer
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q8_0
    assert fields["llama.attention.head_count_kv"] == c.n_kv_head
    assert fields["llama.rope.dimension_count"] == c.head_dim
    assert reader.fields["llama.block_count"].types == [gguf.GGUFValueType.UINT32]


def test_q_and_k_rows_are_permuted_as_llama_cpp_does(tmp_path):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute, written out independently."""
    def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    model = tiny_model("llama-nano")
    out = write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32")
    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    sd, c = model.state_dict(), model.config
    np.testing.assert_array_equal(tensors["blk.1.attn_q.weight"],
                                  llama_cpp_permute(sd["blocks.1.attn.q_proj.weight"].numpy(), c.n_head))
    np.testing.assert_array_equal(tensors["blk.1.attn_k.weight"],
                                  llama_cpp_permute(sd["blocks.1.attn.k_proj.weight"].numpy(), c.n_kv_head))
    np.testing.assert_array_equal(tensors["blk.1.attn_v.weight"], sd["blocks.1.attn.v_proj.weight"].numpy())


def test_gpt2_qkv_is_fused(tmp_path):
    model = tiny_model("gpt2-nano")
    out = write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32")
    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(out).tensors}
    sd = model.state_dict()
    for kind in ("weight", "bias"):
        fused = np.concatenate([sd[f"blocks.2.attn.{p}_proj.{kind}"].numpy() for p in "qkv"])
        np.testing.assert_array_equal(tensors[f"blk.2.attn_qkv.{kind}"], fused)
    assert "output.weight" not in tensors  # tied
    assert tensors["position_embd.weight"].shape == (model.config.context_length, model.config.n_embd)


def test_gpt2_with_a_duplicated_output_tensor_reads_as_tied(tmp_path):
    """Older llama.cpp GPT-2 conversions store the tied output matrix as a copy of token_embd."""
    model = tiny_model("gpt2-nano")
    sd = {**model.state_dict(), "lm_head.weight": model.wte.weight.detach().clone()}
    untied = Config(**{**model.config.to_dict(), "tie_embeddings": False})
    out = write_gguf(Checkpoint(untied, sd), tmp_path / "m.gguf", "f16")
    assert "output.weight" in {t.name for t in gguf.GGUFReader(out).tensors}
    ckpt = read_gguf(out)
    assert ckpt.config.tie_embeddings and "lm_head.weight" not in ckpt.state_dict


def test_llama3_rope_scaling_round_trips(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    model = tiny_model("llama-nano", rope_scaling=scaling)
    out = write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32")

    # The rope_freqs tensor holds llama.cpp's per-frequency divisors (LlamaModel.generate_extra_tensors).
    c = model.config
    freqs = 1.0 / (c.rope_base ** (np.arange(0, c.head_dim, 2) / c.head_dim))
    expected = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4.0:
            expected.append(1.0)
        elif wavelen > 64 / 1.0:
            expected.append(8.0)
        else:
            smooth = (64 / wavelen - 1.0) / (4.0 - 1.0)
            expected.append(1 / ((1 - smooth) / 8.0 + smooth))
    rope_freqs = next(t for t in gguf.GGUFReader(out).tensors if t.name == "rope_freqs.weight")
    np.testing.assert_allclose(np.asarray(rope_freqs.data), expected, rtol=1e-5)
    assert 1.0 < min(set(expected) - {1.0, 8.0}) < 8.0  # the blend region is exercised

    ckpt, clone = reload(out)
    assert ckpt.config == model.config  # low_freq_factor 1 (as here) is what the fit assumes
    idx = torch.randint(0, V, (1, 200))
    torch.testing.assert_close(logits(clone, idx), logits(model, idx), atol=1e-4, rtol=0)


def test_llama3_rope_scaling_without_a_blend_region_round_trips(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 1.5,
               "original_max_position_embeddings": 100}
    model = tiny_model("llama-nano", rope_scaling=scaling)
    _, clone = reload(write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32"))
    idx = torch.randint(0, V, (1, 200))
    torch.testing.assert_close(logits(clone, idx), logits(model, idx), atol=1e-4, rtol=0)


def test_llama_3_2_rope_scaling_parameters_are_recovered(tmp_path):
    """Llama 3.2's values (base 500000, head size 64, factor 32) and a low_freq_factor other than 1,
    which the fit re-expresses with low_freq_factor 1: the same frequencies, so the same logits."""
    for low, want_same_config in ((1.0, True), (2.0, False)):
        scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": low, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192}
        model = tiny_model("llama-nano", n_head=2, n_kv_head=1, rope_base=500000.0, rope_scaling=scaling)
        ckpt, clone = reload(write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32"))
        assert (ckpt.config == model.config) is want_same_config
        idx = torch.randint(0, V, (1, 64))
        torch.testing.assert_close(logits(clone, idx), logits(model, idx), atol=1e-4, rtol=0)


def test_write_is_atomic_and_validates_dtype(tmp_path):
    model = tiny_model("gpt2-nano")
    ckpt = Checkpoint(model.config, model.state_dict())
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old")
    with pytest.raises(GptsError, match="q8_0"):
        write_gguf(ckpt, out, "q4_k")
    broken = Checkpoint(model.config, {k: v for k, v in ckpt.state_dict.items() if "blocks.1" not in k})
    with pytest.raises(GptsError, match="lacks"):
        write_gguf(broken, out, "f32")
    assert out.read_bytes() == b"old"  # untouched by the failed writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"]  # no temp files left behind
    write_gguf(ckpt, out, "f32")
    assert read_gguf(out).config == model.config


# -- parity with transformers' GGUF loader -----------------------------------------------------------


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_loads_our_llama_gguf(tmp_path, tied):
    transformers = pytest.importorskip("transformers")
    model = tiny_model("llama-nano", tie_embeddings=tied)
    write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "m.gguf", "f32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == model.config.n_kv_head and hf.config.vocab_size == V
    idx = torch.randint(0, V, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, logits(model, idx), atol=1e-4, rtol=0)


def test_transformers_loads_our_gpt2_gguf(tmp_path):
    """transformers' GGUF config mapping for gpt2 reads neither the vocabulary size (it takes it from
    the token list) nor the number of positions (it maps context_length to the unused n_ctx), so the
    config is given; the tensors (fused qkv, transposed Conv1D weights) come from our file."""
    transformers = pytest.importorskip("transformers")
    model = tiny_model("gpt2-nano")
    c = model.config
    write_gguf(Checkpoint(c, model.state_dict()), tmp_path / "m.gguf", "f32")
    hf_config = transformers.GPT2Config(vocab_size=V, n_positions=c.context_length, n_embd=c.n_embd,
                                        n_layer=c.n_layer, n_head=c.n_head, layer_norm_epsilon=c.norm_eps,
                                        bos_token_id=None, eos_token_id=None)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", config=hf_config,
                                                           dtype=torch.float32).eval()
    idx = torch.randint(0, V, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, logits(model, idx), atol=1e-4, rtol=0)


# -- every quantization type against an independent decoder ------------------------------------------
# Written from ggml-quants.c's dequantize_row_* (not from gguf-py), vectorized over blocks.


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(b[:, at:at + 2]).view(np.float16).astype(np.float32)[:, 0]


def _scale_min_k4(j: int, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = q.astype(np.int32)
    if j < 4:
        return q[:, j] & 63, q[:, j + 4] & 63
    return (q[:, j + 4] & 0xF) | ((q[:, j - 4] >> 6) << 4), (q[:, j + 4] >> 4) | ((q[:, j] >> 6) << 4)


def _ref_q8_0(b):
    return _f16(b, 0)[:, None] * b[:, 2:34].view(np.int8).astype(np.float32)


def _ref_q4_0(b):
    qs = b[:, 2:18].astype(np.int32)
    return _f16(b, 0)[:, None] * np.concatenate([(qs & 0xF) - 8, (qs >> 4) - 8], 1)


def _ref_q4_1(b):
    qs = b[:, 4:20].astype(np.int32)
    return _f16(b, 0)[:, None] * np.concatenate([qs & 0xF, qs >> 4], 1) + _f16(b, 2)[:, None]


def _ref_q4_k(b):
    d, dmin, scales, qs = _f16(b, 0)[:, None], _f16(b, 2)[:, None], b[:, 4:16], b[:, 16:144].astype(np.int32)
    out = []
    for n in range(4):
        (s1, m1), (s2, m2) = _scale_min_k4(2 * n, scales), _scale_min_k4(2 * n + 1, scales)
        q = qs[:, 32 * n:32 * n + 32]
        out += [d * s1[:, None] * (q & 0xF) - dmin * m1[:, None], d * s2[:, None] * (q >> 4) - dmin * m2[:, None]]
    return np.concatenate(out, 1)


def _ref_q5_k(b):
    d, dmin, scales = _f16(b, 0)[:, None], _f16(b, 2)[:, None], b[:, 4:16]
    qh, ql = b[:, 16:48].astype(np.int32), b[:, 48:176].astype(np.int32)
    out, u1, u2 = [], 1, 2
    for n in range(4):
        (s1, m1), (s2, m2) = _scale_min_k4(2 * n, scales), _scale_min_k4(2 * n + 1, scales)
        q = ql[:, 32 * n:32 * n + 32]
        out += [d * s1[:, None] * ((q & 0xF) + np.where(qh & u1, 16, 0)) - dmin * m1[:, None],
                d * s2[:, None] * ((q >> 4) + np.where(qh & u2, 16, 0)) - dmin * m2[:, None]]
        u1, u2 = u1 << 2, u2 << 2
    return np.concatenate(out, 1)


def _ref_q6_k(b):
    ql, qh = b[:, :128].astype(np.int32), b[:, 128:192].astype(np.int32)
    sc, d = b[:, 192:208].view(np.int8).astype(np.float32), _f16(b, 208)
    y = np.zeros((b.shape[0], 256), np.float32)
    for n in range(2):
        L, H, S, base = ql[:, 64 * n:], qh[:, 32 * n:], sc[:, 8 * n:], 128 * n
        for l in range(32):
            i = l // 16
            y[:, base + l] = d * S[:, i] * (((L[:, l] & 0xF) | (((H[:, l] >> 0) & 3) << 4)) - 32)
            y[:, base + l + 32] = d * S[:, i + 2] * (((L[:, l + 32] & 0xF) | (((H[:, l] >> 2) & 3) << 4)) - 32)
            y[:, base + l + 64] = d * S[:, i + 4] * (((L[:, l] >> 4) | (((H[:, l] >> 4) & 3) << 4)) - 32)
            y[:, base + l + 96] = d * S[:, i + 6] * (((L[:, l + 32] >> 4) | (((H[:, l] >> 6) & 3) << 4)) - 32)
    return y


def _ref_bf16(b):
    return (b.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _ref_f16(b):
    return b.view(np.float16).astype(np.float32)


def _ref_f32(b):
    return b.view(np.float32)


# type: (reference decoder, byte offsets of the block's f16 scales, to be set to sane values)
REFERENCE = {
    Q.F32: (_ref_f32, None), Q.F16: (_ref_f16, None), Q.BF16: (_ref_bf16, None),
    Q.Q8_0: (_ref_q8_0, (0,)), Q.Q4_0: (_ref_q4_0, (0,)), Q.Q4_1: (_ref_q4_1, (0, 2)),
    Q.Q4_K: (_ref_q4_k, (0, 2)), Q.Q5_K: (_ref_q5_k, (0, 2)), Q.Q6_K: (_ref_q6_k, (208,)),
}
# K-quants pack 256 values a block: a model whose rows are multiples of 256
QUANT_CONFIG = dict(arch="llama", vocab_size=64, context_length=64, n_layer=1, n_head=4, n_kv_head=2,
                    n_embd=256, intermediate_size=512, bias=False, tie_embeddings=False, rope_base=10000.0)
LLAMA_TENSORS = {  # GGUF name: PyTorch shape, for QUANT_CONFIG
    "token_embd.weight": (64, 256), "output.weight": (64, 256), "output_norm.weight": (256,),
    "blk.0.attn_norm.weight": (256,), "blk.0.ffn_norm.weight": (256,),
    "blk.0.attn_q.weight": (256, 256), "blk.0.attn_k.weight": (128, 256), "blk.0.attn_v.weight": (128, 256),
    "blk.0.attn_output.weight": (256, 256), "blk.0.ffn_gate.weight": (512, 256),
    "blk.0.ffn_up.weight": (512, 256), "blk.0.ffn_down.weight": (256, 512),
}


def random_raw(shape: tuple[int, ...], qtype, rng: np.random.Generator) -> np.ndarray:
    """Random bytes in `qtype`'s layout, with finite, modest scales: (rows, bytes per row) uint8."""
    if qtype == Q.F32:
        return rng.normal(0, 0.1, shape).astype(np.float32)
    if qtype == Q.F16:
        return rng.normal(0, 0.1, shape).astype(np.float16)
    if qtype == Q.BF16:
        return (rng.normal(0, 0.1, shape).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    blocks = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
    for at in REFERENCE[qtype][1]:
        blocks[:, at:at + 2] = rng.uniform(0.001, 0.01, (len(blocks), 1)).astype(np.float16).view(np.uint8)
    return blocks.reshape(rows, cols // block * size)


def decode(raw: np.ndarray, qtype, shape) -> np.ndarray:
    ref, _ = REFERENCE[qtype]
    if qtype in (Q.F32, Q.F16):
        return ref(raw).reshape(shape)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return ref(raw.reshape(-1, size)).reshape(shape)


def write_raw_gguf(path: Path, tensors: dict, arch: str = "llama", meta: dict | None = None,
                   config: dict = QUANT_CONFIG) -> Path:
    """A GGUF written with gguf-py directly: tensors {name: (data, raw type or None)}."""
    w = gguf.GGUFWriter(path, arch)
    defaults = {f"{arch}.block_count": config["n_layer"], f"{arch}.context_length": config["context_length"],
                f"{arch}.embedding_length": config["n_embd"], f"{arch}.feed_forward_length": config["intermediate_size"],
                f"{arch}.attention.head_count": config["n_head"], f"{arch}.attention.head_count_kv": config["n_kv_head"],
                f"{arch}.rope.freq_base": config["rope_base"], f"{arch}.attention.layer_norm_rms_epsilon": 1e-5}
    for key, value in {**defaults, **(meta or {})}.items():
        if value is None:
            continue
        if isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    for name, (data, raw_dtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def raw_llama(qtype, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {name: (random_raw(shape, Q.F32 if len(shape) == 1 else qtype, rng),
                   None if len(shape) == 1 or qtype in (Q.F32, Q.F16) else qtype)
            for name, shape in LLAMA_TENSORS.items()}


@pytest.mark.parametrize("qtype", list(REFERENCE), ids=lambda q: q.name)
def test_every_quantization_dequantizes_like_llama_cpp(tmp_path, qtype):
    tensors = raw_llama(qtype)
    ckpt = read_gguf(write_raw_gguf(tmp_path / "m.gguf", tensors))
    c = ckpt.config
    assert c == Config(**{**QUANT_CONFIG, "name": ""})

    def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:  # transformers' reverse_permute
        return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

    native = {"token_embd.weight": "wte.weight", "output.weight": "lm_head.weight", "output_norm.weight": "norm_f.weight",
              "blk.0.attn_norm.weight": "blocks.0.norm_1.weight", "blk.0.ffn_norm.weight": "blocks.0.norm_2.weight",
              "blk.0.attn_q.weight": "blocks.0.attn.q_proj.weight", "blk.0.attn_k.weight": "blocks.0.attn.k_proj.weight",
              "blk.0.attn_v.weight": "blocks.0.attn.v_proj.weight", "blk.0.attn_output.weight": "blocks.0.attn.o_proj.weight",
              "blk.0.ffn_gate.weight": "blocks.0.mlp.gate_proj.weight", "blk.0.ffn_up.weight": "blocks.0.mlp.up_proj.weight",
              "blk.0.ffn_down.weight": "blocks.0.mlp.down_proj.weight"}
    assert set(ckpt.state_dict) == set(native.values())
    for name, shape in LLAMA_TENSORS.items():
        data, _ = tensors[name]
        want = decode(data, qtype if len(shape) > 1 else Q.F32, shape)
        if name == "blk.0.attn_q.weight":
            want = unpermute(want, c.n_head)
        elif name == "blk.0.attn_k.weight":
            want = unpermute(want, c.n_kv_head)
        got = ckpt.state_dict[native[name]]
        assert got.dtype == torch.float32 and tuple(got.shape) == shape
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7, err_msg=name)
    assert torch.isfinite(GPT.from_state_dict(c, ckpt.state_dict)(torch.tensor([[1, 2, 3]]))).all()


@pytest.mark.parametrize("qtype", [Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K], ids=lambda q: q.name)
def test_other_quantizations_load(tmp_path, qtype):
    """No independent decoder here; these check the wiring (block shapes) of further gguf-py types."""
    rng = np.random.default_rng(0)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    tensors = {}
    for name, shape in LLAMA_TENSORS.items():
        if len(shape) == 1:
            tensors[name] = (rng.normal(1, 0.1, shape).astype(np.float32), None)
        else:  # quantize real values where gguf-py can, else the all-zero blocks (every scale 0)
            try:
                tensors[name] = (gguf.quants.quantize(rng.normal(0, 0.1, shape).astype(np.float32), qtype), qtype)
            except NotImplementedError:
                tensors[name] = (np.zeros((shape[0], shape[1] // block * size), np.uint8), qtype)
    ckpt = read_gguf(write_raw_gguf(tmp_path / "m.gguf", tensors))
    assert ckpt.state_dict["blocks.0.mlp.down_proj.weight"].shape == (256, 512)


def test_read_gguf_casts_to_the_requested_dtype(tmp_path):
    ckpt = read_gguf(write_raw_gguf(tmp_path / "m.gguf", raw_llama(Q.Q8_0)), dtype=torch.bfloat16)
    assert {t.dtype for t in ckpt.state_dict.values()} == {torch.bfloat16}


# -- damaged and unsupported files -------------------------------------------------------------------


@pytest.fixture
def small_gguf(tmp_path) -> Path:
    model = tiny_model("llama-nano")
    return write_gguf(Checkpoint(model.config, model.state_dict()), tmp_path / "small.gguf", "q8_0")


def data_end(path: Path) -> int:
    reader = gguf.GGUFReader(path)
    return max(int(t.data_offset) + int(t.n_bytes) for t in reader.tensors)


def test_missing_file_directory_and_not_gguf(tmp_path):
    with pytest.raises(GptsError, match="No such GGUF file"):
        read_gguf(tmp_path / "nope.gguf")
    with pytest.raises(GptsError, match="directory"):
        read_gguf(tmp_path)
    for content in (b"", b"GG", b'{"model_type": "llama"}', b"PK\x03\x04" + bytes(100)):
        (tmp_path / "x.gguf").write_bytes(content)
        with pytest.raises(GptsError, match="not a GGUF file") as e:
            read_gguf(tmp_path / "x.gguf")
        assert "download" in e.value.fix


def test_truncated_files_are_clear_errors(tmp_path, small_gguf):
    raw = small_gguf.read_bytes()
    end = data_end(small_gguf)
    cuts = sorted({4, 6, 8, 12, 20, 24, 30, 40, 64, 100, 200, 500, 1000, 2000, end // 2, end - 100, end - 1,
                   *range(4, 3000, 97)})
    for cut in cuts:
        assert cut < end
        (tmp_path / "cut.gguf").write_bytes(raw[:cut])
        with pytest.raises(GptsError) as e:
            read_gguf(tmp_path / "cut.gguf")
        assert "download" in e.value.fix, cut


def _tensor_info_offset(raw: bytes, name: str) -> int:
    """Where the tensor info after `name` starts: n_dims (u32), dims (u64 each), type (u32), offset (u64)."""
    encoded = name.encode()
    at = raw.index(struct.pack("<Q", len(encoded)) + encoded)
    return at + 8 + len(encoded)


@pytest.mark.parametrize("corruption", ["type", "huge_dim", "swapped_dims", "offset", "kv_type", "kv_count",
                                        "nan"])
def test_corrupt_files_are_clear_errors(tmp_path, small_gguf, corruption):
    raw = bytearray(small_gguf.read_bytes())
    info = _tensor_info_offset(raw, "blk.0.attn_q.weight")
    n_dims = struct.unpack_from("<I", raw, info)[0]
    assert n_dims == 2
    dims_at, type_at, offset_at = info + 4, info + 4 + 16, info + 4 + 16 + 4
    if corruption == "type":
        struct.pack_into("<I", raw, type_at, 200)
    elif corruption == "huge_dim":
        struct.pack_into("<Q", raw, dims_at + 8, 2**40)
    elif corruption == "swapped_dims":  # a valid-looking but wrong shape: (128, 64) -> (64, 128) won't fit q
        a, b = struct.unpack_from("<QQ", raw, dims_at)
        struct.pack_into("<QQ", raw, dims_at, a * 2, b // 2)
    elif corruption == "offset":
        struct.pack_into("<Q", raw, offset_at, len(raw) * 4)
    elif corruption == "kv_type":  # the value type of general.architecture
        key = b"general.architecture"
        at = raw.index(key) + len(key)
        struct.pack_into("<I", raw, at, 99)
    elif corruption == "kv_count":
        struct.pack_into("<Q", raw, 16, 10**6)
    elif corruption == "nan":
        norm = _tensor_info_offset(raw, "output_norm.weight")
        rel = struct.unpack_from("<Q", raw, norm + 4 + 8 + 4)[0]
        data_offset = gguf.GGUFReader(small_gguf).data_offset
        struct.pack_into("<f", raw, data_offset + rel + 8, float("nan"))
    (tmp_path / "bad.gguf").write_bytes(bytes(raw))
    with pytest.raises(GptsError) as e:
        read_gguf(tmp_path / "bad.gguf")
    assert "download" in e.value.fix or "download" in e.value.problem


def test_unsupported_architecture(tmp_path):
    rng = np.random.default_rng(0)
    path = write_raw_gguf(tmp_path / "m.gguf", {"token_embd.weight": (rng.normal(size=(64, 256)).astype(np.float32), None)},
                          arch="mamba")
    with pytest.raises(GptsError, match="'mamba'") as e:
        read_gguf(path)
    assert "llama" in e.value.problem and "gpt2" in e.value.problem


def test_missing_metadata_missing_and_extra_tensors(tmp_path):
    tensors = raw_llama(Q.F16)
    path = write_raw_gguf(tmp_path / "a.gguf", tensors, meta={"llama.block_count": None})
    with pytest.raises(GptsError, match="llama.block_count"):
        read_gguf(path)
    path = write_raw_gguf(tmp_path / "b.gguf", {k: v for k, v in tensors.items() if k != "blk.0.ffn_up.weight"})
    with pytest.raises(GptsError, match="blk.0.ffn_up.weight"):
        read_gguf(path)
    extra = {**tensors, "blk.0.ffn_gate_inp.weight": (np.zeros((8, 256), np.float32), None)}
    with pytest.raises(GptsError, match="ffn_gate_inp"):
        read_gguf(write_raw_gguf(tmp_path / "c.gguf", extra))
    linear = {"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0}
    with pytest.raises(GptsError, match="linear"):
        read_gguf(write_raw_gguf(tmp_path / "d.gguf", tensors, meta=linear))
    odd_freqs = {**tensors, "rope_freqs.weight": (np.linspace(1, 3, 32).astype(np.float32) ** 2, None)}
    with pytest.raises(GptsError, match="Llama-3"):
        read_gguf(write_raw_gguf(tmp_path / "e.gguf", odd_freqs))


# -- the bundled SmolLM2 GGUF ------------------------------------------------------------------------


def test_bundled_model_metadata(bundled_gguf):
    ckpt = read_gguf(bundled_gguf, tokenizer=False)
    assert ckpt.config == dataclasses.replace(Config.from_name("smollm2-135m"), name=ckpt.config.name)
    assert ckpt.generation == {"bos_token_id": 1, "eos_token_id": [2], "pad_token_id": 2}


@pytest.fixture(scope="module")
def smollm2(hf_smollm2, bundled_gguf):
    """(our model, transformers' model, transformers' tokenizer, our checkpoint) from the bundled GGUF."""
    hf, tok = hf_smollm2
    ckpt = read_gguf(bundled_gguf, tokenizer=False)
    ours = GPT.from_state_dict(ckpt.config, ckpt.state_dict).eval()
    return ours, hf, tok, ckpt


def greedy(model: GPT, ids: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    """Greedy decoding with the KV cache: prefill the prompt, then one token a step."""
    cache = model.new_cache(1, len(ids) + max_new_tokens)
    x, out = torch.tensor([ids]), []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(x, cache=cache, last_only=True)[0, -1].argmax())
            out.append(token)
            if token in eos:
                break
            x = torch.tensor([[token]])
    return out


def chat_prompt(tok) -> str:
    return tok.apply_chat_template([{"role": "user", "content": "Write a short story about a robot who learns to paint."}],
                                   add_generation_prompt=True, tokenize=False)


RAW_PROMPT = "The history of the printing press begins in"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["chat", "raw"])
def test_bundled_model_matches_transformers(smollm2, kind):
    ours, hf, tok, ckpt = smollm2
    text = chat_prompt(tok) if kind == "chat" else RAW_PROMPT
    ids = tok(text, add_special_tokens=False).input_ids
    with torch.no_grad():
        a, b = ours(torch.tensor([ids])), hf(torch.tensor([ids])).logits
    diff = (a - b).abs().max().item()
    print(f"SmolLM2 {kind} prompt ({len(ids)} tokens): max abs logit diff vs transformers {diff:.3g}")
    assert diff < 1e-3

    mine = greedy(ours, ids, 48, ckpt.generation["eos_token_id"])
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=48)[0, len(ids):].tolist()
    assert mine == theirs
    assert len(mine) == 48, tok.decode(mine)


# -- the tokenizer's metadata (needs gpts.tokenizer's GGUF support) ----------------------------------


@pytest.mark.slow
def test_bundled_tokenizer_matches_transformers_and_round_trips(tmp_path, smollm2, bundled_gguf):
    _, _, hf_tok, _ = smollm2
    ckpt = read_gguf(bundled_gguf)
    tok = ckpt.tokenizer
    assert tok is not None
    for text in (chat_prompt(hf_tok), RAW_PROMPT, "naïve café — 東京 🤖 1234567  spaces\n\ttabs"):
        assert tok.encode(text, add_special=False) == hf_tok(text, add_special_tokens=False).input_ids

    # A tiny model with the SmolLM2 vocabulary, written with its tokenizer and read back.
    torch.manual_seed(0)
    small = GPT(Config.from_name("llama-nano", vocab_size=tok.vocab_size)).eval()
    out = write_gguf(Checkpoint(small.config, small.state_dict(), tok, ckpt.generation), tmp_path / "t.gguf", "f16")
    back = read_gguf(out)
    assert back.tokenizer is not None and back.generation == ckpt.generation
    assert back.tokenizer.encode(RAW_PROMPT) == tok.encode(RAW_PROMPT)
    assert back.tokenizer.to_gguf_metadata() == tok.to_gguf_metadata()


@pytest.mark.slow
def test_bundled_model_rewritten_loads_in_transformers(tmp_path, smollm2, bundled_gguf):
    """Our writer's file, tokenizer included, as transformers reads it: the same logits as the original."""
    transformers = pytest.importorskip("transformers")
    ours, _, hf_tok, _ = smollm2
    ckpt = read_gguf(bundled_gguf)
    out = write_gguf(ckpt, tmp_path / "smol.gguf", "f32")
    try:
        hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name, dtype=torch.float32).eval()
        tok = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)
    finally:
        out.unlink()  # 0.5 GB; pytest keeps the temp directories of recent runs
    ids = hf_tok(chat_prompt(hf_tok), add_special_tokens=False).input_ids
    assert tok(chat_prompt(hf_tok), add_special_tokens=False).input_ids == ids
    with torch.no_grad():
        torch.testing.assert_close(hf(torch.tensor([ids])).logits, ours(torch.tensor([ids])), atol=1e-4, rtol=0)
