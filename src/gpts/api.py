"""The Python API: load a model by reference, then generate, stream and chat.

    import gpts
    model = gpts.load("default")
    print(model.generate("The capital of France is", max_new_tokens=8)[0].text)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gpts import paths
from gpts.checkpoint import Checkpoint, save_native
from gpts.config import Config
from gpts.errors import GptsError
from gpts.fileio import check_writable
from gpts.engine import GenerationStream, generate, stream
from gpts.generate import BLANK_FIX, Completion, GenerationConfig, Prompt
from gpts.model import GPT
from gpts.refs import ALIASES, BUNDLED, ModelRef, bundled_path, resolve
from gpts.registry import read_checkpoint
from gpts.resources import parameter_count
from gpts.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise GptsError(f"Unknown dtype {name!r}.", f"Use one of: {', '.join(DTYPES)}.")
    return DTYPES[name]


@dataclass
class LoadedModel:
    """A model ready to run: the network, its tokenizer, its generation defaults, and where it came from."""

    ref: ModelRef
    gpt: GPT
    tokenizer: Tokenizer
    generation_defaults: dict[str, Any]

    @property
    def config(self) -> Config:
        return self.gpt.config

    def generation_config(self, **overrides: Any) -> GenerationConfig:
        """The model's own defaults (generation_config.json), with `overrides` on top (None means "not given")."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(GenerationConfig.from_dict(self.generation_defaults), **given)

    def stream(self, prompts: Prompt | Sequence[Prompt], **options: Any) -> GenerationStream:
        """Iterate for StreamEvents (token by token); `.completions` afterwards. Options: GenerationConfig fields."""
        return stream(self.gpt, prompts, self.generation_config(**options), self.tokenizer)

    def generate(self, prompts: Prompt | Sequence[Prompt], **options: Any) -> list[Completion]:
        """One Completion per prompt and sample (num_return_sequences), in order."""
        return generate(self.gpt, prompts, self.generation_config(**options), self.tokenizer)

    def chat_prompt(self, messages: Messages) -> list[int]:
        """Token ids of a conversation rendered with the model's chat template, ready for the reply."""
        return self.tokenizer.encode_chat(conversation(messages))

    def chat_stream(self, messages: Messages, **options: Any) -> GenerationStream:
        return self.stream(self.chat_prompt(messages), **options)

    def chat(self, messages: Messages, **options: Any) -> Completion:
        """The assistant's next reply to a conversation: a list of {"role", "content"} messages, or one user message
        as a string."""
        return self.generate(self.chat_prompt(messages), **options)[0]


Messages = str | Sequence[dict[str, str]]


def conversation(messages: Messages) -> list[dict[str, str]]:
    """`messages` as a list of {"role", "content"} dicts (a string is one user message), checked: a conversation
    ends with something to answer, and its last message is not blank."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if (isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in messages)):
        raise GptsError("A conversation is a non-empty list of messages, each {'role': ..., 'content': '...'}.",
                        'Pass e.g. [{"role": "user", "content": "Hello"}], or one user message as a string.')
    if not messages[-1]["content"].strip():
        raise GptsError(f"The last message ({messages[-1]['role']}) is blank.", BLANK_FIX)
    return list(messages)


def load(ref: str = "default", dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    mref = resolve(ref)
    ckpt = read_checkpoint(mref, parse_dtype(dtype))
    if ckpt.tokenizer is None:
        raise GptsError(f"The model {ref!r} has no tokenizer.",
                        "Add tokenizer.json (or vocab.json + merges.txt) to the model directory.")
    gpt = GPT.from_state_dict(ckpt.config, ckpt.state_dict).to(device).eval()
    return LoadedModel(mref, gpt, ckpt.tokenizer, ckpt.generation)


# -- catalogue ---------------------------------------------------------------------------------------


def list_models() -> list[dict[str, Any]]:
    rows = []
    for name in BUNDLED:
        aliases = [a for a, target in ALIASES.items() if target == name]
        try:
            where, available = str(bundled_path(name)), True
        except GptsError as e:
            where, available = e.fix, False
        rows.append({"name": name + "".join(f" ({a})" for a in aliases), "kind": "bundled", "available": available,
                     "where": where})
    hub_cache = paths.cache_dir() / "hf"
    for repo_dir in sorted(hub_cache.glob("models--*")):
        repo = repo_dir.name.removeprefix("models--").replace("--", "/")
        rows.append({"name": f"hf:{repo}", "kind": "downloaded", "available": True, "where": str(repo_dir)})
    return rows


def describe_model(ref: str) -> dict[str, Any]:
    mref = resolve(ref)
    ckpt = read_checkpoint(mref)
    c, tok = ckpt.config, ckpt.tokenizer
    return {
        "reference": ref,
        "source": mref.describe(),
        "architecture": c.arch,
        "parameters": parameter_count(c),
        "context_length": c.context_length,
        "layers": c.n_layer,
        "heads": f"{c.n_head} query / {c.n_kv_head} key-value",
        "embedding": c.n_embd,
        "vocab_size": c.vocab_size,
        "tokenizer": "none" if tok is None else
        f"{tok.vocab_size} tokens, bos={tok.bos_token!r}, eos={tok.eos_token!r}, adds bos: {tok.add_bos}",
        "chat_template": None if tok is None else tok.chat_template,
        "config": c.to_dict(),
    }


def convert_model(src: str, to: str, out: str | Path, gguf_type: str = "f16", overwrite: bool = False) -> Path:
    """Write model `src` in format `to` ("gpts", "hf" or "gguf") at `out`; returns `out`."""
    if to not in ("gpts", "hf", "gguf"):
        raise GptsError(f"Unknown target format {to!r}.", "Use --to gpts, --to hf or --to gguf.")
    out = Path(out)
    _check_writable(out, overwrite)
    ckpt: Checkpoint = read_checkpoint(src)
    if to == "gpts":
        from gpts.task import read_task, write_task

        save_native(ckpt, out)
        task = read_task(resolve(src).directory)  # what a fine-tuned classifier was trained on goes with it
        if task is not None:
            write_task(out, task)
    elif to == "hf":
        from gpts.weights.hf import write_hf_dir

        write_hf_dir(ckpt, out)
    else:
        from gpts.weights.gguf import write_gguf

        write_gguf(ckpt, out, dtype=gguf_type)
    return out


def merge_adapter(adapter: str, out: str | Path, overwrite: bool = False) -> Path:
    """Fold a LoRA adapter into its base model and write the result as a native checkpoint at `out`."""
    if resolve(adapter).kind != "adapter":
        raise GptsError(f"{adapter} is not a LoRA adapter (no gpts adapter_config.json).",
                        "Point to the directory of a `gpts finetune --method lora` run.")
    return convert_model(adapter, "gpts", out, overwrite=overwrite)


def _check_writable(out: Path, overwrite: bool) -> None:
    """Writes replace `out` whole, so never point them at something that is not a model."""
    check_writable(out)  # before reading the model, which can take a while
    if not out.exists():
        return
    is_model = out.is_file() or (out / "config.json").is_file() or not any(out.iterdir())
    if not is_model:
        raise GptsError(f"{out} is a directory that holds something other than a model; gpts will not replace it.",
                        "Choose a new path for the output.")
    if not overwrite:
        raise GptsError(f"{out} already exists.", "Choose a new path, or pass --force to replace it.")
