"""The serving layer: which models the server answers as, loading them, one engine per base model, and the prompts
of custom GPTs.

Model ids are what a user would type:
    smollm2-135m-instruct     the bundled model, served when no --model is given
    REF                       each --model REF as typed (a run directory: its name)
    ft:BASE:SUFFIX:ID         fine-tuned models, registered by the fine-tuning jobs (`Serving.register`)
    SLUG                      every GPT in the store, on top of the model its spec names

A base model is loaded once (in a worker thread, so the server keeps answering meanwhile) and gets one Engine that
every request for it shares, the GPTs built on it included: their fixed instructions and examples are the prefix the
engine reuses between conversations. The models named at startup load at once; a GPT's model loads on first use, and
so does the model of a GPT's unsaved draft (`Serving.preview`, the builder's preview).

Nothing here imports torch at module level: the app and its routes import this module, and torch comes with the
first model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gpts.assistant import Assistant
from gpts.errors import ContextTooLong, GptsError, NotFoundError
from gpts.refs import ALIASES, DEFAULT_MODEL, resolve
from gpts.server.errors import ApiError, bad_request, from_gpts_error, not_found

if TYPE_CHECKING:
    from gpts.api import LoadedModel
    from gpts.engine import Engine, EngineRequest
    from gpts.generate import GenerationConfig
    from gpts.spec import GptSpec
    from gpts.store.catalogue import Gpt
    from gpts.store.retrieval import Passage

log = logging.getLogger("gpts.server")

RETRY_AFTER_S = 1  # what a 429 asks a client to wait: slots free within a few tokens' time


@dataclass(frozen=True)
class ModelEntry:
    """One model id the server answers as."""

    id: str
    ref: str  # the base model's reference (a GPT's: its spec's model)
    owned_by: str
    created: int  # Unix seconds
    parent: str | None = None  # what a GPT or a fine-tuned model is built on
    gpt: str | None = None  # the slug, when the id is a custom GPT


def served_models(refs: list[str]) -> dict[str, str]:
    """Model id -> reference for the models given with --model (the bundled model when none is), checked now: a
    reference that names nothing is a GptsError before anything loads."""
    ids: dict[str, str] = {}
    for ref in refs or [DEFAULT_MODEL]:
        mref = resolve(ref)
        if mref.kind == "bundled":
            model_id = ALIASES.get(ref.strip().lower(), ref.strip().lower())
        elif mref.directory is not None:
            model_id = mref.directory.resolve().name
        else:
            model_id = ref.strip()
        if model_id in ids and model_key(ids[model_id]) != model_key(ref):
            raise GptsError(f"Two models would both be served as {model_id!r}: {ids[model_id]} and {ref}.",
                            "Rename one of the directories.")
        ids[model_id] = ref
    return ids


def model_key(ref: str) -> str:
    """What tells two references apart: "default" and "smollm2-135m-instruct" (or two spellings of one path) are one
    model, loaded once."""
    mref = resolve(ref)
    return f"{mref.kind}:{mref.path.resolve() if mref.path is not None else mref.ref}"


def _mtime(ref: str) -> int | None:
    try:
        path = resolve(ref).path
        return int(path.stat().st_mtime) if path is not None else None
    except (GptsError, OSError):
        return None


@dataclass
class Backend:
    """A loaded base model and the engine that runs every request for it."""

    model: LoadedModel
    engine: Engine


@dataclass
class Prepared:
    """A request made ready for the engine: its prompts as token ids and its settings, and, for a GPT, the knowledge
    passages in its prompt (what its replies cite)."""

    prompts: Any  # token ids or texts (the engine tokenizes them), one prompt or a list
    config: GenerationConfig
    param: str  # the request field the prompts come from, named by errors about them: "messages" or "prompt"
    constraint: Callable[[], Any] | None = None
    passages: list[Passage] = field(default_factory=list)

    @property
    def sequences(self) -> int:
        """How many sequences the engine generates: each prompt's `n` samples."""
        one = isinstance(self.prompts, str) or (self.prompts and isinstance(self.prompts[0], int))
        return (1 if one else len(self.prompts)) * self.config.num_return_sequences


@dataclass
class Target:
    """What a request's model id names, loaded and ready to answer."""

    entry: ModelEntry
    backend: Backend
    draft: Gpt | None = None  # a preview's unsaved GPT, answering instead of the stored one

    @property
    def tokenizer(self) -> Any:
        return self.backend.model.tokenizer

    def prepare_chat(self, messages: list[dict[str, str]], sampling: dict[str, Any],
                     json_schema: dict[str, Any] | None = None, constrained: bool = False) -> Prepared:
        """The prompt of a conversation (a GPT's: its instructions, examples and knowledge around it). Blocking
        (retrieval, the chat template, a JSON grammar): run it in a worker thread."""
        model = self.backend.model
        passages: list[Passage] = []
        if self.entry.gpt is None:
            try:
                prompt = model.chat_prompt(messages)
            except GptsError as e:
                raise from_gpts_error(e, "messages") from e
        else:
            prompt, sampling, passages = self._gpt_prompt(messages, sampling)
        return Prepared([prompt], model.generation_config(**sampling), "messages",
                        self._constraint(json_schema, constrained), passages)

    def prepare_completion(self, prompt: Any, sampling: dict[str, Any]) -> Prepared:
        """`prompt` as OpenAI takes it: a text, texts, token ids, or lists of them (the engine reads each form)."""
        if self.entry.gpt is not None:
            raise bad_request(f"{self.entry.id} is a custom GPT: it answers conversations at /v1/chat/completions.",
                              "model")
        return Prepared(prompt, self.backend.model.generation_config(**sampling), "prompt")

    def _gpt_prompt(self, messages: list[dict[str, str]],
                    sampling: dict[str, Any]) -> tuple[list[int], dict[str, Any], list[Passage]]:
        """A GPT's prompt, built by gpts.assistant exactly as `gpts run` builds it; and the settings with the spec's
        defaults under the request's."""
        from gpts.store.catalogue import get_gpt
        from gpts.store.db import connect

        history, message = _gpt_conversation(messages, self.entry.id)
        conn = connect()
        try:
            assistant = Assistant(self.draft or get_gpt(self.entry.gpt, conn=conn), self.backend.model, conn)
            built = assistant.prompt(history, message, sampling)
        finally:
            conn.close()
        return self.backend.model.chat_prompt(built.messages), assistant.options(sampling), built.passages

    def _constraint(self, schema: dict[str, Any] | None, constrained: bool) -> Callable[[], Any] | None:
        if not constrained:
            return None
        from gpts.constrain import json_constraint

        try:
            return json_constraint(self.tokenizer, schema, self.backend.model.config.vocab_size)
        except GptsError as e:
            raise from_gpts_error(e, "response_format") from e

    def submit(self, prepared: Prepared, logprobs: int | None = None) -> EngineRequest:
        """Queue the request on the model's engine; the engine's refusals become OpenAI's errors."""
        from gpts.engine import EngineClosed, QueueFull

        engine = self.backend.engine
        if prepared.sequences > engine.max_batch:
            raise bad_request(f"The request asks for {prepared.sequences} sequences at once; this server decodes at "
                              f"most {engine.max_batch} together (gpts serve --max-batch).", "n")
        try:
            return engine.submit(prepared.prompts, prepared.config, logprobs=logprobs, constraint=prepared.constraint)
        except QueueFull as e:
            raise ApiError(429, f"The server is busy: {e.problem} {e.fix}", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from e
        except EngineClosed as e:
            raise ApiError(503, f"{e.problem} {e.fix}", code="shutting_down") from e
        except ContextTooLong as e:
            raise bad_request(f"{e.problem} Shorten the {prepared.param} or ask for fewer tokens (max_tokens).",
                              prepared.param, "context_length_exceeded") from e
        except GptsError as e:  # the settings are checked before (protocol.py): what is left is about the prompt
            raise from_gpts_error(e, prepared.param) from e


def _gpt_conversation(messages: list[dict[str, str]], model_id: str) -> tuple[list[dict[str, str]], str]:
    """(history, message) for a GPT: alternating user and assistant turns ending with the user's message. A GPT's
    instructions are its system message, so a request brings none."""
    roles = [m["role"] for m in messages]
    if "system" in roles:
        raise bad_request(f"{model_id} is a custom GPT: its instructions are the system message. Send only user and "
                          "assistant messages.", "messages")
    if roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        raise bad_request(f"A conversation with {model_id} alternates user and assistant messages, from the user's "
                          f"first to the user's last (it has: {', '.join(roles)}).", "messages")
    return messages[:-1], messages[-1]["content"]


class Serving:
    """The models of one server: the list, the lookups, the loading and the engines."""

    def __init__(self, models: list[str], max_batch: int | None = None, max_queue: int | None = None):
        """`models`: the references given with --model; the engines' sizes (None: the engine's defaults)."""
        self.max_batch, self.max_queue = max_batch, max_queue
        self.started = int(time.time())
        self.base = served_models(models)
        self.registered: dict[str, ModelEntry] = {}
        self._loads: dict[str, asyncio.Task[Backend]] = {}  # by model_key: loading, loaded or failed

    # -- the models ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start loading the models named at startup (needs the running event loop)."""
        for ref in self.base.values():
            self._load(ref)

    def register(self, model_id: str, ref: str, owned_by: str = "user", created: int | None = None,
                 parent: str | None = None) -> None:
        """Serve another model (a fine-tuned one) as `model_id`; it loads on first use."""
        resolve(ref)
        self.registered[model_id] = ModelEntry(model_id, ref, owned_by, created or int(time.time()), parent)

    def models(self) -> list[ModelEntry]:
        """Every model id: the base models, the fine-tuned ones, then the store's GPTs."""
        from gpts.store.catalogue import list_gpts
        from gpts.store.db import connect

        entries = [self._base_entry(model_id) for model_id in self.base] + list(self.registered.values())
        taken = {e.id for e in entries}
        conn = connect()
        try:
            gpts = list_gpts(conn=conn)
        finally:
            conn.close()
        return entries + sorted((_gpt_entry(g) for g in gpts if g.slug not in taken), key=lambda e: e.id)

    def entry(self, model_id: str) -> ModelEntry:
        """The model an id names, or a 404 naming the "model" parameter."""
        name = ALIASES.get(model_id.lower(), model_id)
        if name in self.base:
            return self._base_entry(name)
        if model_id in self.registered:
            return self.registered[model_id]
        from gpts.store.catalogue import get_gpt
        from gpts.store.db import connect

        conn = connect()
        try:
            return _gpt_entry(get_gpt(model_id, conn=conn))
        except GptsError:
            raise not_found(f"The model {model_id!r} does not exist on this server.", "model",
                            "model_not_found") from None
        finally:
            conn.close()

    def _base_entry(self, model_id: str) -> ModelEntry:
        ref = self.base[model_id]
        return ModelEntry(model_id, ref, "gpts", _mtime(ref) or self.started)

    async def target(self, model_id: str) -> Target:
        """The model a request names, loaded (a request for a model still loading waits for it)."""
        entry = await asyncio.to_thread(self.entry, model_id)
        return Target(entry, await self._backend(entry.ref, "model"))

    async def preview(self, spec: GptSpec, slug: str | None) -> Target:
        """An unsaved draft of a GPT, ready to answer as the saved GPT `slug` would with `spec` (its stored
        knowledge included), or as a new GPT (no knowledge) when `slug` is None; on the draft's model."""
        draft = await asyncio.to_thread(_draft, spec, slug)
        return Target(_gpt_entry(draft), await self._backend(spec.model, "spec.model"), draft)

    def loaded(self, ref: str) -> LoadedModel | None:
        """The model `ref` names when it is loaded (served, or the base of a GPT that has answered); else None."""
        task = self._loads.get(model_key(ref))
        return task.result().model if _loaded(task) else None

    async def _backend(self, ref: str, param: str) -> Backend:
        try:
            return await asyncio.shield(self._load(ref))  # a request that goes away leaves the load going
        except GptsError as e:
            raise ApiError(500, f"The model {ref!r} could not be loaded: {e.problem} {e.fix}".strip(), param,
                           "model_load_failed") from e

    # -- loading and engines ----------------------------------------------------------------------------------------

    def _load(self, ref: str) -> asyncio.Task[Backend]:
        key = model_key(ref)
        if key not in self._loads:
            task = self._loads[key] = asyncio.create_task(asyncio.to_thread(self._start_backend, ref))
            task.add_done_callback(lambda t: _log_failure(ref, t))
        return self._loads[key]

    def _start_backend(self, ref: str) -> Backend:
        from gpts.api import load
        from gpts.engine import DEFAULT_MAX_BATCH, DEFAULT_MAX_QUEUE, Engine

        model = load(ref)
        max_batch = self.max_batch or DEFAULT_MAX_BATCH
        max_queue = DEFAULT_MAX_QUEUE if self.max_queue is None else self.max_queue
        return Backend(model, Engine(model.gpt, model.tokenizer, max_batch, max_queue).start())

    @property
    def ready(self) -> bool:
        """Every model named at startup is loaded (what /health reports)."""
        return all(_loaded(self._loads.get(model_key(ref))) for ref in self.base.values())

    def _backends(self) -> list[Backend]:
        return [t.result() for t in self._loads.values() if _loaded(t)]

    def engine_stats(self) -> dict[str, dict[str, int]]:
        """Engine.stats() of each loaded base model, by its model id (a model only GPTs use: its reference), for
        /metrics."""
        ids = {model_key(ref): model_id for model_id, ref in self.base.items()}
        return {ids.get(key, t.result().model.ref.ref): t.result().engine.stats() for key, t in self._loads.items()
                if _loaded(t)}

    async def close(self, timeout: float = 30.0) -> None:
        """Shut every engine down: running requests finish for up to `timeout` seconds, then end with "abort"."""
        await asyncio.gather(*self._loads.values(), return_exceptions=True)
        await asyncio.gather(*(asyncio.to_thread(b.engine.shutdown, timeout) for b in self._backends()))


def _loaded(task: asyncio.Task[Backend] | None) -> bool:
    return task is not None and task.done() and not task.cancelled() and task.exception() is None


def _log_failure(ref: str, task: asyncio.Task[Backend]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("The model %s could not be loaded: %s", ref, task.exception())


def _draft(spec: GptSpec, slug: str | None) -> Gpt:
    """The Gpt a preview answers as: the saved one with the draft's spec, or a new one with no files."""
    from gpts.store.catalogue import Gpt, get_gpt, now
    from gpts.store.db import connect

    try:
        resolve(spec.model)  # a draft naming no model is the request's fault, not a failed load
    except GptsError as e:
        raise from_gpts_error(e, "spec.model") from e
    if slug is None:
        return Gpt(id=0, slug=spec.slug or "", version=0, current_version=0, spec=spec, files=[], created_at=now(),
                   updated_at=now())
    conn = connect()
    try:
        saved = get_gpt(slug, conn=conn)
    except NotFoundError as e:
        raise not_found(f"No GPT named {slug!r} in the store: a preview's model is the slug of the GPT it edits, or "
                        "absent for a new GPT.", "model", "model_not_found") from e
    finally:
        conn.close()
    return dataclasses.replace(saved, spec=spec.model_copy(update={"slug": slug}))


def _gpt_entry(gpt: Gpt) -> ModelEntry:
    base = ALIASES.get(gpt.spec.model.strip().lower(), gpt.spec.model)
    created = int(datetime.fromisoformat(gpt.created_at).timestamp())
    return ModelEntry(gpt.slug, gpt.spec.model, gpt.spec.author or "user", created, base, gpt.slug)
