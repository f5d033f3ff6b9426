"""The OpenAI endpoints' requests and answers as pydantic models, under OpenAI's names (its API reference): chat
completions (and the builder's preview of a draft GPT, which adds the draft's spec), completions, fine-tuning's
hyperparameters, models, usage and the streamed chunks. No torch here.

Requests ignore fields they do not know (OpenAI's clients send new ones every release), refuse the ones gpts knows
but does not do (tools, logit_bias, echo: an answer that silently ignored them would be wrong), and check every value
as OpenAI does, so that a bad one is a 400 naming it. Answers carry two extensions, as llama.cpp's server does:
`timings` and, on a custom GPT's messages, `annotations` of type "file_citation".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

MAX_STOP = 4  # stop sequences, as OpenAI
MAX_N = 128


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def _unsupported(value: Any) -> Any:
    if value:
        raise PydanticCustomError("unsupported", "gpts does not support it; leave it out")
    return value


class StreamOptions(_Request):
    include_usage: bool = False


class JsonSchemaFormat(_Request):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise PydanticCustomError("missing", 'type "json_schema" needs a json_schema: {"name": ..., "schema": ...}')
        return self

    @property
    def constrained(self) -> bool:
        return self.type != "text"

    @property
    def json_schema_dict(self) -> dict[str, Any] | None:
        """The JSON Schema the output must follow; None: any JSON object (json_object, or json_schema without one)."""
        return self.json_schema.schema_ if self.json_schema is not None else None


class Sampling(_Request):
    """What chat completions and completions share: the model, streaming and the sampling settings."""

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # Extensions (llama.cpp's and vLLM's names)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool | None = None  # generate max_tokens whatever the model says (benchmarks)
    # Known to OpenAI, not done by gpts
    logit_bias: dict[str, float] | None = None

    _no_logit_bias = field_validator("logit_bias")(_unsupported)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is not None and len(stops) > MAX_STOP:
            raise PydanticCustomError("too_many", "give at most {max} stop sequences", {"max": MAX_STOP})
        if stops is not None and not all(stops):
            raise PydanticCustomError("empty", "a stop sequence must not be empty")
        return stops or None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_tokens

    def sampling(self) -> dict[str, Any]:
        """The settings under GenerationConfig's names; those not given are absent (the model's defaults apply)."""
        given = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k, "min_p": self.min_p,
                 "repetition_penalty": self.repetition_penalty, "presence_penalty": self.presence_penalty,
                 "frequency_penalty": self.frequency_penalty, "stop": self.stop, "seed": self.seed,
                 "max_new_tokens": self.max_new_tokens, "num_return_sequences": self.n, "ignore_eos": self.ignore_eos}
        return {k: v for k, v in given.items() if v is not None}


# -- chat completions -------------------------------------------------------------------------------------------------


class ChatMessageIn(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str  # a list of content parts is accepted and joined: only text parts

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        texts = []
        for part in value:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text" or not isinstance(part.get("text"), str):
                raise PydanticCustomError("unsupported_part", "only text content parts are supported, not {kind}",
                                          {"kind": repr(kind)})
            texts.append(part["text"])
        return "\n".join(texts)

    def to_dict(self) -> dict[str, str]:
        """As the chat template reads it: OpenAI's "developer" is the system message of models that have one."""
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content}


class ChatCompletionRequest(Sampling):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None

    _no_tools = field_validator("tools", "functions")(_unsupported)

    @field_validator("top_logprobs")
    @classmethod
    def _top_logprobs_need_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):  # logprobs comes first: validated already
            raise PydanticCustomError("logprobs", "top_logprobs needs logprobs: true")
        return value

    @property
    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def engine_logprobs(self) -> int | None:
        """How many top log-probabilities the engine reports per token; None: none."""
        return (self.top_logprobs or 0) if self.logprobs else None


class PreviewRequest(ChatCompletionRequest):
    """A chat completion from an unsaved draft of a GPT (POST /v1/gpts/preview): its spec's fields, as a spec file
    holds them."""

    model: str | None = Field(None, min_length=1)  # the saved GPT the draft edits (its knowledge); None: a new GPT
    spec: dict[str, Any]


class CompletionRequest(Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    _not_done = field_validator("echo", "suffix")(_unsupported)

    @field_validator("best_of")
    @classmethod
    def _one_best(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise PydanticCustomError("unsupported", "gpts does not support best_of; use n")
        return value


# -- fine-tuning ------------------------------------------------------------------------------------------------------


def auto_or(most: float, whole: bool) -> PlainValidator:
    """"auto", or a number above 0 and at most `most` (a whole one, if `whole`): one rule, so that an error names the
    field alone rather than each alternative of a union."""

    def check(value: Any) -> Any:
        kinds = (int,) if whole else (int, float)
        if value == "auto" or (type(value) in kinds and 0 < value <= most):
            return value
        raise ValueError(f"it must be 'auto' or a {'whole ' if whole else ''}number above 0 and at most {most:g}")
    return PlainValidator(check)


class Hyperparameters(BaseModel):
    """OpenAI's, with its bounds."""

    model_config = ConfigDict(extra="forbid")
    n_epochs: Annotated[int | str, auto_or(50, whole=True)] = "auto"
    batch_size: Annotated[int | str, auto_or(256, whole=True)] = "auto"
    learning_rate_multiplier: Annotated[float | str, auto_or(10, whole=False)] = "auto"


class TuneRequest(Hyperparameters):
    """POST /v1/gpts/{slug}/tune: `gpts tune`'s settings."""

    max_steps: int | None = Field(None, ge=1)  # stop early


# -- answers ----------------------------------------------------------------------------------------------------------


def sse(data: str) -> str:
    """One server-sent event: what a stream sends for each chunk, and `[DONE]` last."""
    return f"data: {data}\n\n"


def _omit_none(**kwargs: Any) -> Any:
    """A field left out of the JSON when it is None (OpenAI's optional keys and our extensions)."""
    return Field(None, exclude_if=lambda value: value is None, **kwargs)


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    annotations: list[dict[str, Any]] = Field(default_factory=list)


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class _Envelope(BaseModel):
    """What every answer and chunk carries, llama.cpp's `timings` included (in the last chunk of a stream)."""

    id: str
    created: int
    model: str
    system_fingerprint: str | None = None
    usage: Usage | None = None  # a stream's: in its last chunk, when stream_options.include_usage
    timings: dict[str, int | float] | None = _omit_none()


class ChatCompletion(_Envelope):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = _omit_none()
    content: str | None = _omit_none()
    annotations: list[dict[str, Any]] | None = _omit_none()


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Envelope):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class TextCompletion(_Envelope):
    """A completions answer, whole or (streamed) one chunk of it: OpenAI names both "text_completion"."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    parent: str | None = _omit_none()  # what a custom GPT or a fine-tuned model is built on (vLLM's name)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]
