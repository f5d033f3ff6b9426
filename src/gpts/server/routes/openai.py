"""OpenAI's model endpoints: GET /v1/models[/{id}], POST /v1/chat/completions, POST /v1/completions; and
POST /v1/gpts/preview, a chat completion from an unsaved draft of a GPT (the builder's preview): the body of
/v1/chat/completions with the draft's spec fields as "spec", and as "model" the slug of the saved GPT it edits (whose
stored knowledge it answers from) or nothing for a new GPT. Its answer is a chat completion's, citations included.

Each request: find the model (404), build the prompt in a worker thread (a GPT's retrieval, the chat template),
submit it to the model's engine (429 when its queue is full, 400 when it does not fit the context), then answer
whole or as server-sent events (`data: {...}`, one chunk per token, `data: [DONE]` last). A client that goes away
aborts its request, so its engine slot is free at the next step.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from gpts.assistant import cite
from gpts.server.errors import error_body, from_gpts_error
from gpts.server.metrics import observe_request
from gpts.server.protocol import (ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
                                  ChatCompletionRequest, ChatDelta, ChatLogprobs, ChatMessage, CompletionChoice,
                                  CompletionLogprobs, CompletionRequest, Model, ModelList, PreviewRequest,
                                  PromptTokensDetails, Sampling, TextCompletion, TokenLogprob, TopLogprob, Usage, sse)
from gpts.server.serving import ModelEntry, Prepared, Serving, Target
from gpts.spec import SpecError, parse_spec

if TYPE_CHECKING:
    from gpts.engine import EngineRequest
    from gpts.generate import Completion, StreamEvent, Timings

log = logging.getLogger("gpts.server")
router = APIRouter()


def _serving(request: Request) -> Serving:
    return request.app.state.serving


def _json(answer: BaseModel) -> Response:
    return Response(answer.model_dump_json(), media_type="application/json")


# -- models -----------------------------------------------------------------------------------------------------------


def _model(entry: ModelEntry) -> Model:
    return Model(id=entry.id, created=entry.created, owned_by=entry.owned_by, parent=entry.parent)


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    entries = await asyncio.to_thread(_serving(request).models)
    return _json(ModelList(data=[_model(e) for e in entries]))


@router.get("/v1/models/{model_id:path}")  # a path: fine-tuned and hub model ids hold ':' and '/'
async def retrieve_model(model_id: str, request: Request) -> Response:
    return _json(_model(await asyncio.to_thread(_serving(request).entry, model_id)))


# -- completions ------------------------------------------------------------------------------------------------------


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    return await _chat(request, body, await _serving(request).target(body.model))


@router.post("/v1/gpts/preview")
async def preview(body: PreviewRequest, request: Request) -> Response:
    try:
        spec = parse_spec(body.spec, " of the preview")
    except SpecError as e:
        raise from_gpts_error(e, f"spec.{e.field}") from e
    return await _chat(request, body, await _serving(request).preview(spec, body.model))


async def _chat(request: Request, body: ChatCompletionRequest, target: Target) -> Response:
    fmt = body.response_format
    prepared = await asyncio.to_thread(target.prepare_chat, [m.to_dict() for m in body.messages], body.sampling(),
                                       fmt.json_schema_dict if fmt else None, fmt is not None and fmt.constrained)
    return await _respond(request, body, target.submit(prepared, body.engine_logprobs),
                          _ChatAnswer(target, prepared, body))


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request) -> Response:
    target = await _serving(request).target(body.model)
    prepared = await asyncio.to_thread(target.prepare_completion, body.prompt, body.sampling())
    return await _respond(request, body, target.submit(prepared, body.logprobs), _TextAnswer(target, prepared, body))


async def _respond(request: Request, body: Sampling, req: EngineRequest, answer: _Answer) -> Response:
    if body.stream:
        return StreamingResponse(_events(request, req, answer, body.include_usage), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})
    # Starlette cancels a stream whose client leaves; a whole answer needs its own watch.
    watch = asyncio.create_task(_abort_when_gone(request, req))
    first_token_at = None
    try:
        async for _ in req.aevents():
            first_token_at = first_token_at or time.perf_counter()
    finally:
        watch.cancel()
    _observe(request, answer, req.completions, first_token_at)
    return _json(answer.whole(req.completions))


async def _abort_when_gone(request: Request, req: EngineRequest) -> None:
    """Once the body is read, the next ASGI message is the client going away (or the answer being sent)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    req.abort()


async def _events(request: Request, req: EngineRequest, answer: _Answer, include_usage: bool) -> AsyncIterator[str]:
    first_token_at = None
    try:
        for chunk in answer.opening():
            yield sse(chunk.model_dump_json())
        async for event in req.aevents():
            first_token_at = first_token_at or time.perf_counter()
            chunk = answer.chunk(event)
            if chunk is not None:
                yield sse(chunk.model_dump_json())
        _observe(request, answer, req.completions, first_token_at)
        if include_usage:
            yield sse(answer.usage_chunk(req.completions).model_dump_json())
        yield sse("[DONE]")
    except Exception as e:  # the status line went out with the first chunk: the error goes in the stream
        log.exception("a stream failed", exc_info=e)
        yield sse(json.dumps(error_body(500, f"Internal error: {type(e).__name__}. The server log has the details.")))
    finally:
        if not req.finished:  # the client went away (Starlette cancelled this generator): free the slots
            req.abort()


def _observe(request: Request, answer: _Answer, completions: list[Completion], first_token_at: float | None) -> None:
    usage = _usage(completions)
    observe_request(request, answer.model, usage.prompt_tokens, usage.completion_tokens, first_token_at)


# -- shaping the answers ----------------------------------------------------------------------------------------------


def _usage(completions: list[Completion]) -> Usage:
    """The prompt counted once per prompt (its samples share it), every generated token, as OpenAI counts them."""
    firsts: dict[int, Timings] = {}  # each prompt's first sample: the others reused its prefill, not a cache
    for c in completions:
        firsts.setdefault(c.prompt_index, c.timings)
    prompts = firsts.values()
    prompt = sum(t.prompt_n for t in prompts)
    generated = sum(c.timings.predicted_n for c in completions)
    return Usage(prompt_tokens=prompt, completion_tokens=generated, total_tokens=prompt + generated,
                 prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(t.cache_n for t in prompts)))


def _accounting(completions: list[Completion]) -> dict[str, Any]:
    """`usage`, and llama.cpp's `timings` for the whole request: its prompts' prefill and all its sequences'
    decoding."""
    from gpts.generate import Timings

    usage, timings = _usage(completions), [c.timings for c in completions]
    return {"usage": usage,
            "timings": Timings(usage.prompt_tokens, max(t.prompt_ms for t in timings), usage.completion_tokens,
                               max(t.predicted_ms for t in timings),
                               usage.prompt_tokens_details.cached_tokens).to_dict()}


class _Answer(ABC):
    """One request's answer, whole or streamed. Chat and completions differ only in the shapes below."""

    prefix: str  # of the answer's id, as OpenAI's: "chatcmpl-...", "cmpl-..."

    def __init__(self, target: Target, prepared: Prepared):
        self.tokenizer, self.model = target.tokenizer, target.entry.id
        self.id, self.created = f"{self.prefix}-{uuid.uuid4().hex}", int(time.time())
        self.sequences = prepared.sequences

    def token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def opening(self) -> list[BaseModel]:
        """The chunks a stream starts with, before the first token."""
        return []

    def usage_chunk(self, completions: list[Completion]) -> BaseModel:
        """The stream's last chunk when stream_options.include_usage: no choices, the usage and timings."""
        return self.envelope([], **_accounting(completions))

    @abstractmethod
    def envelope(self, choices: list[Any], **fields: Any) -> BaseModel:
        """An answer or a chunk of this endpoint, holding `choices`."""

    @abstractmethod
    def chunk(self, event: StreamEvent) -> BaseModel | None:
        """The chunk for one generated token; None when it shows nothing (text held back, no logprobs asked)."""

    @abstractmethod
    def whole(self, completions: list[Completion]) -> BaseModel:
        """The answer of a request that is not streamed."""


class _ChatAnswer(_Answer):
    prefix = "chatcmpl"

    def __init__(self, target: Target, prepared: Prepared, body: ChatCompletionRequest):
        super().__init__(target, prepared)
        self.logprobs, self.passages = body.logprobs, prepared.passages
        self.texts = [""] * self.sequences  # each sequence's text so far: a finished one's citations

    def envelope(self, choices: list[ChatChunkChoice], **fields: Any) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=choices, **fields)

    def _logprob(self, token_id: int, logprob: float, top: Any) -> TokenLogprob:
        def entry(cls: type[TopLogprob], token_id: int, logprob: float, **extra: Any) -> TopLogprob:
            token = self.token(token_id)
            return cls(token=token, logprob=logprob, bytes=list(self.tokenizer.token_bytes(token_id)), **extra)

        return entry(TokenLogprob, token_id, logprob, top_logprobs=[entry(TopLogprob, *t) for t in top or ()])

    def _annotations(self, text: str) -> list[dict[str, Any]]:
        """A GPT's citations as OpenAI's annotations: {"type": "file_citation", "file_citation": {...}}."""
        annotations = []
        for citation in cite(text, self.passages):
            place = citation.to_dict()
            annotations.append({"type": "file_citation", "file_citation": {"filename": place.pop("file"), **place}})
        return annotations

    def opening(self) -> list[BaseModel]:
        return [self.envelope([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
                for i in range(self.sequences)]

    def chunk(self, event: StreamEvent) -> BaseModel | None:
        logprobs = None
        if self.logprobs and event.logprob is not None and event.token_id >= 0:
            logprobs = ChatLogprobs(content=[self._logprob(event.token_id, event.logprob, event.top_logprobs)])
        if not (event.text or event.finish_reason or logprobs):
            return None
        self.texts[event.index] += event.text
        annotations = self._annotations(self.texts[event.index]) if event.finish_reason and self.passages else None
        delta = ChatDelta(content=event.text or None, annotations=annotations)
        return self.envelope([ChatChunkChoice(index=event.index, delta=delta, logprobs=logprobs,
                                              finish_reason=event.finish_reason)])

    def whole(self, completions: list[Completion]) -> BaseModel:
        choices = []
        for c in completions:
            logprobs = None
            if self.logprobs:
                logprobs = ChatLogprobs(content=[self._logprob(*t) for t in zip(c.token_ids, c.logprobs,
                                                                                  c.top_logprobs)])
            message = ChatMessage(content=c.text, annotations=self._annotations(c.text) if self.passages else [])
            choices.append(ChatChoice(index=c.index, message=message, logprobs=logprobs,
                                      finish_reason=c.finish_reason))
        return ChatCompletion(id=self.id, created=self.created, model=self.model, choices=choices,
                              **_accounting(completions))


class _TextAnswer(_Answer):
    prefix = "cmpl"

    def __init__(self, target: Target, prepared: Prepared, body: CompletionRequest):
        super().__init__(target, prepared)
        self.logprobs = body.logprobs
        self.offsets = [0] * self.sequences  # where each sequence's next token starts in its text (characters)
        # A token may end inside a UTF-8 character: its characters count once the character is whole.
        self.decoders = [codecs.getincrementaldecoder("utf-8")(errors="replace") for _ in range(self.sequences)]

    def envelope(self, choices: list[CompletionChoice], **fields: Any) -> TextCompletion:
        return TextCompletion(id=self.id, created=self.created, model=self.model, choices=choices, **fields)

    def _logprobs(self, index: int, token_ids: list[int], logprobs: list[float],
                  tops: list[Any]) -> CompletionLogprobs:
        """OpenAI's legacy shape: parallel lists, the top tokens as {token: logprob} (the chosen one among them)."""
        out = CompletionLogprobs(top_logprobs=[] if self.logprobs else None)
        for token_id, logprob, top in zip(token_ids, logprobs, tops):
            token = self.token(token_id)
            out.tokens.append(token)
            out.token_logprobs.append(logprob)
            out.text_offset.append(self.offsets[index])
            self.offsets[index] += len(self.decoders[index].decode(self.tokenizer.token_bytes(token_id)))
            if self.logprobs:
                out.top_logprobs.append({**{self.token(i): lp for i, lp in top}, token: logprob})
        return out

    def chunk(self, event: StreamEvent) -> BaseModel | None:
        logprobs = None
        if self.logprobs is not None and event.logprob is not None and event.token_id >= 0:
            logprobs = self._logprobs(event.index, [event.token_id], [event.logprob], [event.top_logprobs])
        if not (event.text or event.finish_reason or logprobs):
            return None
        return self.envelope([CompletionChoice(index=event.index, text=event.text, logprobs=logprobs,
                                               finish_reason=event.finish_reason)])

    def whole(self, completions: list[Completion]) -> BaseModel:
        choices = [CompletionChoice(index=c.index, text=c.text, finish_reason=c.finish_reason,
                                    logprobs=None if self.logprobs is None else
                                    self._logprobs(c.index, c.token_ids, c.logprobs, c.top_logprobs))
                   for c in completions]
        return self.envelope(choices, **_accounting(completions))
