"""Hugging Face checkpoints in and out (transformers' directory layout), and the hub download.

A Hugging Face model directory holds:
    config.json                            "model_type" / "architectures" and the shape
    model.safetensors                      or model-0000X-of-0000N.safetensors + model.safetensors.index.json,
                                           or pytorch_model.bin (+ shards and pytorch_model.bin.index.json)
    generation_config.json                 generation defaults
    tokenizer.json, tokenizer_config.json  (or vocab.json + merges.txt)

Each supported model_type has one name table as data, {native pattern: Hugging Face pattern}, with the
full names transformers saves for *ForCausalLM. Two rules turn tables into tensors, both data-driven:

- `transposed`: Hugging Face names stored as (in, out) instead of nn.Linear's (out, in): GPT-2's Conv1D.
- fusion: when several native names map to one Hugging Face name, that tensor is theirs concatenated
  along the output dimension (dim 0 in nn.Linear layout, i.e. after any transpose), in table order.
  GPT-2's c_attn is q, k, v fused this way.

Files saved from the bare base model (GPT2Model, LlamaModel) lack the "transformer." / "model." prefix;
reading adds it back. A tied lm_head is absent from the files (or ignored when present).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpts import paths
from gpts.checkpoint import Checkpoint
from gpts.config import Config
from gpts.refs import is_hf_dir, parse_hf_ref  # noqa: F401  (re-exported)
from gpts.errors import GptsError
from gpts.fileio import atomic_path, read_json, save_safetensors
from gpts.tokenizer import Tokenizer, has_tokenizer_files
from gpts.weights import expand_names

# -- name tables (data) ------------------------------------------------------------------------------

GPT2_NAMES: dict[str, str] = {
    "wte.weight": "transformer.wte.weight",
    "wpe.weight": "transformer.wpe.weight",
    "blocks.{i}.norm_1.weight": "transformer.h.{i}.ln_1.weight",
    "blocks.{i}.norm_1.bias": "transformer.h.{i}.ln_1.bias",
    # q, k, v fused into one Conv1D (see the fusion rule above)
    "blocks.{i}.attn.q_proj.weight": "transformer.h.{i}.attn.c_attn.weight",
    "blocks.{i}.attn.k_proj.weight": "transformer.h.{i}.attn.c_attn.weight",
    "blocks.{i}.attn.v_proj.weight": "transformer.h.{i}.attn.c_attn.weight",
    "blocks.{i}.attn.q_proj.bias": "transformer.h.{i}.attn.c_attn.bias",
    "blocks.{i}.attn.k_proj.bias": "transformer.h.{i}.attn.c_attn.bias",
    "blocks.{i}.attn.v_proj.bias": "transformer.h.{i}.attn.c_attn.bias",
    "blocks.{i}.attn.o_proj.weight": "transformer.h.{i}.attn.c_proj.weight",
    "blocks.{i}.attn.o_proj.bias": "transformer.h.{i}.attn.c_proj.bias",
    "blocks.{i}.norm_2.weight": "transformer.h.{i}.ln_2.weight",
    "blocks.{i}.norm_2.bias": "transformer.h.{i}.ln_2.bias",
    "blocks.{i}.mlp.up_proj.weight": "transformer.h.{i}.mlp.c_fc.weight",
    "blocks.{i}.mlp.up_proj.bias": "transformer.h.{i}.mlp.c_fc.bias",
    "blocks.{i}.mlp.down_proj.weight": "transformer.h.{i}.mlp.c_proj.weight",
    "blocks.{i}.mlp.down_proj.bias": "transformer.h.{i}.mlp.c_proj.bias",
    "norm_f.weight": "transformer.ln_f.weight",
    "norm_f.bias": "transformer.ln_f.bias",
    "lm_head.weight": "lm_head.weight",  # only when not tied
}
# GPT-2's Conv1D stores weights as (in, out).
GPT2_TRANSPOSED: frozenset[str] = frozenset({
    "transformer.h.{i}.attn.c_attn.weight",
    "transformer.h.{i}.attn.c_proj.weight",
    "transformer.h.{i}.mlp.c_fc.weight",
    "transformer.h.{i}.mlp.c_proj.weight",
})
# Buffers older transformers versions saved alongside the weights (causal masks).
GPT2_IGNORED: frozenset[str] = frozenset({"transformer.h.{i}.attn.bias", "transformer.h.{i}.attn.masked_bias"})

LLAMA_NAMES: dict[str, str] = {
    "wte.weight": "model.embed_tokens.weight",
    "blocks.{i}.norm_1.weight": "model.layers.{i}.input_layernorm.weight",
    "blocks.{i}.attn.q_proj.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blocks.{i}.attn.k_proj.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blocks.{i}.attn.v_proj.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blocks.{i}.attn.o_proj.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blocks.{i}.norm_2.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blocks.{i}.mlp.gate_proj.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blocks.{i}.mlp.up_proj.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blocks.{i}.mlp.down_proj.weight": "model.layers.{i}.mlp.down_proj.weight",
    "norm_f.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",  # only when not tied
}
LLAMA_IGNORED: frozenset[str] = frozenset({"model.layers.{i}.self_attn.rotary_emb.inv_freq"})


@dataclass(frozen=True)
class HFFormat:
    arch: str  # gpts Config.arch
    architecture: str  # transformers class written into config.json
    names: dict[str, str]  # {native pattern: Hugging Face pattern}
    prefix: str  # base-model prefix that every name but the head's carries
    transposed: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()


FORMATS: dict[str, HFFormat] = {
    "gpt2": HFFormat("gpt2", "GPT2LMHeadModel", GPT2_NAMES, "transformer.", GPT2_TRANSPOSED, GPT2_IGNORED),
    "llama": HFFormat("llama", "LlamaForCausalLM", LLAMA_NAMES, "model.", ignored=LLAMA_IGNORED),
}
# model_types read with another's format: Mistral is Llama exactly when it has no sliding window (checked).
ALIASES: dict[str, str] = {"mistral": "llama"}
SUPPORTED = (*FORMATS, *ALIASES)
ARCHITECTURES: dict[str, str] = {"GPT2LMHeadModel": "gpt2", "GPT2Model": "gpt2", "LlamaForCausalLM": "llama",
                                 "LlamaModel": "llama", "MistralForCausalLM": "mistral"}

# Generation-config keys that are bookkeeping or runtime switches, not generation defaults.
_GENERATION_SKIP = {"transformers_version", "output_attentions", "output_hidden_states", "use_cache",
                    "return_dict_in_generate", "output_scores", "output_logits"}


# -- reading -----------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise GptsError(f"{path} is not a JSON object.", "Check that it is a Hugging Face config file.")
    return data


def read_hf_dir(path: str | Path) -> Checkpoint:
    """A Hugging Face model directory as a Checkpoint (native names, the file's dtype)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise GptsError(f"{path} {what}: it is not a Hugging Face model directory.",
                        "Point to a directory with config.json and model.safetensors (or pytorch_model.bin).")
    hf = _read_json(path / "config.json")
    model_type = _model_type(hf, path)
    fmt = FORMATS[ALIASES.get(model_type, model_type)]
    config = _gpt2_config(hf) if fmt.arch == "gpt2" else _llama_config(hf, model_type)
    config.name = _model_name(path)
    state_dict = from_hf_tensors(_read_weights(path), config, fmt, source=path)
    generation = _read_generation(path, hf)
    return Checkpoint(config, state_dict, _read_tokenizer(path), generation)


def _model_type(hf: dict[str, Any], path: Path) -> str:
    model_type = hf.get("model_type")
    if model_type is None:
        known = [ARCHITECTURES[a] for a in hf.get("architectures") or [] if a in ARCHITECTURES]
        model_type = known[0] if known else ", ".join(map(str, hf.get("architectures") or [])) or "unknown"
    if model_type not in SUPPORTED:
        extra = " (Qwen2 adds attention biases, so it is not Llama-shaped)" if model_type == "qwen2" else ""
        raise GptsError(f"{path} holds a {model_type!r} model, which gpts cannot load{extra}.",
                        f"Supported Hugging Face model types: {', '.join(SUPPORTED)}.")
    return model_type


def _model_name(path: Path) -> str:
    # A hub snapshot lives at .../models--ORG--NAME/snapshots/<commit>: name it ORG/NAME, not by its hash.
    repo_dir = path.resolve().parent.parent
    if path.resolve().parent.name == "snapshots" and repo_dir.name.startswith("models--"):
        return repo_dir.name.removeprefix("models--").replace("--", "/")
    return path.resolve().name  # not "_name_or_path": often a path on the author's machine


def _unsupported(model_type: str, what: str, fix: str) -> GptsError:
    return GptsError(f"This {model_type} model uses {what}, which gpts's model does not implement.", fix)


def _gpt2_config(hf: dict[str, Any]) -> Config:
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise _unsupported("gpt2", f"activation_function={act!r}", "gpts's GPT-2 uses the tanh GELU (gelu_new).")
    for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                    ("add_cross_attention", False)):
        if hf.get(key, ok) != ok:
            raise _unsupported("gpt2", f"{key}={hf[key]!r}", f"Only {key}={ok} is supported.")
    n_embd = hf.get("n_embd", 768)
    return Config(
        arch="gpt2", vocab_size=hf.get("vocab_size", 50257), context_length=hf.get("n_positions", 1024),
        n_layer=hf.get("n_layer", 12), n_head=hf.get("n_head", 12), n_embd=n_embd,
        intermediate_size=hf.get("n_inner") or 4 * n_embd, norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        bias=True, tie_embeddings=hf.get("tie_word_embeddings", True),
    )


def _llama_config(hf: dict[str, Any], model_type: str) -> Config:
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise _unsupported(model_type, f"{key}=true", "gpts's Llama has no biases; it cannot load this model.")
    if hf.get("hidden_act", "silu") != "silu":
        raise _unsupported(model_type, f"hidden_act={hf['hidden_act']!r}", "gpts's Llama uses SiLU (SwiGLU).")
    hidden, n_head = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    context = hf.get("max_position_embeddings", 2048)
    head_dim = hf.get("head_dim")
    if head_dim is not None and head_dim * n_head != hidden:
        raise _unsupported(model_type, f"head_dim={head_dim}, not hidden_size/num_attention_heads={hidden // n_head}",
                           "gpts derives the head size from hidden_size; such models cannot be loaded.")
    window = hf.get("sliding_window")
    if hf.get("use_sliding_window", window is not None) and window is not None and window < context:
        raise _unsupported(model_type, f"sliding-window attention (sliding_window={window})",
                           "Only models whose sliding_window is null (full attention) are Llama-shaped.")
    rope_base, rope_scaling = _rope(hf, model_type)
    return Config(
        arch="llama", vocab_size=hf.get("vocab_size", 32000), context_length=context,
        n_layer=hf.get("num_hidden_layers", 32), n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head, n_embd=hidden,
        intermediate_size=hf.get("intermediate_size", 11008), norm_eps=hf.get("rms_norm_eps", 1e-6), bias=False,
        tie_embeddings=hf.get("tie_word_embeddings", False), rope_base=rope_base, rope_scaling=rope_scaling,
    )


def _rope(hf: dict[str, Any], model_type: str) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from transformers 4 keys (rope_theta, rope_scaling) or 5 (rope_parameters)."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or params
    if not isinstance(scaling, dict) or (params and "rope_theta" not in params and "rope_type" not in params):
        raise _unsupported(model_type, f"per-layer rope parameters {params!r}", "Only one RoPE setting is supported.")
    theta = float(hf.get("rope_theta", params.get("rope_theta", 10000.0)))
    if scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise _unsupported(model_type, "partial rotary embeddings", "Only full-width RoPE is supported.")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type != "llama3":
        raise _unsupported(model_type, f"RoPE scaling of type {rope_type!r}",
                           "gpts supports no scaling or Llama-3 style scaling (rope_type 'llama3').")
    missing = [k for k in ("factor", "original_max_position_embeddings") if k not in scaling]
    if missing:
        raise GptsError(f"The llama3 rope_scaling in config.json lacks {', '.join(missing)}.",
                        "The config is incomplete; fix it or download the model again.")
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    return theta, {"rope_type": "llama3", **{k: scaling[k] for k in keys if k in scaling}}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor in the directory's weight files, under its Hugging Face name."""
    for index_name, single, loader in (("model.safetensors.index.json", "model.safetensors", _load_safetensors),
                                       ("pytorch_model.bin.index.json", "pytorch_model.bin", _load_bin)):
        index = path / index_name
        if index.is_file():
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise GptsError(f"{index} has no weight_map.", "The index is corrupt; download the model again.")
            shards = list(dict.fromkeys(weight_map.values()))
            missing = [s for s in shards if not (path / s).is_file()]
            if missing:
                raise GptsError(f"{path} is missing weight shard(s) {', '.join(missing[:3])} listed in {index_name}.",
                                "The download is incomplete; download the model again.")
            tensors: dict[str, torch.Tensor] = {}
            for shard in shards:
                tensors.update(loader(path / shard))
            return tensors
        if (path / single).is_file():
            return loader(path / single)
    found = ", ".join(sorted(p.name for p in path.iterdir())) or "nothing"
    raise GptsError(f"{path} has a config.json but no weights (found: {found}).",
                    "Expected model.safetensors, sharded model-*.safetensors with model.safetensors.index.json, "
                    "or pytorch_model.bin; download or save the model again.")


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own untyped errors on corrupt files
        raise GptsError(f"Cannot read {file}: {e}.", "The file is corrupt or truncated; download it again.") from e


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    def load(mmap: bool) -> Any:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            data = load(mmap=True)  # zip-format files map without a copy
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            data = load(mmap=False)  # legacy (pre zip) format
    except Exception as e:  # corrupt zip, unsafe pickle, truncation: all mean "cannot use this file"
        raise GptsError(f"Cannot read {file}: {e}.",
                        "The file is corrupt, truncated, or holds more than tensors; download it again "
                        "(prefer the model's .safetensors files).") from e
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise GptsError(f"{file} does not hold a state dict of tensors.", "Save it with save_pretrained.")
    return data


def name_patterns(patterns: Iterable[str], n_layer: int) -> set[str]:
    return set(expand_names({p: p for p in patterns}, n_layer))


def expected_shapes(config: Config) -> dict[str, torch.Size]:
    from gpts.model import GPT

    with torch.device("meta"):
        return {k: v.shape for k, v in GPT(config).state_dict().items()}


def name_table(config: Config, fmt: HFFormat, expected: dict[str, torch.Size]) -> dict[str, list[str]]:
    """{Hugging Face name: [native names]} for this model (several natives: fused, in table order)."""
    names = expand_names(fmt.names, config.n_layer)
    unmapped = set(expected) - set(names)
    assert not unmapped, f"name table for {fmt.arch} lacks {sorted(unmapped)}"
    groups: dict[str, list[str]] = {}
    for native, hf_name in names.items():
        if native in expected:
            groups.setdefault(hf_name, []).append(native)
    return groups


def from_hf_tensors(tensors: dict[str, torch.Tensor], config: Config, fmt: HFFormat,
                    source: str | Path = "the checkpoint") -> dict[str, torch.Tensor]:
    """Hugging Face names and layout -> native state dict. Copies only what is transposed."""
    head = {hf_name for hf_name in fmt.names.values() if not hf_name.startswith(fmt.prefix)}
    tensors = {k if k.startswith(fmt.prefix) or k in head else fmt.prefix + k: v for k, v in tensors.items()}
    expected = expected_shapes(config)
    groups = name_table(config, fmt, expected)
    transposed = name_patterns(fmt.transposed, config.n_layer)
    ignored = name_patterns(fmt.ignored, config.n_layer) | ({"lm_head.weight"} if config.tie_embeddings else set())

    missing = [name for name in groups if name not in tensors]
    unexpected = sorted(set(tensors) - set(groups) - ignored)
    if missing or unexpected:
        raise GptsError(
            f"The weights in {source} do not match its config.json ({config.arch}, {config.n_layer} layers): "
            + (f"missing {missing[:4]}" if missing else "")
            + ("; " if missing and unexpected else "") + (f"unexpected {unexpected[:4]}" if unexpected else "") + ".",
            "The weight files are incomplete or belong to another model; download or save the model again.")

    state_dict: dict[str, torch.Tensor] = {}
    for hf_name, natives in groups.items():
        t = tensors[hf_name]
        if hf_name in transposed:
            t = t.t()
        sizes = [expected[n][0] for n in natives]
        want = (sum(sizes), *expected[natives[0]][1:])
        if tuple(t.shape) != want:
            raise GptsError(f"Tensor {hf_name} in {source} has shape {tuple(t.shape)}, but config.json implies {want}.",
                            "The weights and config.json come from different models; download the model again.")
        parts = torch.split(t, sizes, dim=0) if len(natives) > 1 else (t,)
        for native, part in zip(natives, parts, strict=True):
            state_dict[native] = part.contiguous()  # a no-op unless transposed
    return state_dict


def _read_generation(path: Path, hf: dict[str, Any]) -> dict[str, Any]:
    file = path / "generation_config.json"
    if file.is_file():
        data = _read_json(file)
    else:  # transformers falls back to the model config's special token ids
        data = {k: hf[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if hf.get(k) is not None}
    return {k: v for k, v in data.items() if not k.startswith("_") and k not in _GENERATION_SKIP}


def _read_tokenizer(path: Path) -> Tokenizer | None:
    """The directory's tokenizer, or None when it has no tokenizer files (weights-only directories are fine)."""
    return Tokenizer.from_dir(path) if has_tokenizer_files(path) else None


# -- writing -----------------------------------------------------------------------------------------


def to_hf_tensors(state_dict: dict[str, torch.Tensor], config: Config, fmt: HFFormat) -> dict[str, torch.Tensor]:
    """Native state dict -> Hugging Face names and layout (contiguous, no shared storage)."""
    expected = expected_shapes(config)
    missing, unexpected = set(expected) - set(state_dict), set(state_dict) - set(expected)
    if missing or unexpected:
        raise GptsError(f"The checkpoint's tensors do not match its config: missing {sorted(missing)[:4]}, "
                        f"unexpected {sorted(unexpected)[:4]}.", "Re-export the checkpoint.")
    transposed = name_patterns(fmt.transposed, config.n_layer)
    out: dict[str, torch.Tensor] = {}
    for hf_name, natives in name_table(config, fmt, expected).items():
        parts = [state_dict[n].detach() for n in natives]
        t = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        out[hf_name] = (t.t() if hf_name in transposed else t).contiguous()
    return out


def hf_config(ckpt: Checkpoint, dtype: torch.dtype) -> dict[str, Any]:
    c = ckpt.config
    fmt = FORMATS[c.arch]
    gen, tok = ckpt.generation, ckpt.tokenizer
    special = {f"{k}_token_id": gen.get(f"{k}_token_id", getattr(tok, f"{k}_id", None) if tok else None)
               for k in ("bos", "eos", "pad")}
    common = {"model_type": c.arch, "architectures": [fmt.architecture], "vocab_size": c.vocab_size,
              "tie_word_embeddings": c.tie_embeddings, "torch_dtype": str(dtype).removeprefix("torch."),
              **special}
    if c.arch == "gpt2":
        if not c.bias or c.n_kv_head != c.n_head:
            raise GptsError("This GPT-2 model has no biases or uses grouped-query attention, which Hugging Face's "
                            "GPT-2 cannot express.", "Export it to the gpts or GGUF format instead.")
        return {**common, "n_positions": c.context_length, "n_ctx": c.context_length, "n_embd": c.n_embd,
                "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": c.intermediate_size,
                "layer_norm_epsilon": c.norm_eps, "activation_function": "gelu_new",
                "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
                "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                "reorder_and_upcast_attn": False}
    if c.bias:
        raise GptsError("This Llama model has biases, which Hugging Face's Llama cannot express.",
                        "Export it to the gpts format instead.")
    # transformers 4 keys (rope_theta, rope_scaling); transformers 5 reads them too.
    return {**common, "hidden_size": c.n_embd, "intermediate_size": c.intermediate_size,
            "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
            "head_dim": c.head_dim, "hidden_act": "silu", "max_position_embeddings": c.context_length,
            "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_base, "rope_scaling": c.rope_scaling,
            "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0}


def write_hf_dir(ckpt: Checkpoint, out: str | Path) -> Path:
    """Write a directory transformers' AutoModelForCausalLM.from_pretrained loads, atomically (replacing `out`)."""
    out = Path(out)
    fmt = FORMATS[ckpt.config.arch]
    tensors = to_hf_tensors(ckpt.state_dict, ckpt.config, fmt)
    dtype = next(iter(tensors.values())).dtype
    config = hf_config(ckpt, dtype)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config[k] is not None}
        (tmp / "generation_config.json").write_text(json.dumps({**generation, **ckpt.generation}, indent=2) + "\n")
        if ckpt.tokenizer is not None:
            ckpt.tokenizer.save(tmp)
    return out


# -- the hub -----------------------------------------------------------------------------------------

META_PATTERNS = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja",
                 "chat_template.json"]
SAFETENSORS_PATTERNS = ["model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
BIN_PATTERNS = ["pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin"]


def hub_cache_dir() -> Path:
    return paths.cache_dir() / "hf"


def hub_offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.HF_HUB_OFFLINE or value.strip().upper() in ("1", "ON", "YES", "TRUE")


def _has_weights(path: Path) -> bool:
    """config.json plus a complete set of weight files."""
    if not (path / "config.json").is_file():
        return False
    for index, single in (("model.safetensors.index.json", "model.safetensors"),
                          ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (path / index).is_file():
            try:
                shards = set(json.loads((path / index).read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return False
            return bool(shards) and all((path / s).is_file() for s in shards)
        if (path / single).is_file():
            return True
    return False


def is_network_error(e: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if any(n in cls.__name__ for cls in type(seen).__mro__
               for n in ("ConnectError", "ConnectTimeout", "Timeout", "NetworkError", "TransportError")):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _offline_error(ref: str, cause: BaseException | None = None) -> GptsError:
    why = f" ({type(cause).__name__})" if cause is not None else " (HF_HUB_OFFLINE is set)"
    return GptsError(
        f"Could not reach the Hugging Face hub to download {ref}{why}, and it is not in the cache "
        f"({hub_cache_dir()}): gpts is offline.",
        f"Connect to the internet{'' if cause is not None else ' and unset HF_HUB_OFFLINE'} to download it once, "
        "or pass a local model directory or file instead.")


def download_hf(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot directory of a hub model, downloading config, weights and tokenizer files once.

    A snapshot already in the cache is used without any network access. Safetensors weights are
    preferred; pytorch_model.bin files are fetched only when the repository has no safetensors.
    """
    import huggingface_hub
    from huggingface_hub.errors import (GatedRepoError, HFValidationError, RepositoryNotFoundError,
                                       RevisionNotFoundError)

    ref = f"hf:{repo_id}" + (f"@{revision}" if revision else "")
    cache = hub_cache_dir()

    def snapshot(patterns: list[str], local: bool) -> Path:
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache,
                                                      allow_patterns=patterns, local_files_only=local))

    try:
        cached = snapshot(META_PATTERNS, local=True)
        if _has_weights(cached):
            return cached
    except HFValidationError as e:
        raise GptsError(f"{repo_id!r} is not a valid Hugging Face repository id: {e}",
                        "Write hf:ORG/NAME, e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct.") from e
    except OSError:  # LocalEntryNotFoundError, IncompleteSnapshotError: not (fully) cached; go online below
        pass
    if hub_offline():
        raise _offline_error(ref)
    try:
        path = snapshot(META_PATTERNS + SAFETENSORS_PATTERNS, local=False)
        if not _has_weights(path):
            path = snapshot(META_PATTERNS + BIN_PATTERNS, local=False)
    except GatedRepoError as e:
        raise GptsError(f"{ref} is gated: its owners require you to accept its terms before downloading.",
                        f"Accept them at https://huggingface.co/{repo_id}, then log in with `hf auth login`.") from e
    except RepositoryNotFoundError as e:
        raise GptsError(f"There is no model {ref} on the Hugging Face hub (or it is private).",
                        "Check the spelling (hf:ORG/NAME); for a private model, log in with `hf auth login`.") from e
    except RevisionNotFoundError as e:
        raise GptsError(f"{repo_id} has no revision {revision!r}.",
                        "Use a branch, tag or commit that exists, or leave out @REVISION for main.") from e
    except Exception as e:
        if is_network_error(e):
            raise _offline_error(ref, e) from e
        raise
    if not (path / "config.json").is_file():
        raise GptsError(f"{ref} has no config.json: it is not a transformers model.",
                        "gpts loads transformers-format repositories (config.json + safetensors).")
    if not _has_weights(path):
        raise GptsError(f"{ref} has no weights gpts can read.",
                        "gpts needs model.safetensors (or sharded safetensors, or pytorch_model.bin) "
                        "at the top of the repository.")
    return path
