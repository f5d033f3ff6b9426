"""A custom GPT's spec: what a person writes to make an assistant (YAML, JSON, or flags), validated.

    name: Larkspur HR helper
    instructions: |
      You answer questions from the Larkspur Labs handbook. Today is {{current_date}}.
    examples: [[{role: user, content: "Can I bring my dog?"}, {role: assistant, content: "Yes, on Fridays."}]]
    knowledge: [handbook.md]
    model: default

Every field is checked here, before anything is written: an unknown key, a template variable that does not exist,
a sixth conversation starter. Errors name the field ("examples[0][1].role") and say how to fix it. This module
imports no torch: the store lists and shows GPTs without loading a model.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpts.errors import GptsError

CATEGORIES = ("writing", "productivity", "research", "programming", "education", "lifestyle", "other")
TEMPLATE_VARIABLES = ("current_date", "current_time", "gpt_name")
MAX_INSTRUCTIONS = 8000  # characters, as OpenAI's GPT builder
MAX_STARTERS = 4
SLUG_RULE = "lowercase letters, digits and single hyphens, 1 to 64 characters, e.g. larkspur-hr"

_VARIABLE = re.compile(r"\{\{(.*?)\}\}", re.S)  # anything in double braces is a variable, known or not
_SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


def slugify(name: str) -> str:
    """'Larkspur HR helper!' -> 'larkspur-hr-helper'; a name with no ASCII letter or digit gives 'gpt'."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-")
    return slug or "gpt"


def is_slug(text: str) -> bool:
    return len(text) <= 64 and _SLUG.fullmatch(text) is not None


def check_slug(slug: str) -> str:
    """A slug a user typed (gpts import --as), or an error saying what a slug is."""
    if not is_slug(slug):
        raise GptsError(f"{slug!r} is not a valid slug.", f"A slug is {SLUG_RULE}.")
    return slug


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ExampleMessage(_Strict):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class Generation(_Strict):
    """generate() controls, under OpenAI's names where OpenAI has one (max_tokens, stop, seed); checked as
    GenerationConfig checks them, so that a bad value is an error now, naming the field, not at the first answer.
    Strict: `true` is no temperature and 4.5 no top_k."""

    model_config = ConfigDict(extra="forbid", strict=True)

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, ge=1)
    max_new_tokens: int | None = Field(None, ge=1)
    stop: list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _stops_not_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(value):
            raise ValueError("a stop string must not be empty")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> Generation:
        if self.max_tokens is not None and self.max_new_tokens is not None:
            raise ValueError("give max_tokens or max_new_tokens, not both")
        return self

    def options(self) -> dict[str, Any]:
        """The settings given, under GenerationConfig's names."""
        given = self.model_dump(exclude_none=True)
        if "max_tokens" in given:
            given["max_new_tokens"] = given.pop("max_tokens")
        return given


class Retrieval(_Strict):
    """How knowledge files are cut and found. The defaults are OpenAI file search's."""

    chunk_tokens: int = Field(800, ge=16, le=4096)
    overlap_tokens: int = Field(400, ge=0)
    top_k: int = Field(5, ge=1, le=50)
    max_files: int = Field(20, ge=1, le=10_000)
    max_file_mb: float = Field(512, gt=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> Retrieval:
        if self.overlap_tokens > self.chunk_tokens // 2:
            raise ValueError(f"overlap_tokens ({self.overlap_tokens}) must be at most half of chunk_tokens "
                             f"({self.chunk_tokens})")
        return self


class GptSpec(_Strict):
    name: str = Field(min_length=1, max_length=100)
    slug: str | None = None
    description: str = Field("", max_length=300)
    instructions: str = Field("", max_length=MAX_INSTRUCTIONS)
    conversation_starters: list[str] = Field(default_factory=list, max_length=MAX_STARTERS)
    examples: list[list[ExampleMessage]] = Field(default_factory=list)
    knowledge: list[str] = Field(default_factory=list)  # paths, relative to the spec file
    model: str = Field("default", min_length=1)
    generation: Generation = Field(default_factory=Generation)
    retrieval: Retrieval = Field(default_factory=Retrieval)
    category: Literal[CATEGORIES] = "other"  # type: ignore[valid-type]
    tags: list[str] = Field(default_factory=list, max_length=20)
    author: str = Field("", max_length=100)
    visibility: Literal["private", "link", "public"] = "private"
    evaluation: str | None = None  # a JSONL file, relative to the spec file
    license: str | None = None  # kept from an Ollama Modelfile's LICENSE

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("slug")
    @classmethod
    def _valid_slug(cls, value: str | None) -> str | None:
        if value is not None and not is_slug(value):
            raise ValueError(f"must be {SLUG_RULE}")
        return value

    @field_validator("instructions")
    @classmethod
    def _known_variables(cls, value: str) -> str:
        unknown = sorted({m[1].strip() for m in _VARIABLE.finditer(value)} - set(TEMPLATE_VARIABLES))
        if unknown:
            raise ValueError(f"unknown template variable {{{{{unknown[0]}}}}}; the variables are "
                             + ", ".join(f"{{{{{v}}}}}" for v in TEMPLATE_VARIABLES))
        return value

    @field_validator("conversation_starters")
    @classmethod
    def _starters_not_blank(cls, value: list[str]) -> list[str]:
        if any(not s.strip() for s in value):
            raise ValueError("a conversation starter must not be blank")
        return value

    @field_validator("examples")
    @classmethod
    def _examples_alternate(cls, value: list[list[ExampleMessage]]) -> list[list[ExampleMessage]]:
        for i, conversation in enumerate(value):
            roles = [m.role for m in conversation]
            expected = ["user", "assistant"] * (len(roles) // 2 + 1)
            if not roles or roles != expected[:len(roles)] or roles[-1] != "assistant":
                raise ValueError(f"example {i} must alternate user and assistant messages, starting with user and "
                                 f"ending with assistant (it has: {', '.join(roles) or 'nothing'})")
        return value

    @field_validator("tags")
    @classmethod
    def _tags_normalized(cls, value: list[str]) -> list[str]:
        tags = [t.strip().lower() for t in value]
        if any(not t or len(t) > 40 for t in tags):
            raise ValueError("a tag is 1 to 40 characters")
        return list(dict.fromkeys(tags))

    @model_validator(mode="after")
    def _derive_slug(self) -> GptSpec:
        if self.slug is None:
            self.slug = slugify(self.name)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The spec as it is stored and exported: every field (generation: those set)."""
        data = self.model_dump(mode="json")
        data["generation"] = self.generation.model_dump(mode="json", exclude_none=True)
        return data


# What an evaluation set holds decides how it is scored: the fields of its rows, and the figure kept in the store.
EVALUATION_KINDS = {"classify": ({"text", "label"}, "accuracy"), "choice": ({"context", "choices", "answer"}, "acc"),
                    "generate": ({"prompt", "answer"}, "contains")}


def evaluation_kind(path: str | Path) -> str:
    """Which of EVALUATION_KINDS a JSONL file is, by its first row; an error naming the file when it is none."""
    from gpts.fileio import read_jsonl

    first = next((line for line in read_jsonl(path) if line.error is None), None)
    fields = set(first.value) if first is not None and isinstance(first.value, dict) else set()
    for kind, (needed, _) in EVALUATION_KINDS.items():
        if needed <= fields:
            return kind
    raise GptsError(f"{path} is not an evaluation set gpts knows: its first row has the fields "
                    f"{sorted(fields) or 'none'}.", 'Write {"text", "label"} rows (classification), {"prompt", '
                    '"answer"} rows (generation) or {"context", "choices", "answer"} rows (multiple choice).')


def render_instructions(instructions: str, gpt_name: str, now: datetime | None = None) -> str:
    """The instructions with their template variables filled in (validation has refused unknown ones)."""
    now = now or datetime.now().astimezone()
    values = {"current_date": now.strftime("%Y-%m-%d"), "current_time": now.strftime("%H:%M"), "gpt_name": gpt_name}
    return _VARIABLE.sub(lambda m: values[m[1].strip()], instructions)


def _field_path(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "the spec"


class SpecError(GptsError):
    """An invalid spec; `field` is the field at fault ("examples[0][1].role"), which the server names as `param`."""

    def __init__(self, problem: str, fix: str, field: str):
        super().__init__(problem, fix)
        self.field = field


def validation_error(e: ValidationError, where: str) -> SpecError:
    """A pydantic error as a user reads it: the field, what is wrong with it, and the file it is in."""
    first = e.errors()[0]
    field = _field_path(first["loc"])
    kind, message = first["type"], first["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        model = {1: GptSpec, 2: {"generation": Generation, "retrieval": Retrieval}.get(first["loc"][0])}.get(
            len(first["loc"]))
        known = f"; the fields are {', '.join(model.model_fields)}" if model else ""
        message = "not a known field" + known
    elif kind == "missing":
        message = "required"
    more = f" ({len(e.errors()) - 1} more problem(s) after this one)" if len(e.errors()) > 1 else ""
    return SpecError(f"Invalid GPT spec{where}: {field}: {message}.{more}",
                     "Fix that field; the README's section on custom GPTs shows every field of a spec.", field)


def parse_spec(data: Any, where: str = "") -> GptSpec:
    """A spec from a dict (a parsed YAML or JSON file, or flags); `where` names the source in errors."""
    if not isinstance(data, dict):
        raise GptsError(f"Invalid GPT spec{where}: expected a mapping of fields (name, instructions, ...), got "
                        f"{type(data).__name__}.", "Write the spec as YAML or JSON keys and values.")
    try:
        return GptSpec.model_validate(data)
    except ValidationError as e:
        raise validation_error(e, where) from None


def read_spec(path: str | Path) -> tuple[GptSpec, Path]:
    """A spec file (YAML or JSON) and the folder its relative paths start from."""
    import yaml

    from gpts.fileio import read_text

    path = Path(path)
    text = read_text(path)
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise GptsError(f"Cannot parse {path}: {e}.", "Fix the YAML (or JSON) syntax at that place.") from None
    return parse_spec(data, f" in {path}"), path.parent
