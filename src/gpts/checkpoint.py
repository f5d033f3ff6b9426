"""A model in memory as every format reads and writes it, and the native checkpoint directory.

Native directory layout:
    config.json              gpts Config (has "arch"; a Hugging Face config.json has "model_type" instead)
    model.safetensors        weights under the native names of gpts/model.py
    tokenizer.json, tokenizer_config.json
    generation_config.json   generation defaults (Hugging Face keys)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from gpts.config import Config
from gpts.refs import is_native_dir  # noqa: F401  (re-exported)
from gpts.errors import GptsError
from gpts.fileio import atomic_path, read_json, save_safetensors
from gpts.tokenizer import Tokenizer, has_tokenizer_files


@dataclass
class Checkpoint:
    config: Config
    state_dict: dict[str, torch.Tensor]  # native names
    tokenizer: Tokenizer | None = None
    generation: dict[str, Any] = field(default_factory=dict)  # e.g. {"temperature": 0.2, "eos_token_id": [2]}


def save_native(ckpt: Checkpoint, out: str | Path) -> Path:
    """Write a native checkpoint directory atomically (replacing `out` if it exists)."""
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text(json.dumps(ckpt.config.to_dict(), indent=2) + "\n")
        # Tied weights share storage; safetensors refuses aliases, and the model has no lm_head then anyway.
        tensors = {k: v.detach().contiguous() for k, v in ckpt.state_dict.items()}
        save_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt", "producer": "gpts"})
        if ckpt.tokenizer is not None:
            ckpt.tokenizer.save(tmp)
        (tmp / "generation_config.json").write_text(json.dumps(ckpt.generation, indent=2) + "\n")
    return out


def load_native(path: str | Path) -> Checkpoint:
    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise GptsError(f"{path} has a config.json but no model.safetensors.",
                        "The checkpoint is incomplete; export or convert it again.")
    config = Config.from_json(path / "config.json")
    try:
        state_dict = load_file(str(weights))
    except Exception as e:  # safetensors raises its own untyped errors on corrupt files
        raise GptsError(f"Cannot read {weights}: {e}.", "The file is corrupt or truncated; export it again.") from e
    tokenizer = Tokenizer.from_dir(path) if has_tokenizer_files(path) else None
    gen_file = path / "generation_config.json"
    generation = read_json(gen_file) if gen_file.is_file() else {}
    return Checkpoint(config, state_dict, tokenizer, generation)
