"""JSON mode: constrain sampling so that the output is JSON (any object, or one that a JSON Schema describes).

OpenAI's `response_format` `json_object` and `json_schema` promise valid JSON. Asking the model nicely does not keep
that promise, so the engine asks a constraint, before each token, which tokens may come next and samples only among
them. The grammar work is llguidance's (the engine llama.cpp and vLLM use): it compiles a schema into a grammar and
computes each step's token mask in Rust, in well under a millisecond for the schemas people write.

    factory = json_constraint(tokenizer, schema)   # checks the schema now: a GptsError before any generation
    constraint = factory()                          # one per generated sequence
    constraint.mask()                               # (vocab,) bool: the tokens allowed next
    constraint.advance(token_id)                    # the token the engine picked
    constraint.done()                               # the JSON value is complete: the sequence ends ("stop")

The JSON is written with fixed separators (", " and ": ") and no other whitespace between tokens, so that a small
model cannot spend its tokens on spaces and newlines.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable
from typing import Any

import llguidance
import torch

from gpts.engine import TokenConstraint
from gpts.errors import GptsError
from gpts.tokenizer import Tokenizer

# How llguidance writes JSON: the separators people and models write, and nothing else between tokens.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
SCHEMA_DOCS = "https://github.com/guidance-ai/llguidance/blob/main/docs/json_schema.md"

_BIT_VALUES = torch.tensor([1 << bit for bit in range(8)], dtype=torch.uint8)


# Building an LLTokenizer walks the whole vocabulary (a third of a second for 49k tokens): once per tokenizer object
# and vocabulary width. Servers create constraints from several threads, hence the lock.
_LL_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, dict[int, llguidance.LLTokenizer]] = weakref.WeakKeyDictionary()
_LL_LOCK = threading.Lock()


def _ll_tokenizer(tokenizer: Tokenizer, vocab_size: int) -> llguidance.LLTokenizer:
    with _LL_LOCK:
        by_size = _LL_TOKENIZERS.setdefault(tokenizer, {})
        if vocab_size not in by_size:
            try:
                # llguidance reads the `tokenizers` JSON itself (byte-level BPE, SentencePiece byte fallback);
                # ids past the tokenizer's own (a model's padded vocabulary) are tokens it never allows.
                by_size[vocab_size] = llguidance.LLTokenizer(tokenizer.backend.to_str(), n_vocab=vocab_size,
                                                             eos_token=sorted(tokenizer.eos_ids) or None)
            except ValueError as e:
                raise GptsError(f"JSON mode cannot use this model's tokenizer: {e}.",
                                "It needs a byte-level BPE or SentencePiece tokenizer, as GGUF and Hugging Face "
                                "chat models have; a character-level vocabulary cannot spell JSON.") from e
        return by_size[vocab_size]


def json_constraint(tokenizer: Tokenizer, schema: dict[str, Any] | None,
                    vocab_size: int | None = None) -> Callable[[], TokenConstraint]:
    """A factory of constraints (one per generated sequence) that hold the output to JSON: any JSON object when
    `schema` is None (OpenAI's `json_object`), else a value `schema` (a JSON Schema) accepts. `vocab_size` is the
    width of the model's logits when it exceeds the tokenizer's vocabulary. A schema llguidance cannot follow (an
    unsupported keyword, a bad pattern, a dangling $ref, no value at all) is a GptsError here, before generation."""
    if schema is not None and not isinstance(schema, dict):
        raise GptsError(f"A JSON schema must be a JSON object, not {json.dumps(schema)[:80]}.",
                        'Give a schema such as {"type": "object", "properties": {...}}.')
    width = max(vocab_size or 0, tokenizer.vocab_size)
    ll_tokenizer = _ll_tokenizer(tokenizer, width)
    grammar = llguidance.LLMatcher.grammar_from_json_schema({"type": "object"} if schema is None else closed(schema),
                                                           overrides=JSON_OPTIONS)
    # The compiled grammar lives in this matcher; every sequence starts from a copy, which is far cheaper than
    # compiling the schema again.
    prototype = llguidance.LLMatcher(ll_tokenizer, grammar, log_level=0)
    if prototype.is_error():
        raise GptsError(f"The JSON schema cannot be used to constrain the output: {prototype.get_error()}",
                        f"Remove or rewrite that part of the schema (what is supported: {SCHEMA_DOCS}).")
    return lambda: JsonConstraint(prototype.deep_copy(), vocab_size or tokenizer.vocab_size)


def closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others (additionalProperties false) unless it
    says otherwise, as OpenAI's strict mode has it: left open, a small model adds key after key until max_tokens cuts
    the JSON short."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    for key in ("properties", "patternProperties", "$defs", "definitions"):  # maps of name -> schema
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):  # one schema
        if key in out:
            out[key] = [closed(sub) for sub in out[key]] if isinstance(out[key], list) else closed(out[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):  # lists of schemas
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    return out


class JsonConstraint:
    """One sequence's progress through the grammar."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        self._matcher = matcher
        self._vocab_size = vocab_size

    def mask(self) -> torch.Tensor:
        # llguidance packs the mask as little-endian 32-bit words: token i is bit i % 8 of byte i // 8.
        packed = torch.frombuffer(bytearray(self._matcher.compute_bitmask()), dtype=torch.uint8)
        return (packed.unsqueeze(1) & _BIT_VALUES).ne(0).flatten()[:self._vocab_size]

    def advance(self, token_id: int) -> None:
        if not self._matcher.consume_token(token_id):
            raise GptsError(f"Token {token_id} breaks the JSON grammar: {self._matcher.get_error()}",
                            "The sampler must pick among the tokens mask() allows.")

    def done(self) -> bool:
        return self._matcher.is_stopped()
