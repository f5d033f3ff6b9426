"""What the server knows of its models, for the web page's Models page: GET /v1/model_details.

    {"object": "list", "data": [{"id", "kind": "base" | "fine-tuned" | "installed", "served", "loaded", "source",
     "format", "size_bytes", "parameters", "architecture", "context_length", "chat_template"}]}

The models the server serves (those named at startup, then the fine-tuned ones), then every installed model it does
not serve (`gpts models list`: the bundled ones, the hub downloads). `format` is the reference's kind (gpts.refs:
bundled, gguf, native, adapter, hf, hub); `size_bytes` what its files take on disk; `chat_template` the template its
conversations are rendered with (gpts' ChatML when the model has none). What cannot be read is null (a model whose
files have gone since it was named is listed, undescribed).

A loaded model is described from memory. Another is read from its files, in a worker thread, once per version of
them: a GGUF file's metadata and tensor shapes (no weights read), or else its checkpoint (gpts.api.describe_model).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from gpts.errors import GptsError
from gpts.refs import ModelRef, resolve
from gpts.server.serving import Serving, model_key

if TYPE_CHECKING:
    from gpts.api import LoadedModel

log = logging.getLogger("gpts.server")
router = APIRouter()


@router.get("/v1/model_details")
async def model_details(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_details, request.app.state.serving)}


def _details(serving: Serving) -> list[dict[str, Any]]:
    from gpts.api import list_models

    models: list[tuple[str, str, str, Path | None]] = [  # (id, reference, kind, where its files are)
        *((model_id, ref, "base", None) for model_id, ref in serving.base.items()),
        *((e.id, e.ref, "fine-tuned", None) for e in serving.registered.values())]
    served = {_key(ref) for _, ref, _, _ in models}
    for installed in list_models():
        ref = installed["name"].split(" (")[0]  # "NAME (ALIAS)"
        if installed["available"] and _key(ref) not in served:
            models.append((ref, ref, "installed", Path(installed["where"])))
    return [_describe(serving, *model) for model in models]


def _key(ref: str) -> str:
    try:
        return model_key(ref)
    except GptsError:  # its files have gone since it was named: it is listed, undescribed
        return ref


def _describe(serving: Serving, model_id: str, ref: str, kind: str, where: Path | None) -> dict[str, Any]:
    loaded = serving.loaded(ref)
    described: dict[str, Any] = dict.fromkeys(("source", "format", "size_bytes", "parameters", "architecture",
                                                "context_length", "chat_template"))
    try:
        mref = resolve(ref)
        where = where or mref.path  # a hub model's files: where `gpts models list` found them
        described.update(source=mref.describe(), format=mref.kind, size_bytes=_size(where))
        described.update(_from_memory(loaded) if loaded is not None else _from_files(mref, _mtime_ns(where)))
    except GptsError as e:
        log.warning("Cannot describe the model %s: %s", ref, e.problem)
    return {"id": model_id, "kind": kind, "served": kind != "installed", "loaded": loaded is not None, **described}


def _from_memory(model: LoadedModel) -> dict[str, Any]:
    from gpts.tokenizer import CHATML_TEMPLATE

    return {"parameters": model.gpt.num_params(), "architecture": model.config.arch,
            "context_length": model.config.context_length,
            "chat_template": model.tokenizer.chat_template or CHATML_TEMPLATE}


@functools.lru_cache(maxsize=64)
def _from_files(mref: ModelRef, mtime_ns: int | None) -> dict[str, Any]:
    """Read once per reference and version of its files (`mtime_ns` keys the cache: a changed file is read again)."""
    from gpts.tokenizer import CHATML_TEMPLATE

    if mref.kind in ("bundled", "gguf"):
        from gpts.weights.gguf import read_gguf_summary

        meta, parameters = read_gguf_summary(mref.path)  # the header; the weights stay on disk
        arch = meta.get("general.architecture")
        about = {"parameters": parameters, "architecture": arch, "context_length": meta.get(f"{arch}.context_length"),
                 "chat_template": meta.get("tokenizer.chat_template")}
    else:
        from gpts.api import describe_model

        about = {k: v for k, v in describe_model(mref.ref).items()
                 if k in ("parameters", "architecture", "context_length", "chat_template")}
    return {**about, "chat_template": about["chat_template"] or CHATML_TEMPLATE}


def _mtime_ns(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None


def _size(path: Path | None) -> int | None:
    """A file's size, or the size of a directory's files, each counted once however many links lead to it (a hub
    download's snapshots link to its blobs)."""
    if path is None:
        return None
    try:
        if path.is_file():
            return path.stat().st_size
        sizes = {}
        for p in path.rglob("*"):
            if p.is_file():
                stat = p.stat()
                sizes[stat.st_dev, stat.st_ino] = stat.st_size
        return sum(sizes.values())
    except OSError:
        return None
