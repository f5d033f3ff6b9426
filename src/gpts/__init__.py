"""gpts: build, run, train and serve GPT models on your own machine, offline by default.

The names below load on first use, so that light modules (gpts.errors, gpts.paths, gpts.config, and the store
and server routing to come) import without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpts.api import LoadedModel, load
    from gpts.config import Config
    from gpts.errors import GptsError
    from gpts.generate import Completion, GenerationConfig, StreamEvent
    from gpts.model import GPT

_HOMES = {"Completion": "gpts.generate", "Config": "gpts.config", "GenerationConfig": "gpts.generate",
          "GPT": "gpts.model", "GptsError": "gpts.errors", "LoadedModel": "gpts.api", "StreamEvent": "gpts.generate",
          "load": "gpts.api"}
__all__ = ["Completion", "Config", "GPT", "GenerationConfig", "GptsError", "LoadedModel", "StreamEvent", "load"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'gpts' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
