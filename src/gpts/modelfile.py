'''Ollama Modelfiles in and out: import one as a gpts spec, export a GPT as one (next to a GGUF file).

    FROM ./larkspur-hr.gguf
    SYSTEM """You answer questions from the Larkspur Labs handbook."""
    PARAMETER temperature 0.7
    PARAMETER stop "<|eot_id|>"
    MESSAGE user Can I bring my dog?
    MESSAGE assistant Yes, on Fridays.

The grammar is that of Ollama's own parser (parser/parser.go in github.com/ollama/ollama), which is stricter in
places and looser in others than its documentation suggests:

- instruction names are case-insensitive; a line whose first non-blank character is # is a comment (a # later
  in a line is part of the value, so "PARAMETER temperature 1 # warm" is not a number);
- a value is bare, "quoted" or """triple-quoted""". Quotes have no escapes: Ollama reads a value up to the first
  line end where the text so far, stripped, is complete. A """ inside a text is therefore fine, except at the
  end of one of its lines, where it closes the text;
- Ollama keeps only printable characters (and tabs and line breaks): it drops control characters and invisible
  ones such as U+00A0 and U+200B. The import does the same and says so in a warning; the export refuses a text
  with such a character, since Ollama would not read it back unchanged.

This module imports no torch: a Modelfile converts without loading a model.
'''

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import PureWindowsPath
from typing import Any, NamedTuple

from gpts.errors import GptsError
from gpts.spec import GptSpec, render_instructions

ROLES = ("system", "user", "assistant")
# Instructions that Ollama knows and gpts has no use for: dropped with a warning rather than refused, so that a
# Modelfile from `ollama show --modelfile` imports. The value says why it is dropped.
IGNORED_INSTRUCTIONS = {
    "template": "gpts renders the model's own chat template",
    "renderer": "gpts renders the model's own chat template",
    "parser": "gpts reads a model's answers as plain text",
    "draft": "gpts has no draft-model decoding",
    "requires": "it names a minimum Ollama version",
}
INSTRUCTIONS = ("from", "parameter", "system", "adapter", "license", "message", *IGNORED_INSTRUCTIONS)

# Ollama parameter -> (gpts generation key, type of its value, an example value). Ollama's other parameters
# (num_ctx, repeat_last_n, mirostat, num_gpu, ...) have no gpts equivalent.
PARAMETERS: dict[str, tuple[str, type, str]] = {
    "temperature": ("temperature", float, "0.7"),
    "top_p": ("top_p", float, "0.9"),
    "top_k": ("top_k", int, "40"),
    "min_p": ("min_p", float, "0.05"),
    "repeat_penalty": ("repetition_penalty", float, "1.1"),
    "num_predict": ("max_tokens", int, "256"),
    "stop": ("stop", str, '"<|eot_id|>"'),
    "seed": ("seed", int, "42"),
}
_TO_OLLAMA = {key: name for name, (key, _, _) in PARAMETERS.items()} | {"max_new_tokens": "num_predict"}

# What a value that needs a value looks like (the fix of a "has no value" error).
_USAGE = {"from": "FROM llama3.2 or FROM ./model.gguf", "adapter": "ADAPTER ./adapter.gguf",
          "parameter": "PARAMETER temperature 0.7", "message": "MESSAGE user Is Toronto in Canada?"}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # Ollama ends a line at \r as well as \n
_LINES = re.compile(r"(\r\n|\r|\n)")  # splits a text into lines and keeps the breaks
_WORD = re.compile(r"([^ \t]*)[ \t]*(.*)")  # a line's first word and the rest after the blanks (fits any line)
# The decimal forms of Go's strconv.ParseInt and ParseFloat (Go also takes inf, nan and hex floats, which no
# sampling setting needs).
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class ImportedModelfile:
    """A Modelfile as gpts reads it.

    `spec` is for gpts.spec.parse_spec; its "name" is derived from FROM, so a caller with a better name replaces
    the key before parsing. `adapter` is ADAPTER as written (a path relative to the Modelfile), or None.
    `warnings` says, one sentence each with its line, what gpts dropped.
    """

    spec: dict[str, Any]
    adapter: str | None
    warnings: list[str]


class _Instruction(NamedTuple):
    line: int
    name: str  # lowercase: "from", "parameter", ...
    argument: str  # PARAMETER's name or MESSAGE's role, lowercase; "" for the others
    value: str


def _error(where: str, line: int, problem: str, fix: str) -> GptsError:
    return GptsError(f"{where}, line {line}: {problem}", fix)


def _label(name: str, argument: str) -> str:
    """'PARAMETER num_ctx', 'MESSAGE user', 'SYSTEM': an instruction as messages name it."""
    return f"{name.upper()} {argument}".strip()


def _line_at(text: str, index: int) -> int:
    return len(_LINE_BREAK.findall(text, 0, index)) + 1


def _kept(char: str) -> bool:
    """Whether Ollama's parser keeps `char` (Go's strconv.IsPrint, which is Python's isprintable, or a blank)."""
    return char.isprintable() or char in "\t\r\n"


def _unquote(text: str) -> tuple[bool, str]:
    """Ollama's unquote: (whether the stripped value is complete, the value without its quotes)."""
    if text.startswith('"""'):
        return (True, text[3:-3]) if len(text) >= 6 and text.endswith('"""') else (False, "")
    if text.startswith('"'):
        return (True, text[1:-1]) if len(text) >= 2 and text.endswith('"') else (False, "")
    return True, text


def _read_value(first: str, contents: list[str], breaks: list[str], index: int, where: str) -> tuple[str, int]:
    """The value that starts with `first` on line `index` (from 0), and the index of the line after it.

    As in Ollama, the value ends at the first line end where the text so far, stripped of blanks, is complete;
    an open quote carries it on to the next line, line break included.
    """
    text, last = first, index
    while True:
        complete, value = _unquote(text.strip())  # strip: Go's strings.TrimSpace
        if complete:
            return value, last + 1
        if last + 1 == len(contents):
            quote = '"""' if text.lstrip(" \t").startswith('"""') else '"'
            raise _error(where, index + 1, f"the {quote} that opens this value is never closed.",
                         f"End the value with {quote} at the end of a line (Ollama reads a quoted value up to the "
                         f"first line that ends with {quote}).")
        text += breaks[last] + contents[last + 1]
        last += 1


def _instructions(text: str, where: str) -> Iterator[_Instruction]:
    """The instructions of a Modelfile in order, each with the line it starts on."""
    parts = _LINES.split(text)
    contents, breaks = parts[0::2], parts[1::2]
    index = 0
    while index < len(contents):
        line, head = index + 1, contents[index].lstrip(" \t")
        if not head or head.startswith("#"):
            index += 1
            continue
        word, rest = _WORD.fullmatch(head).groups()
        name = word.lower()
        if name not in INSTRUCTIONS:
            raise _error(where, line, f"unknown instruction {word[:40]!r}.",
                         f"An instruction is one of {', '.join(i.upper() for i in INSTRUCTIONS)} (in any case), "
                         "followed by its value; a comment line starts with #.")
        argument = ""
        if name in ("parameter", "message"):
            argument, rest = _WORD.fullmatch(rest).groups()
            argument = argument.lower()
            if name == "message" and argument and argument not in ROLES:
                raise _error(where, line, f"MESSAGE has the role {argument!r}.",
                             f"A MESSAGE role is one of {', '.join(ROLES)}, e.g. {_USAGE['message']}.")
        value, index = _read_value(rest, contents, breaks, index, where)
        # A parameter may be blanks (a stop string of one space); a model, adapter or message may not.
        if name in _USAGE and (not value if name == "parameter" else not value.strip()):
            raise _error(where, line, f"{_label(name, argument)} has no value.",
                         f"Write its value after it, e.g. {_USAGE[name]}.")
        yield _Instruction(line, name, argument, value)


def _add_parameter(ins: _Instruction, generation: dict[str, Any], notes: list[tuple[int, str]], where: str) -> None:
    """PARAMETER into `generation` under its gpts name, or a (line, warning) into `notes` when gpts drops it."""
    if ins.argument not in PARAMETERS:
        notes.append((ins.line, f"PARAMETER {ins.argument} dropped: gpts has no equivalent (it takes "
                                + ", ".join(PARAMETERS) + ")."))
        return
    key, kind, example = PARAMETERS[ins.argument]
    if kind is str:
        generation.setdefault(key, []).append(ins.value)  # stop repeats: each line adds one
        return
    number = kind(ins.value) if (_INT if kind is int else _FLOAT).fullmatch(ins.value) else math.nan
    if not math.isfinite(number):  # 1e999 reads as inf
        raise _error(where, ins.line, f"PARAMETER {ins.argument} {ins.value!r} is not a "
                                      f"{'whole number' if kind is int else 'finite number'}.",
                     f"Write it like PARAMETER {ins.argument} {example}; a comment goes on a line of its own.")
    if ins.argument == "num_predict" and number < 1:
        why = "gpts has no unlimited length; it stops at generation.max_tokens, or its default"
        notes.append((ins.line, f"PARAMETER num_predict {number} dropped: {why}."))
    elif ins.argument == "seed" and number < 0:
        pass  # Ollama's -1 is a fresh random seed each time, which is gpts' default
    else:
        generation[key] = number  # as in Ollama, a repeated parameter replaces the earlier one


def _name_from(model: str) -> str:
    """'./larkspur-hr.gguf' -> 'larkspur-hr', 'llama3.2:latest' -> 'llama3.2', 'hf.co/a/b:Q4_K_M' -> 'b:Q4_K_M'."""
    base = re.split(r"[/\\]", model.strip().rstrip("/\\"))[-1]
    base = re.sub(r"\.gguf$", "", base, flags=re.IGNORECASE).removesuffix(":latest")
    return (base or model)[:100]


def parse_modelfile(text: str, where: str = "Modelfile") -> ImportedModelfile:
    """A Modelfile's text as a gpts spec dict, its ADAPTER, and what gpts dropped; `where` names it in messages.

    FROM -> model (as written: the caller resolves a relative path against the Modelfile's folder), SYSTEM ->
    instructions, PARAMETER -> generation under gpts' names, MESSAGE user/assistant pairs -> one example
    conversation, LICENSE -> license. TEMPLATE and Ollama's parameters without a gpts equivalent are dropped with
    a warning.
    """
    notes: list[tuple[int, str]] = []  # (line, warning): the warnings come out in the order of their lines
    text = text.removeprefix("\ufeff")  # as Ollama does, a byte order mark is not part of the text
    kept = "".join(c for c in text if _kept(c))
    if len(kept) < len(text):
        first = next(i for i, c in enumerate(text) if not _kept(c))
        count = len(text) - len(kept)
        notes.append((_line_at(text, first), f"{count} control or invisible character(s) dropped, "
                                             + f"U+{ord(text[first]):04X} the first, as Ollama drops them."))
    model: _Instruction | None = None
    system: _Instruction | None = None
    adapter: _Instruction | None = None
    licenses: list[str] = []
    system_messages: list[_Instruction] = []
    generation: dict[str, Any] = {}
    conversation: list[dict[str, str]] = []
    question: _Instruction | None = None  # a user message waiting for its answer

    def drop(ins: _Instruction, why: str) -> None:
        notes.append((ins.line, f"{_label(ins.name, ins.argument)} dropped: {why}."))

    for ins in _instructions(kept, where):
        if ins.name == "from":
            if model is not None:
                raise _error(where, ins.line, f"a second FROM (the first is on line {model.line}).",
                             "A GPT is built on one model: keep one FROM line.")
            model = ins
        elif ins.name == "system":
            if system is not None:
                drop(system, f"the SYSTEM on line {ins.line} replaces it, as in Ollama")
            system = ins
        elif ins.name == "adapter":
            if adapter is not None:
                drop(adapter, f"the ADAPTER on line {ins.line} replaces it, as in Ollama")
            adapter = ins
        elif ins.name == "license":
            licenses.append(ins.value)
        elif ins.name == "parameter":
            _add_parameter(ins, generation, notes, where)
        elif ins.name == "message":
            if ins.argument == "system":
                system_messages.append(ins)
            elif ins.argument == "user":
                if question is not None:
                    drop(question, "no assistant message answers it (an example is a user-assistant pair)")
                question = ins
            elif question is None:
                drop(ins, "no user message comes before it (an example is a user-assistant pair)")
            else:
                conversation += [{"role": "user", "content": question.value},
                                 {"role": "assistant", "content": ins.value}]
                question = None
        else:
            drop(ins, IGNORED_INSTRUCTIONS[ins.name])
    if question is not None:
        drop(question, "no assistant message answers it (an example is a user-assistant pair)")
    if model is None:
        raise GptsError(f"{where} has no FROM line.", f"Add one naming the model, e.g. {_USAGE['from']}.")

    spec: dict[str, Any] = {"name": _name_from(model.value), "model": model.value}
    if system is not None:
        spec["instructions"] = system.value
        for ins in system_messages:
            drop(ins, f"the SYSTEM on line {system.line} gives the instructions")
    elif system_messages:
        spec["instructions"] = "\n\n".join(ins.value for ins in system_messages)
    if conversation:
        spec["examples"] = [conversation]
    if generation:
        spec["generation"] = generation
    if licenses:
        spec["license"] = "\n\n".join(licenses)  # Ollama keeps every LICENSE; a spec has one text
    warnings = [f"{where}, line {line}: {note}" for line, note in sorted(notes, key=lambda n: n[0])]
    return ImportedModelfile(spec, None if adapter is None else adapter.value, warnings)


def _quote(text: str, what: str) -> str:
    """`text` as a Modelfile value that Ollama reads back unchanged: bare where it can be, else triple-quoted."""
    hidden = next((i for i, c in enumerate(text) if not _kept(c)), None)
    if hidden is not None:
        raise GptsError(f"Cannot write {what} into a Modelfile: its line {_line_at(text, hidden)} has the control "
                        f"or invisible character U+{ord(text[hidden]):04X}, which Ollama's parser drops.",
                        f"Remove that character from {what}.")
    if text and text == text.strip() and not _LINE_BREAK.search(text) and not text.startswith('"'):
        return text
    # Quotes have no escapes, and Ollama ends a quoted value at the first line end where the text so far ends
    # with the closing quotes: no quoting carries a line that ends with """.
    for line_break in _LINE_BREAK.finditer(text):
        if text[:line_break.start()].rstrip().endswith('"""'):
            raise GptsError(f"Cannot write {what} into a Modelfile: its line {_line_at(text, line_break.start())} "
                            'ends with """, which Ollama reads as the end of the text.',
                            f'Change that line of {what}, e.g. end it with a period after the """.')
    return f'"""{text}"""'


def _number(value: Any, kind: type, key: str) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind is int and is_int:
        return str(value)
    if kind is float and (is_int or isinstance(value, float)) and math.isfinite(value):
        return repr(value)  # the shortest text that reads back as the same float
    rule = "a whole number" if kind is int else "a finite number"
    raise GptsError(f"Cannot write generation.{key}={value!r} into a Modelfile: Ollama's {_TO_OLLAMA[key]} is "
                    f"{rule}.", f"Set generation.{key} to {rule} in the GPT's spec.")


def _parameter_lines(generation: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in generation.items():
        if value is None:
            continue  # unset, as GenerationConfig.from_dict reads it
        name = _TO_OLLAMA[key]  # the spec allows only keys that Ollama has
        kind = PARAMETERS[name][1]
        if kind is not str:
            lines.append(f"PARAMETER {name} {_number(value, kind, key)}")
            continue
        stops = [value] if isinstance(value, str) else value
        if not (isinstance(stops, list) and all(isinstance(s, str) and s for s in stops)):
            raise GptsError(f"Cannot write generation.{key}={value!r} into a Modelfile: it is not a list of "
                            "non-empty strings.", f"Set generation.{key} to a list of strings in the GPT's spec.")
        lines += [f"PARAMETER stop {_quote(stop, f'generation.{key}')}" for stop in stops]
    return lines


def to_modelfile(spec: GptSpec, gguf_name: str, *, now: datetime | None = None) -> str:
    """The Modelfile that makes `spec` an Ollama model from the GGUF file `gguf_name`, written next to it.

    Ollama has no template variables, so {{current_date}} and the others are filled in now (or at `now`), and a
    comment says so. Ollama keeps one message history: several example conversations follow one another.
    """
    if not gguf_name or _LINE_BREAK.search(gguf_name) or gguf_name.startswith(("/", "\\")) \
            or PureWindowsPath(gguf_name).drive:
        raise GptsError(f"Cannot write a Modelfile for the GGUF file {gguf_name!r}: FROM needs a path relative to "
                        "the Modelfile.", "Give the GGUF file's name, e.g. model.gguf, and write it next to the "
                                          "Modelfile.")
    now = now or datetime.now().astimezone()
    instructions = render_instructions(spec.instructions, spec.name, now)
    name = " ".join(spec.name.split())  # a comment ends at a line break
    lines = [f"# {name}: a GPT exported by gpts. To add it to Ollama: ollama create {spec.slug} -f Modelfile"]
    if instructions != spec.instructions:
        lines.append(f"# The instructions' template variables were filled in at export ({now:%Y-%m-%d %H:%M}): "
                     "Ollama cannot fill them.")
    if len(spec.examples) > 1:
        lines.append(f"# Ollama keeps one message history: the {len(spec.examples)} example conversations follow "
                     "one another.")
    lines.append(f"FROM {_quote('./' + gguf_name, 'the GGUF file name')}")
    if instructions:
        lines.append(f"SYSTEM {_quote(instructions, 'the instructions')}")
    lines += _parameter_lines(spec.generation.model_dump(exclude_none=True))
    for i, conversation in enumerate(spec.examples):
        for j, message in enumerate(conversation):
            lines.append(f"MESSAGE {message.role} {_quote(message.content, f'examples[{i}][{j}].content')}")
    if spec.license:
        lines.append(f"LICENSE {_quote(spec.license, 'the license')}")
    return "\n".join(lines) + "\n"
