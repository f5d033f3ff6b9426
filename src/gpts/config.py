"""The one description of a model's shape: a serializable dataclass and a table of named presets.

Every importer (native, Hugging Face, GGUF) produces a `Config`; the model is built from nothing else.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gpts.errors import GptsError
from gpts.fileio import read_json

Arch = Literal["gpt2", "llama"]
ARCHS: tuple[str, ...] = ("gpt2", "llama")


@dataclass
class Config:
    arch: Arch = "gpt2"
    name: str = ""
    vocab_size: int = 50257
    context_length: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # grouped-query attention; None means n_head (plain multi-head)
    n_embd: int = 768
    intermediate_size: int | None = None  # MLP hidden width; None means 4 * n_embd
    norm_eps: float = 1e-5
    bias: bool = True  # biases on every Linear (GPT-2) or none (Llama)
    tie_embeddings: bool = True  # lm_head shares the token embedding matrix
    rope_base: float = 10000.0  # llama only
    rope_scaling: dict[str, Any] | None = field(default=None)  # llama only: Llama-3 style {"factor", ...}

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise GptsError(
                f"Unknown architecture {self.arch!r}.",
                f"gpts supports {', '.join(ARCHS)}; set \"arch\" in config.json to one of them.",
            )
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.n_embd
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head:
            raise GptsError(
                f"Inconsistent model shape: n_embd={self.n_embd}, n_head={self.n_head}, n_kv_head={self.n_kv_head}.",
                "n_embd must be a multiple of n_head, and n_head a multiple of n_kv_head.",
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    # -- serialization --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GptsError(
                f"Unknown config key(s): {', '.join(unknown)}.",
                f"Valid keys are: {', '.join(sorted(known))}.",
            )
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> Config:
        data = read_json(path)
        if not isinstance(data, dict):
            raise GptsError(f"{path} is not a JSON object.", "A model config.json holds the Config fields.")
        return cls.from_dict(data)

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> Config:
        if name not in PRESETS:
            close = difflib.get_close_matches(name, PRESETS, n=3)
            hint = f"Did you mean {', '.join(close)}? " if close else ""
            raise GptsError(f"Unknown model preset {name!r}.", f"{hint}Presets: {', '.join(PRESETS)}.")
        return cls(**{**PRESETS[name], "name": name, **overrides})


def _gpt2(n_layer: int, n_head: int, n_embd: int, **kw: Any) -> dict[str, Any]:
    base = dict(arch="gpt2", vocab_size=50257, context_length=1024, bias=True, tie_embeddings=True, norm_eps=1e-5)
    return {**base, "n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, **kw}


def _llama(n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, **kw: Any) -> dict[str, Any]:
    base = dict(arch="llama", vocab_size=49152, context_length=8192, bias=False, tie_embeddings=True,
                norm_eps=1e-5, rope_base=100000.0)
    return {**base, "n_layer": n_layer, "n_head": n_head, "n_kv_head": n_kv_head, "n_embd": n_embd,
            "intermediate_size": intermediate_size, **kw}


PRESETS: dict[str, dict[str, Any]] = {
    "gpt2": _gpt2(12, 12, 768),
    "gpt2-medium": _gpt2(24, 16, 1024),
    "gpt2-large": _gpt2(36, 20, 1280),
    "gpt2-xl": _gpt2(48, 25, 1600),
    "smollm2-135m": _llama(30, 9, 3, 576, 1536),
    "smollm2-360m": _llama(32, 15, 5, 960, 2560),
    "smollm2-1.7b": _llama(24, 32, 32, 2048, 8192, rope_base=130000.0),
    # Small shapes for CPU experiments and tests (nanoGPT's shakespeare_char baseline is gpt2-nano).
    "gpt2-nano": _gpt2(4, 4, 128, context_length=256),
    "gpt2-mini": _gpt2(6, 6, 384, context_length=256),
    "llama-nano": _llama(4, 4, 2, 128, 384, context_length=256, rope_base=10000.0),
    "llama-mini": _llama(6, 6, 2, 384, 1024, context_length=256, rope_base=10000.0),
}
