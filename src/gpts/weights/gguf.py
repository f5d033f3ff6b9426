"""GGUF (llama.cpp's single-file format) in and out, for the "llama" and "gpt2" architectures.

Reading dequantizes every tensor (F32, F16, BF16, Q8_0, Q4_0/1, Q5_0/1, the K-quants, ...) with
`gguf.quants.dequantize` to float tensors under the native names of gpts/model.py. Writing produces
F32, F16 or Q8_0 files that llama.cpp, transformers and `read_gguf` load.

Layout differences from the native (Hugging Face) layout, all undone here:
- GGUF lists a tensor's dims fastest first (ne0, ne1, ...): the PyTorch shape is the reverse.
- llama.cpp's converter permutes the rows of Llama's Q and K projections (its RoPE rotates
  interleaved pairs, ours rotates halves): `_permute_qk` / `_unpermute_qk`.
- GPT-2's q, k and v are one fused `attn_qkv` tensor, rows [q; k; v].
- Llama-3 style RoPE scaling is stored as a `rope_freqs.weight` tensor of per-frequency divisors,
  not as metadata; reading fits the Llama-3 parameters back from it.

A GGUF written without a tokenizer (`ckpt.tokenizer is None`) holds the weights and the model shape
only: `read_gguf` loads it (tokenizer None), but llama.cpp refuses it, as it needs the vocabulary.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from gpts.checkpoint import Checkpoint
from gpts.config import Config
from gpts.errors import GptsError
from gpts.fileio import atomic_path
from gpts.model import GPT, rope_inv_freq
from gpts.tokenizer import Tokenizer
from gpts.weights import expand_names

# -- name tables: {native name pattern: GGUF name pattern} ------------------------------------------

LLAMA_NAMES: dict[str, str] = {
    "wte.weight": "token_embd.weight",
    "blocks.{i}.norm_1.weight": "blk.{i}.attn_norm.weight",
    "blocks.{i}.attn.q_proj.weight": "blk.{i}.attn_q.weight",
    "blocks.{i}.attn.q_proj.bias": "blk.{i}.attn_q.bias",
    "blocks.{i}.attn.k_proj.weight": "blk.{i}.attn_k.weight",
    "blocks.{i}.attn.k_proj.bias": "blk.{i}.attn_k.bias",
    "blocks.{i}.attn.v_proj.weight": "blk.{i}.attn_v.weight",
    "blocks.{i}.attn.v_proj.bias": "blk.{i}.attn_v.bias",
    "blocks.{i}.attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "blocks.{i}.attn.o_proj.bias": "blk.{i}.attn_output.bias",
    "blocks.{i}.norm_2.weight": "blk.{i}.ffn_norm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "blk.{i}.ffn_gate.weight",
    "blocks.{i}.mlp.gate_proj.bias": "blk.{i}.ffn_gate.bias",
    "blocks.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "blocks.{i}.mlp.up_proj.bias": "blk.{i}.ffn_up.bias",
    "blocks.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "blocks.{i}.mlp.down_proj.bias": "blk.{i}.ffn_down.bias",
    "norm_f.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

GPT2_NAMES: dict[str, str] = {
    "wte.weight": "token_embd.weight",
    "wpe.weight": "position_embd.weight",
    "blocks.{i}.norm_1.weight": "blk.{i}.attn_norm.weight",
    "blocks.{i}.norm_1.bias": "blk.{i}.attn_norm.bias",
    "blocks.{i}.attn.o_proj.weight": "blk.{i}.attn_output.weight",
    "blocks.{i}.attn.o_proj.bias": "blk.{i}.attn_output.bias",
    "blocks.{i}.norm_2.weight": "blk.{i}.ffn_norm.weight",
    "blocks.{i}.norm_2.bias": "blk.{i}.ffn_norm.bias",
    "blocks.{i}.mlp.up_proj.weight": "blk.{i}.ffn_up.weight",
    "blocks.{i}.mlp.up_proj.bias": "blk.{i}.ffn_up.bias",
    "blocks.{i}.mlp.down_proj.weight": "blk.{i}.ffn_down.weight",
    "blocks.{i}.mlp.down_proj.bias": "blk.{i}.ffn_down.bias",
    "norm_f.weight": "output_norm.weight",
    "norm_f.bias": "output_norm.bias",
    "lm_head.weight": "output.weight",
}

# GGUF tensors that hold several native ones, stacked along dim 0: {GGUF pattern: native patterns}.
GPT2_FUSED: dict[str, tuple[str, ...]] = {
    "blk.{i}.attn_qkv.weight": ("blocks.{i}.attn.q_proj.weight", "blocks.{i}.attn.k_proj.weight",
                                "blocks.{i}.attn.v_proj.weight"),
    "blk.{i}.attn_qkv.bias": ("blocks.{i}.attn.q_proj.bias", "blocks.{i}.attn.k_proj.bias",
                              "blocks.{i}.attn.v_proj.bias"),
}

NAMES = {"llama": LLAMA_NAMES, "gpt2": GPT2_NAMES}
FUSED: dict[str, dict[str, tuple[str, ...]]] = {"llama": {}, "gpt2": GPT2_FUSED}
SUPPORTED_ARCHS = tuple(NAMES)
ROPE_FREQS = "rope_freqs.weight"

# generation defaults stored as llama.cpp's general.sampling.* keys: {generation key: (GGUF key, type)}
SAMPLING_KEYS: dict[str, tuple[str, gguf.GGUFValueType]] = {
    "temperature": ("general.sampling.temp", gguf.GGUFValueType.FLOAT32),
    "top_k": ("general.sampling.top_k", gguf.GGUFValueType.INT32),
    "top_p": ("general.sampling.top_p", gguf.GGUFValueType.FLOAT32),
    "min_p": ("general.sampling.min_p", gguf.GGUFValueType.FLOAT32),
    "repetition_penalty": ("general.sampling.penalty_repeat", gguf.GGUFValueType.FLOAT32),
}
# end-of-generation tokens, in the order they are filled when writing
END_TOKEN_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")

WRITE_DTYPES = ("f32", "f16", "q8_0")
_FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
               "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}

_REDOWNLOAD = "The file is damaged or incomplete: download (or convert) it again."


# -- Q/K row permutation (llama.cpp convert_hf_to_gguf.py `LlamaModel.permute` and its inverse) -----


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Native (halves) row order -> llama.cpp (interleaved pairs) order, per head; w is (n_head*hs, ...)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of `_permute_qk`."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qk_heads(config: Config, native: str) -> int | None:
    """How many heads to (un)permute native tensor `native` by, or None when it is not Llama's Q or K."""
    if config.arch != "llama":
        return None
    if ".attn.q_proj." in native:
        return config.n_head
    if ".attn.k_proj." in native:
        return config.n_kv_head
    return None


# -- reading ----------------------------------------------------------------------------------------


class _Reader(gguf.GGUFReader):
    """GGUFReader parsing a plain ndarray view of its memory map rather than the np.memmap itself:
    the same bytes, without np.memmap's per-slice overhead (3x faster on a 49k-token vocabulary)."""

    @property
    def data(self) -> np.ndarray:
        return self._buffer

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._buffer = np.asarray(value)


def _open(path: Path) -> gguf.GGUFReader:
    if not path.exists():
        raise GptsError(f"No such GGUF file: {path}.", "Check the path, or download the model first.")
    if path.is_dir():
        raise GptsError(f"{path} is a directory, not a GGUF file.", "Pass the path of the .gguf file inside it.")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise GptsError(f"Cannot read {path}: {e.strerror or e}.", "Check the file's permissions.") from e
    if len(magic) < 4:
        raise GptsError(f"{path} is not a GGUF file: it is only {len(magic)} bytes long.", _REDOWNLOAD)
    if int.from_bytes(magic, "little") != gguf.GGUF_MAGIC:
        raise GptsError(f"{path} is not a GGUF file (it does not start with the bytes 'GGUF').",
                        f"{_REDOWNLOAD} If it is another format, load it as that format.")
    try:
        return _Reader(path)
    except Exception as e:  # GGUFReader raises ValueError, IndexError, KeyError, ... on a damaged file
        raise GptsError(f"{path} is a truncated or damaged GGUF file ({path.stat().st_size} bytes); parsing it failed "
                        f"with {type(e).__name__}: {str(e).rstrip('.')}.", _REDOWNLOAD) from e


def _f32(value: float) -> float:
    """A FLOAT32 metadata value as the short decimal it was written from (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(value)))


def _field_value(field: Any) -> Any:
    """A metadata field as a plain Python value (str, int, float, bool, or a list of them)."""
    types = field.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) == 1 or not field.data:
            return []
        if types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        values = np.concatenate([field.parts[i] for i in field.data]).tolist()
        return [_f32(v) for v in values] if types[-1] == gguf.GGUFValueType.FLOAT32 else values
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", errors="replace")
    value = field.parts[-1].tolist()[0]
    return _f32(value) if types[0] == gguf.GGUFValueType.FLOAT32 else value


def _metadata(reader: gguf.GGUFReader) -> dict[str, Any]:
    # "GGUF.*" are the reader's own entries for the header (version, counts), not metadata.
    return {name: _field_value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}


def _torch_shape(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(t.shape.tolist()))


def _array(t: Any) -> np.ndarray:
    """One GGUF tensor (a gguf ReaderTensor), dequantized to float32, in its PyTorch shape.

    (The tensor plumbing stays in numpy: single-threaded and predictable, where torch's small-tensor
    copies were measured 10x slower on a busy 2-core machine.)"""
    try:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
    except NotImplementedError as e:
        raise GptsError(f"Tensor {t.name} is stored as {t.tensor_type.name}, which gpts cannot dequantize.",
                        "Use a file with a common quantization (F16, Q8_0, Q4_K_M, Q6_K, ...).") from e
    arr = arr.reshape(_torch_shape(t))
    if not arr.flags.writeable:  # F32 comes back as a view of the file's memory map: own the memory
        arr = arr.copy()
    if not np.isfinite(arr).all():  # (numpy's check is many times faster than torch's here)
        raise GptsError(f"Tensor {t.name} holds NaN or infinite values.", _REDOWNLOAD)
    return arr


def _required(meta: dict[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise GptsError(f"{path} lacks the metadata key {key!r} that describes the model's shape.",
                        f"{_REDOWNLOAD} If you made it yourself, convert it with llama.cpp's convert_hf_to_gguf.py.")
    return meta[key]


def _uniform(value: Any, key: str) -> Any:
    """Some GGUFs give a per-layer list (e.g. head_count_kv); gpts needs one value for every layer."""
    if isinstance(value, list):
        if not value or any(v != value[0] for v in value):
            raise GptsError(f"{key} differs between layers ({value}).", "gpts supports models whose layers are all alike.")
        return value[0]
    return value


def _same_bytes(a: Any, b: Any) -> bool:
    return a.tensor_type == b.tensor_type and a.data.shape == b.data.shape and np.array_equal(a.data, b.data)


def _config(meta: dict[str, Any], tensors: dict[str, Any], path: Path) -> Config:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise GptsError(f"{path} holds a {arch!r} model; gpts reads GGUF architectures {', '.join(SUPPORTED_ARCHS)}.",
                        "Use a GGUF of a Llama-family (e.g. SmolLM2, Llama 3, TinyLlama) or GPT-2 model.")

    def req(key: str) -> Any:
        return _uniform(_required(meta, f"{arch}.{key}", path), f"{arch}.{key}")

    embd = tensors.get("token_embd.weight")
    if embd is None:
        raise GptsError(f"{path} has no token_embd.weight tensor.", _REDOWNLOAD)
    n_embd, n_head = int(req("embedding_length")), int(req("attention.head_count"))
    n_kv_head = int(_uniform(meta.get(f"{arch}.attention.head_count_kv", n_head), f"{arch}.attention.head_count_kv"))
    output = tensors.get("output.weight")
    # A tied model has no output.weight; some converters (old GPT-2 ones) store a byte-identical copy.
    tied = output is None or _same_bytes(output, embd)
    kw: dict[str, Any] = dict(
        arch=arch, name=str(meta.get("general.name", "")), vocab_size=_torch_shape(embd)[0],
        context_length=int(req("context_length")), n_layer=int(req("block_count")), n_head=n_head,
        n_kv_head=n_kv_head, n_embd=n_embd, intermediate_size=int(req("feed_forward_length")),
        tie_embeddings=tied,
    )
    bad = {k: kw[k] for k in ("context_length", "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size")
           if kw[k] <= 0}
    if bad:
        raise GptsError(f"{path} describes an impossible model shape: {bad}.", _REDOWNLOAD)
    if arch == "llama":
        kw.update(norm_eps=float(req("attention.layer_norm_rms_epsilon")),
                  rope_base=float(meta.get("llama.rope.freq_base", 10000.0)),
                  bias="blk.0.attn_q.bias" in tensors)
        head_dim = n_embd // n_head if n_head else 0
        for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
            if f"llama.{key}" in meta and int(meta[f"llama.{key}"]) != head_dim:
                raise GptsError(f"llama.{key} is {meta[f'llama.{key}']}, but gpts needs embedding_length / head_count "
                                f"= {head_dim}.", "Models with a separate head size are not supported.")
        scaling = meta.get("llama.rope.scaling.type")
        if scaling == "linear" and meta.get("llama.rope.scaling.factor", 1.0) == 1.0:
            scaling = None  # a no-op
        if scaling not in (None, "none", ""):
            raise GptsError(f"{path} uses {scaling!r} RoPE scaling.", "gpts supports Llama-3 style scaling only.")
    else:
        kw.update(norm_eps=float(req("attention.layer_norm_epsilon")), bias="blk.0.attn_qkv.bias" in tensors)
    try:
        config = Config(**kw)
    except GptsError as e:
        raise GptsError(f"{path} describes an impossible model shape: {e.problem}", _REDOWNLOAD) from e
    if arch == "llama" and ROPE_FREQS in tensors:
        config.rope_scaling = _fit_llama3_scaling(config, torch.from_numpy(_array(tensors[ROPE_FREQS])))
    return config


def _fit_llama3_scaling(config: Config, factors: torch.Tensor) -> dict[str, Any] | None:
    """Llama-3 rope_scaling parameters whose per-frequency divisors are `factors` (llama.cpp's rope_freqs).

    Only two combinations of (low_freq_factor, high_freq_factor, original_max_position_embeddings)
    shape the curve, so low_freq_factor is fixed at 1 and the other two fitted; the result is checked.
    """
    base = rope_inv_freq(Config(**{**config.to_dict(), "rope_scaling": None}), torch.device("cpu")).double()
    r = factors.double().flatten()
    if r.shape != base.shape:
        raise GptsError(f"rope_freqs.weight has {r.numel()} values; the model's head size needs {base.numel()}.",
                        _REDOWNLOAD)
    factor = float(r.max())
    if abs(factor - 1.0) < 1e-6:
        return None
    # With low_freq_factor 1, the blend weight is s = a * x + b in x = 1 / wavelength, where
    # a = orig / (high - 1) and b = -1 / (high - 1); s <= 0 means fully scaled, s >= 1 unscaled.
    x = base / (2 * math.pi)
    unscaled, scaled = (r - 1).abs() <= 1e-4, (r - factor).abs() <= 1e-4 * factor
    medium = ~unscaled & ~scaled
    s = (1 / r - 1 / factor) / (1 - 1 / factor)
    x_s = float(x[scaled].max())  # the fastest fully scaled frequency
    x_u = float(x[unscaled].min()) if unscaled.any() else 2 * x_s  # the slowest unscaled one
    if int(medium.sum()) >= 2:  # fit the blend region
        a, b = np.polyfit(x[medium].numpy(), s[medium].numpy(), 1)
    elif int(medium.sum()) == 1:  # the shallowest line through the one blended point that bounds the rest
        x_m, s_m = float(x[medium][0]), float(s[medium][0])
        a = max(s_m / (x_m - x_s), (1 - s_m) / (x_u - x_m) if unscaled.any() else 0.0)
        b = s_m - a * x_m
    else:  # no blend region: the boundaries fall between x_s and x_u
        a = 1 / (x_u - x_s)
        b = -a * x_s
    high, orig = (1 - 1 / b, -a / b) if b < 0 else (float("nan"), float("nan"))

    def tidy(x: float) -> float | int:  # 8192.0000003 -> 8192
        return int(round(x)) if abs(x - round(x)) < 1e-4 * max(1.0, abs(x)) else round(float(x), 6)

    if math.isfinite(high) and math.isfinite(orig) and high > 1.0 and orig > 0:
        scaling = {"rope_type": "llama3", "factor": tidy(factor), "low_freq_factor": 1.0,
                   "high_freq_factor": tidy(high), "original_max_position_embeddings": tidy(orig)}
        fitted = base / rope_inv_freq(Config(**{**config.to_dict(), "rope_scaling": scaling}), torch.device("cpu"))
        if bool(((fitted.double() - r).abs() <= 1e-3 * r).all()):
            return scaling
    raise GptsError("rope_freqs.weight does not follow Llama-3 RoPE scaling.",
                    "gpts supports Llama-3 style scaling only; this model needs another kind.")


def _generation(meta: dict[str, Any]) -> dict[str, Any]:
    gen: dict[str, Any] = {}
    if isinstance(meta.get("tokenizer.ggml.bos_token_id"), int):
        gen["bos_token_id"] = meta["tokenizer.ggml.bos_token_id"]
    eos = [meta[k] for k in END_TOKEN_KEYS if isinstance(meta.get(k), int)]
    if eos:
        gen["eos_token_id"] = list(dict.fromkeys(eos))
    if isinstance(meta.get("tokenizer.ggml.padding_token_id"), int):
        gen["pad_token_id"] = meta["tokenizer.ggml.padding_token_id"]
    for key, (gguf_key, _) in SAMPLING_KEYS.items():
        if gguf_key in meta:
            gen[key] = meta[gguf_key]
    return gen


def read_gguf_metadata(path: str | Path) -> dict[str, Any]:
    """A GGUF file's metadata as plain Python values (cheap: no tensor is read)."""
    return _metadata(_open(Path(path)))


def read_gguf_summary(path: str | Path) -> tuple[dict[str, Any], int]:
    """A GGUF file's metadata and its parameter count, from the header alone (no tensor is read)."""
    reader = _open(Path(path))
    return _metadata(reader), sum(int(t.n_elements) for t in reader.tensors)


def read_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32, tokenizer: bool = True) -> Checkpoint:
    """A GGUF file's model as a Checkpoint: config, dequantized weights (in `dtype`), tokenizer
    (unless tokenizer=False, or the file has no vocabulary) and generation defaults."""
    path = Path(path)
    reader = _open(path)
    meta = _metadata(reader)
    tensors = {t.name: t for t in reader.tensors}
    config = _config(meta, tensors, path)

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    names = expand_names(NAMES[config.arch], config.n_layer)
    fused = {pattern.format(i=i): [part.format(i=i) for part in parts]
             for pattern, parts in FUSED[config.arch].items() for i in range(config.n_layer)}
    fused = {g: parts for g, parts in fused.items() if all(p in expected for p in parts)}
    in_fused = {p for parts in fused.values() for p in parts}
    plain = {native: names[native] for native in expected if native not in in_fused}

    missing = [g for g in [*plain.values(), *fused] if g not in tensors]
    if missing:
        raise GptsError(f"{path} lacks tensor(s) {', '.join(missing[:5])} of a {config.arch} model "
                        f"with {config.n_layer} layers.", _REDOWNLOAD)
    used = {*plain.values(), *fused, ROPE_FREQS}
    if config.tie_embeddings:
        used.add("output.weight")  # absent, or a byte-identical copy of token_embd.weight
    extra = sorted(set(tensors) - used)
    if extra:
        raise GptsError(f"{path} has tensor(s) a {config.arch} model does not: {', '.join(extra[:5])}.",
                        "This is a variant of the architecture that gpts does not support.")

    # (Dequantizing in threads measured no faster: numpy holds the GIL for most of it.)
    loaded = {name: _array(tensors[name]) for name in dict.fromkeys([*plain.values(), *fused])}
    del reader, tensors  # unmaps the file once nothing refers to it

    arrays: dict[str, np.ndarray] = {native: loaded[gguf_name] for native, gguf_name in plain.items()}
    for gguf_name, parts in fused.items():
        sizes = [expected[p][0] for p in parts]
        if loaded[gguf_name].shape[0] != sum(sizes):
            raise GptsError(f"Tensor {gguf_name} has shape {loaded[gguf_name].shape}; the metadata implies "
                            f"{sum(sizes)} rows.", _REDOWNLOAD)
        arrays.update(zip(parts, np.split(loaded[gguf_name], np.cumsum(sizes)[:-1])))
    state_dict: dict[str, torch.Tensor] = {}
    for native, shape in expected.items():
        a = arrays[native]
        if a.shape != shape:
            source = plain.get(native) or next(g for g, parts in fused.items() if native in parts)
            raise GptsError(f"Tensor {source} has shape {a.shape}, but the metadata implies {shape}.", _REDOWNLOAD)
        if (heads := _qk_heads(config, native)) is not None:
            a = _unpermute_qk(a, heads)
        state_dict[native] = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    tok = Tokenizer.from_gguf_metadata(meta) if tokenizer and "tokenizer.ggml.tokens" in meta else None
    return Checkpoint(config, state_dict, tok, _generation(meta))


# -- writing ----------------------------------------------------------------------------------------


def _add_metadata(writer: gguf.GGUFWriter, key: str, value: Any) -> None:
    """One metadata entry, typed as llama.cpp reads it: token ids and counts UINT32, floats FLOAT32."""
    V = gguf.GGUFValueType
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, bool):
        writer.add_key_value(key, value, V.BOOL)
    elif isinstance(value, int):
        writer.add_key_value(key, value, V.UINT32 if 0 <= value < 2**32 else V.INT64)
    elif isinstance(value, float):
        writer.add_key_value(key, value, V.FLOAT32)
    elif isinstance(value, str):
        writer.add_key_value(key, value, V.STRING)
    elif isinstance(value, (list, tuple)):
        if not value:
            return  # GGUF has no empty arrays
        items = list(value)
        if all(isinstance(v, str) for v in items):
            pass
        elif all(isinstance(v, bool) for v in items):
            pass
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            pass  # INT32, as llama.cpp's token_type
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
            items = [float(v) for v in items]  # FLOAT32, as llama.cpp's scores
        else:
            raise GptsError(f"Cannot write metadata {key!r}: a list mixing {sorted({type(v).__name__ for v in items})}.",
                            "This is a bug in the tokenizer's GGUF metadata.")
        writer.add_key_value(key, items, V.ARRAY)
    elif value is not None:
        raise GptsError(f"Cannot write metadata {key!r} of type {type(value).__name__}.",
                        "This is a bug in the tokenizer's GGUF metadata.")


def _arch_metadata(config: Config) -> dict[str, Any]:
    a = config.arch
    meta: dict[str, Any] = {
        f"{a}.vocab_size": config.vocab_size,
        f"{a}.context_length": config.context_length,
        f"{a}.embedding_length": config.n_embd,
        f"{a}.feed_forward_length": config.intermediate_size,
        f"{a}.block_count": config.n_layer,
        f"{a}.attention.head_count": config.n_head,
    }
    if a == "llama":
        meta.update({
            "llama.attention.head_count_kv": config.n_kv_head,
            "llama.rope.freq_base": float(config.rope_base),
            "llama.rope.dimension_count": config.head_dim,
            "llama.attention.layer_norm_rms_epsilon": float(config.norm_eps),
        })
    else:
        meta["gpt2.attention.layer_norm_epsilon"] = float(config.norm_eps)
    return meta


def _generation_metadata(generation: dict[str, Any], tokenizer_meta: dict[str, Any]) -> dict[str, Any]:
    """Generation defaults as GGUF keys; token ids only where the tokenizer's metadata lacks them."""
    meta: dict[str, Any] = {}
    eos = generation.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    known = {tokenizer_meta.get(k) for k in END_TOKEN_KEYS}
    free = [k for k in END_TOKEN_KEYS if k not in tokenizer_meta]
    for token_id in eos:
        if token_id not in known and free:
            meta[free.pop(0)] = int(token_id)
    for key, gguf_key in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                          ("pad_token_id", "tokenizer.ggml.padding_token_id")):
        if isinstance(generation.get(key), int) and gguf_key not in tokenizer_meta:
            meta[gguf_key] = generation[key]
    for key, (gguf_key, vtype) in SAMPLING_KEYS.items():
        if generation.get(key) is not None:
            meta[gguf_key] = (int if vtype == gguf.GGUFValueType.INT32 else float)(generation[key])
    return meta


def _gguf_tensors(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    """{GGUF name: float32 array in PyTorch shape}, permuted and fused as llama.cpp stores them."""
    config, sd = ckpt.config, ckpt.state_dict
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise GptsError(f"The checkpoint lacks tensor(s) {', '.join(missing[:5])}.",
                        "The weights and the config come from different models; export the checkpoint again.")
    names = expand_names(NAMES[config.arch], config.n_layer)

    def array(native: str) -> np.ndarray:
        return sd[native].detach().to("cpu", torch.float32).numpy()

    out: dict[str, np.ndarray] = {}
    in_fused: set[str] = set()
    for pattern, parts in FUSED[config.arch].items():
        for i in range(config.n_layer):
            natives = [p.format(i=i) for p in parts]
            if all(n in expected for n in natives):
                out[pattern.format(i=i)] = np.concatenate([array(n) for n in natives])
                in_fused.update(natives)
    for native in expected:
        if native in in_fused:
            continue
        a = array(native)
        if (heads := _qk_heads(config, native)) is not None:
            a = _permute_qk(a, heads)
        out[names[native]] = a
    if config.arch == "llama" and config.rope_scaling:
        unscaled = rope_inv_freq(Config(**{**config.to_dict(), "rope_scaling": None}), torch.device("cpu"))
        out[ROPE_FREQS] = (unscaled / rope_inv_freq(config, torch.device("cpu"))).numpy()
    # llama.cpp lists the tensors by layer; keep its order (helps diffs against its own files).
    return dict(sorted(out.items(), key=lambda kv: _tensor_order(kv[0])))


def _tensor_order(name: str) -> tuple[int, int, str]:
    if name.startswith("blk."):
        return (1, int(name.split(".")[1]), name)
    return (0 if name in ("token_embd.weight", "position_embd.weight", ROPE_FREQS) else 2, 0, name)


def _encode(arr: np.ndarray, dtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType | None]:
    """The data and raw type to write one tensor as: 1-D tensors (norms, biases) stay F32, as in
    llama.cpp; Q8_0 falls back to F16 for rows not a multiple of its 32-value block."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if arr.ndim <= 1 or dtype == "f32":
        return arr.astype(np.float32, copy=False), None
    if dtype == "q8_0" and arr.shape[-1] % 32 == 0:
        return gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
    return arr.astype(np.float16), None


def write_gguf(ckpt: Checkpoint, out: str | Path, dtype: str = "f16") -> Path:
    """Write `ckpt` as a GGUF file at `out` (atomically): weights as `dtype` ("f32", "f16" or "q8_0"),
    the model shape, the tokenizer's vocabulary (when it has one) and generation defaults."""
    if dtype not in WRITE_DTYPES:
        raise GptsError(f"Cannot write GGUF as {dtype!r}.", f"Choose one of {', '.join(WRITE_DTYPES)}.")
    config = ckpt.config
    if config.arch not in SUPPORTED_ARCHS:
        raise GptsError(f"Cannot write a {config.arch!r} model as GGUF.", f"gpts writes {', '.join(SUPPORTED_ARCHS)}.")
    tensors = _gguf_tensors(ckpt)
    tokenizer_meta = dict(ckpt.tokenizer.to_gguf_metadata()) if ckpt.tokenizer is not None else {}

    meta: dict[str, Any] = {
        "general.type": "model",
        "general.name": config.name or f"gpts-{config.arch}",
        "general.file_type": int(_FILE_TYPES[dtype]),
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
        **_arch_metadata(config),
        **tokenizer_meta,
        **_generation_metadata(ckpt.generation, tokenizer_meta),
    }
    out = Path(out)
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, config.arch)
        try:
            for key, value in meta.items():
                if key != "general.architecture":
                    _add_metadata(writer, key, value)
            for name, a in tensors.items():
                data, raw_dtype = _encode(a, dtype)
                writer.add_tensor(name, data, raw_dtype=raw_dtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return out
