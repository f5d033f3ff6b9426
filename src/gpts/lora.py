"""LoRA (low-rank adaptation, Hu et al. 2021): fine-tune a few small matrices beside a frozen model.

Composition, as in torchtune: `apply_lora` swaps chosen nn.Linear projections of a GPT for `LoRALinear`
modules that wrap them; the model class itself is untouched. `merge_lora` folds the adapters back in,
leaving a plain GPT with no LoRA cost at all.

Adapter directory (`save_adapter` / `load_adapter`):
    adapter_config.json            gpts' keys ("format": "gpts-lora"): the LoRAConfig, including the base
                                   model's reference and fingerprint, the base's Config, and free-form "extra"
    adapter.safetensors            lora_state_dict(model): "blocks.{i}.attn.q_proj.lora_a.weight", ...
    tokenizer.json, ...            optional: the tokenizer the adapter goes with (default: the base's)
    generation_config.json         optional: generation defaults, over the base's
    peft/adapter_config.json       the same adapter for Hugging Face PEFT, on the model that
    peft/adapter_model.safetensors gpts.weights.hf.write_hf_dir exports from the base
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file

from gpts.checkpoint import Checkpoint
from gpts.config import Config
from gpts.refs import ADAPTER_CONFIG_FILE as CONFIG_FILE
from gpts.refs import ADAPTER_FORMAT as FORMAT
from gpts.refs import is_adapter_dir  # noqa: F401  (re-exported)
from gpts.errors import GptsError
from gpts.fileio import atomic_path, read_json, save_safetensors
from gpts.model import GPT
from gpts.tokenizer import Tokenizer, has_tokenizer_files
from gpts.weights import hf

FORMAT_VERSION = 1
WEIGHTS_FILE = "adapter.safetensors"
PEFT_DIR = "peft"

# The projections a LoRA layer can wrap, by their attribute names in gpts/model.py (both families).
TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """y = base(x) + lora_b(lora_a(dropout(x))) * alpha / rank, with `base` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, alpha
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        like = dict(bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_a = nn.Linear(base.in_features, rank, **like)
        self.lora_b = nn.Linear(rank, base.out_features, **like)
        # PEFT's initialization: A Kaiming-uniform, B zero, so a fresh adapter leaves the model unchanged.
        nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b.weight)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.lora_b(self.lora_a(self.dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold B @ A * scaling into the base weight (computed in float32) and return the plain Linear."""
        delta = (self.lora_b.weight.float() @ self.lora_a.weight.float()) * self.scaling
        self.base.weight += delta.to(self.base.weight.dtype)
        return self.base


@dataclass
class LoRAConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    # Every attention and MLP projection by default: QLoRA (Dettmers et al. 2023) found that adapting all
    # of them, not only q/v as in the original LoRA paper, is what matches full fine-tuning, while the
    # trainable parameters stay a few percent of the model. Names a model lacks (gate_proj in GPT-2) are skipped.
    targets: tuple[str, ...] = TARGETS
    base: str = ""  # model reference of the base model (as registry.read_checkpoint takes it)
    base_fingerprint: str = ""  # base_fingerprint() of the base; save_adapter fills it in

    def __post_init__(self) -> None:
        self.targets = tuple(self.targets)
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise GptsError(f"Unknown LoRA target(s) {unknown or 'none given'}.",
                            f"Choose among {', '.join(TARGETS)}.")
        if not (isinstance(self.rank, int) and self.rank > 0) or not self.alpha > 0:
            raise GptsError(f"LoRA rank and alpha must be positive (rank an integer); got rank={self.rank!r}, "
                            f"alpha={self.alpha!r}.", "Typical values: rank 8, alpha 16.")
        if not 0 <= self.dropout < 1:
            raise GptsError(f"LoRA dropout must be in [0, 1); got {self.dropout!r}.", "Typical values: 0 to 0.1.")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoRAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GptsError(f"Unknown LoRA config key(s): {', '.join(unknown)}.",
                            f"Valid keys are: {', '.join(sorted(known))}.")
        return cls(**data)


# -- applying, merging, inspecting ------------------------------------------------------------------


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(module name, layer) for every LoRALinear in the model."""
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)


def apply_lora(model: GPT, config: LoRAConfig) -> GPT:
    """Wrap the target projections of every block in LoRALinear (in place) and freeze all other weights."""
    if next(lora_layers(model), None) is not None:
        raise GptsError("This model already has LoRA layers.", "Merge them first (merge_lora) or use it as it is.")
    chosen = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)
              and name.startswith("blocks.") and name.rpartition(".")[2] in config.targets]
    if not chosen:
        raise GptsError(f"None of the LoRA targets {', '.join(config.targets)} exists in this {model.config.arch} "
                        "model.", f"Choose among {', '.join(TARGETS)} (gate_proj is Llama's only).")
    model.requires_grad_(False)
    for name, module in chosen:
        _replace(model, name, LoRALinear(module, config.rank, config.alpha, config.dropout))
    return model


def merge_lora(model: GPT) -> GPT:
    """Replace every LoRALinear by its base with the adapter folded in: a plain GPT again.

    The merged weights keep requires_grad=False; call model.requires_grad_() to train them further.
    """
    for name, layer in list(lora_layers(model)):
        _replace(model, name, layer.merge())
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors only, named relative to the model ("blocks.0.attn.q_proj.lora_a.weight")."""
    return {f"{name}.{part}.weight": getattr(layer, part).weight.detach()
            for name, layer in lora_layers(model) for part in ("lora_a", "lora_b")}


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights under their native names, as if no LoRA layer were there."""
    wrapped = {name for name, _ in lora_layers(model)}
    out = {}
    for key, tensor in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        owner, _, part = module.rpartition(".")
        if owner not in wrapped:
            out[key] = tensor
        elif part == "base":  # the LoRALinear's base Linear: "....q_proj.base.weight" -> "....q_proj.weight"
            out[f"{owner}.{leaf}"] = tensor
    return out


FINGERPRINT_SAMPLES = 4096


def base_fingerprint(config: Config, state_dict: dict[str, torch.Tensor]) -> str:
    """A cheap identity of a model's weights: its shape plus evenly spaced samples of every tensor.

    Any real change of a tensor (a fine-tune, a merged adapter) moves nearly every element, so samples
    suffice and cost microseconds even for billions of weights. The samples are rounded to bfloat16
    so that the same base read in float32, float16 or bfloat16 gives the same fingerprint; the config's
    name and context_length are left out because they label the model rather than change its weights.
    """
    h = hashlib.sha256()
    shape = {k: v for k, v in config.to_dict().items() if k not in ("name", "context_length")}
    h.update(json.dumps(shape, sort_keys=True).encode())
    for name in sorted(state_dict):
        flat = state_dict[name].detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // FINGERPRINT_SAMPLES)][:FINGERPRINT_SAMPLES]
        h.update(f"{name}{tuple(state_dict[name].shape)}".encode())
        h.update(sample.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:32]


# -- the adapter directory --------------------------------------------------------------------------


def _portable_ref(ref: str) -> str:
    # A relative path would name another directory (or nothing) when loaded from elsewhere.
    path = Path(ref).expanduser()
    return str(path.resolve()) if ref and path.exists() else ref


def save_adapter(model: GPT, lora_config: LoRAConfig, out_dir: str | Path, tokenizer: Tokenizer | None = None,
                 generation: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapter directory atomically (replacing `out_dir`); see the module docstring for its files.

    The base fingerprint is computed here from the model's frozen base weights. The peft/ export is left
    out (and adapter_config.json says why under "peft") when the base has no Hugging Face form.
    """
    out_dir = Path(out_dir)
    tensors = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    if not tensors:
        raise GptsError("The model has no LoRA layers to save.", "Call apply_lora(model, config) before training.")
    fingerprint = base_fingerprint(model.config, base_state_dict(model))
    if lora_config.base_fingerprint and lora_config.base_fingerprint != fingerprint:
        raise GptsError(f"The model's base weights no longer match the base this adapter was loaded for "
                        f"({lora_config.base or 'unnamed'}).",
                        "Keep the base frozen while training LoRA (apply_lora does), or save a full checkpoint.")
    cfg = dataclasses.replace(lora_config, base=_portable_ref(lora_config.base), base_fingerprint=fingerprint)
    try:
        peft = _peft_export(model, cfg)
        peft_note: str = PEFT_DIR
    except GptsError as e:
        peft, peft_note = None, f"not exported: {e.problem}"
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "lora": cfg.to_dict(),
            "base_config": model.config.to_dict(), "peft": peft_note, "extra": extra or {}}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_safetensors(tensors, tmp / WEIGHTS_FILE, metadata={"format": "pt", "producer": "gpts"})
        if tokenizer is not None:
            tokenizer.save(tmp)
        if generation:
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        if peft is not None:
            peft_config, peft_tensors = peft
            (tmp / PEFT_DIR).mkdir()
            (tmp / PEFT_DIR / "adapter_config.json").write_text(json.dumps(peft_config, indent=2) + "\n")
            save_safetensors(peft_tensors, tmp / PEFT_DIR / "adapter_model.safetensors", metadata={"format": "pt"})
    return out_dir


@dataclass
class Adapter:
    model: GPT  # the base with LoRA applied and the adapter's weights loaded (not merged)
    lora_config: LoRAConfig
    tokenizer: Tokenizer | None  # the adapter's own, else the base's
    generation: dict[str, Any]  # the base's defaults updated by the adapter's
    extra: dict[str, Any] = field(default_factory=dict)


def read_adapter_config(adapter_dir: str | Path) -> tuple[LoRAConfig, dict[str, Any]]:
    """(LoRAConfig, the whole adapter_config.json) of an adapter directory."""
    file = Path(adapter_dir) / CONFIG_FILE
    meta = read_json(file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GptsError(f"{file} is not a gpts LoRA adapter config (no \"format\": \"{FORMAT}\").",
                        "Point to a directory written by gpts' save_adapter; for a PEFT adapter, point to the base "
                        "model and use PEFT.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise GptsError(f"{file} has adapter format version {meta.get('format_version')!r}; this gpts reads "
                        f"version {FORMAT_VERSION}.", "Upgrade gpts, or save the adapter again with this version.")
    return LoRAConfig.from_dict(meta.get("lora") or {}), meta


def load_adapter(adapter_dir: str | Path, base_model_loader: Callable[[str], Checkpoint],
                 base: str | None = None) -> Adapter:
    """Load the base model the adapter names (or `base`, e.g. a copy elsewhere) with `base_model_loader`
    (registry.read_checkpoint fits), check that it is the very base the adapter was trained on, apply
    LoRA and load the adapter's weights. The model takes over the loader's tensors without copying them."""
    adapter_dir = Path(adapter_dir)
    lora_config, meta = read_adapter_config(adapter_dir)
    ref = base or lora_config.base
    if not ref:
        raise GptsError(f"The adapter {adapter_dir} records no base model.", "Pass the base model's reference.")
    try:
        ckpt = base_model_loader(ref)
    except GptsError as e:
        raise GptsError(f"The adapter {adapter_dir} applies to the base model {ref!r}, which cannot be loaded: "
                        f"{e.problem}", e.fix) from e
    found = base_fingerprint(ckpt.config, ckpt.state_dict)
    if found != lora_config.base_fingerprint:
        raise GptsError(
            f"The adapter {adapter_dir} was trained on a different base model: it records "
            f"{lora_config.base or 'no reference'} ({_describe(meta.get('base_config'))}, fingerprint "
            f"{lora_config.base_fingerprint}), but {ref!r} is {_describe(ckpt.config.to_dict())}, fingerprint "
            f"{found}.", "Load the adapter onto the exact base model it was trained from.")
    model = apply_lora(GPT.from_state_dict(ckpt.config, ckpt.state_dict), lora_config)
    _load_lora_weights(model, adapter_dir / WEIGHTS_FILE)
    tokenizer = Tokenizer.from_dir(adapter_dir) if has_tokenizer_files(adapter_dir) else ckpt.tokenizer
    gen_file = adapter_dir / "generation_config.json"
    generation = {**ckpt.generation, **(read_json(gen_file) if gen_file.is_file() else {})}
    return Adapter(model, lora_config, tokenizer, generation, meta.get("extra") or {})


def read_adapter_checkpoint(adapter_dir: str | Path, base_model_loader: Callable[[str], Checkpoint]) -> Checkpoint:
    """The adapter merged into its base, as a plain Checkpoint (what a model reference resolves to)."""
    adapter = load_adapter(adapter_dir, base_model_loader)
    model = merge_lora(adapter.model)
    config = dataclasses.replace(model.config, name=Path(adapter_dir).resolve().name)
    return Checkpoint(config, {k: v.detach() for k, v in model.state_dict().items()}, adapter.tokenizer,
                      adapter.generation)


def _describe(config: dict[str, Any] | None) -> str:
    if not config:
        return "unknown shape"
    name = f" {config['name']!r}" if config.get("name") else ""
    return f"a {config.get('arch')} model{name}, {config.get('n_layer')} layers, n_embd {config.get('n_embd')}"


def _load_lora_weights(model: GPT, file: Path) -> None:
    try:
        tensors = load_file(str(file))
    except Exception as e:  # safetensors raises its own untyped errors on missing or corrupt files
        raise GptsError(f"Cannot read {file}: {e}.", "The adapter is incomplete or corrupt; save it again.") from e
    params = lora_state_dict(model)
    missing, unexpected = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    wrong = [k for k in set(params) & set(tensors) if tensors[k].shape != params[k].shape]
    if missing or unexpected or wrong:
        raise GptsError(f"The tensors in {file} do not match its adapter_config.json: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}, wrong shape {sorted(wrong)[:3]}.",
                        "The adapter files come from different saves; save the adapter again.")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


# -- Hugging Face PEFT export ------------------------------------------------------------------------


def _peft_export(model: GPT, cfg: LoRAConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """PEFT's adapter_config.json and adapter_model.safetensors for the model write_hf_dir makes of the base.

    Names come from gpts.weights.hf's table. Where Hugging Face fuses several of our projections into one
    module (GPT-2's c_attn = q, k, v), the LoRAs on them become one exact LoRA of rank r * (number adapted):
    A stacked, B block-diagonal (zero for the projections not adapted), with rank_pattern and alpha_pattern
    keeping alpha / rank, hence every output, the same. Dropout then shares one mask across q, k, v,
    which changes nothing at inference.
    """
    config = model.config
    hf.hf_config(Checkpoint(config, {}), torch.float32)  # raises when the base has no Hugging Face form
    fmt = hf.FORMATS[config.arch]
    expected = hf.expected_shapes(config)
    transposed = hf.name_patterns(fmt.transposed, config.n_layer)
    layers = dict(lora_layers(model))
    tensors: dict[str, torch.Tensor] = {}
    modules: set[str] = set()
    rank_pattern: dict[str, int] = {}
    alpha_pattern: dict[str, float] = {}
    conv1d = False
    for hf_name, natives in hf.name_table(config, fmt, expected).items():
        owners = [n.removesuffix(".weight") for n in natives]
        adapted = [o for o in owners if o in layers]  # bias groups name no LoRA layer
        if not adapted:
            continue
        a = torch.cat([layers[o].lora_a.weight.detach() for o in adapted])
        b = torch.zeros(sum(expected[n][0] for n in natives), a.shape[0], dtype=a.dtype)
        row, col = 0, 0
        for owner, native in zip(owners, natives, strict=True):
            if owner in adapted:
                b[row:row + expected[native][0], col:col + cfg.rank] = layers[owner].lora_b.weight.detach()
                col += cfg.rank
            row += expected[native][0]
        module = hf_name.removesuffix(".weight")
        short = re.sub(r"^.*?\.\d+\.", "", module)  # "model.layers.3.self_attn.q_proj" -> "self_attn.q_proj"
        modules.add(short)
        conv1d |= hf_name in transposed
        if len(adapted) > 1:
            rank_pattern[short] = cfg.rank * len(adapted)
            alpha_pattern[short] = cfg.alpha * len(adapted)
        tensors[f"base_model.model.{module}.lora_A.weight"] = a.contiguous()
        tensors[f"base_model.model.{module}.lora_B.weight"] = b
    peft_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": cfg.base.removeprefix("hf:"),
        "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
        "target_modules": sorted(modules), "rank_pattern": rank_pattern, "alpha_pattern": alpha_pattern,
        "bias": "none", "fan_in_fan_out": conv1d,  # Conv1D (GPT-2) stores weights transposed
        "use_rslora": False, "use_dora": False, "init_lora_weights": True, "modules_to_save": None,
        "inference_mode": True,
    }
    return peft_config, tensors
