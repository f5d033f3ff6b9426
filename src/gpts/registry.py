"""Model references (gpts.refs) resolved to what they hold: a Checkpoint, or just the tokenizer.

GGUF weights are converted (dequantized, un-permuted) once and the result is cached as a native
checkpoint under the user cache directory, so later loads only map a safetensors file.
"""

from __future__ import annotations

import functools
import hashlib
import warnings
from pathlib import Path

import torch

from gpts import paths
from gpts.checkpoint import Checkpoint, is_native_dir, load_native, save_native
from gpts.errors import GptsError, GptsWarning
from gpts.refs import BUNDLED, ModelRef, bundled_path, resolve
from gpts.tokenizer import Tokenizer, has_tokenizer_files

_warned_uncached = False  # said once a process

# Bump when the conversion changes, so that stale cached conversions are not reused.
CONVERSION_VERSION = 1


def _bundled_generation(path: Path) -> dict:
    """A bundled model's sampling defaults, whichever way its file was named (a path to it works too)."""
    for name, b in BUNDLED.items():
        if path.name == b.filename:
            try:
                if bundled_path(name).resolve() == path.resolve():
                    return dict(b.generation)
            except GptsError:  # not installed: then this file is a copy from elsewhere
                pass
    return {}


def read_checkpoint(ref: str | ModelRef, dtype: torch.dtype = torch.float32) -> Checkpoint:
    """The checkpoint a reference names, weights in `dtype`."""
    mref = ref if isinstance(ref, ModelRef) else resolve(ref)
    if mref.kind in ("bundled", "gguf"):
        ckpt = _read_gguf_cached(mref.path, dtype)
        ckpt.generation = {**_bundled_generation(mref.path), **ckpt.generation}
    elif mref.kind == "native":
        ckpt = load_native(mref.path)
    elif mref.kind == "adapter":  # merged into its base: generation runs at the base's speed
        from gpts.lora import read_adapter_checkpoint

        ckpt = read_adapter_checkpoint(mref.path, read_checkpoint)
    else:
        from gpts.weights.hf import download_hf, parse_hf_ref, read_hf_dir

        path = mref.path or download_hf(*parse_hf_ref(mref.ref))
        ckpt = read_hf_dir(path)
    ckpt.state_dict = {k: v.to(dtype) for k, v in ckpt.state_dict.items()}
    return ckpt


def read_tokenizer(ref: str | ModelRef) -> Tokenizer:
    """A model's tokenizer without its weights where the files allow (GGUF metadata, tokenizer.json): what cutting
    knowledge files into chunks of the model's tokens needs."""
    mref = ref if isinstance(ref, ModelRef) else resolve(ref)
    tokenizer = None
    if mref.kind in ("bundled", "gguf"):
        cached = _conversion_dir(mref.path, torch.float32)  # a converted copy reads in milliseconds, the GGUF in seconds
        if has_tokenizer_files(cached):
            return Tokenizer.from_dir(cached)
        stat = mref.path.resolve().stat()
        tokenizer = _gguf_tokenizer(str(mref.path.resolve()), stat.st_size, stat.st_mtime_ns)
    elif mref.directory is not None and has_tokenizer_files(mref.directory):
        tokenizer = Tokenizer.from_dir(mref.directory)
    else:  # an adapter without its own tokenizer, a hub reference: through the model
        tokenizer = read_checkpoint(mref).tokenizer
    if tokenizer is None:
        raise GptsError(f"The model {mref.ref!r} has no tokenizer.",
                        "Add tokenizer.json (or vocab.json + merges.txt) to the model directory.")
    return tokenizer


@functools.lru_cache(maxsize=4)
def _gguf_tokenizer(path: str, size: int, mtime_ns: int) -> Tokenizer | None:
    """Parsing a GGUF file's metadata takes seconds: once a process for each file (its size and time key it)."""
    from gpts.weights.gguf import read_gguf_metadata

    meta = read_gguf_metadata(path)
    return Tokenizer.from_gguf_metadata(meta) if "tokenizer.ggml.tokens" in meta else None


def _conversion_dir(path: Path, dtype: torch.dtype) -> Path:
    # The file's identity (path, size, modification time) keys the cache: a changed file is converted anew.
    stat = path.resolve().stat()
    identity = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dtype}|v{CONVERSION_VERSION}"
    return paths.cache_dir() / "converted" / f"{path.stem}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def _read_gguf_cached(path: Path, dtype: torch.dtype) -> Checkpoint:
    cached = _conversion_dir(path, dtype)
    if is_native_dir(cached):
        return load_native(cached)
    from gpts.weights.gguf import read_gguf

    ckpt = read_gguf(path, dtype=dtype)
    try:
        save_native(ckpt, cached)
    except GptsError as e:  # an unwritable or full GPTS_HOME costs speed, never the model
        global _warned_uncached
        if not _warned_uncached:
            _warned_uncached = True
            warnings.warn(f"Converted {path.name} without caching it ({e.problem}); every load converts it again. "
                          f"Make {paths.home()} writable, or set GPTS_HOME to a directory that is.", GptsWarning,
                          stacklevel=2)
    return ckpt
