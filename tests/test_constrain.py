"""JSON mode (gpts.constrain): driven token by token, with random and adversarial choices, as the engine drives it."""

import functools
import json
import random
import re

import pytest
import torch

from gpts.constrain import json_constraint
from gpts.errors import GptsError
from gpts.tokenizer import Tokenizer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "role"],
    "additionalProperties": False,
}
CLOSERS = ('"', "}", "]")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


@functools.cache
def closers(tokenizer: Tokenizer) -> torch.Tensor:
    """How many quotes and closing brackets each token's text holds."""
    texts = [tokenizer.decode([t]) for t in range(tokenizer.vocab_size)]
    return torch.tensor([sum(text.count(c) for c in CLOSERS) for text in texts])


def assert_compact(text: str) -> None:
    """Outside strings, the only whitespace is the one space of each ", " and ": "."""
    skeleton = STRING.sub('""', text).replace(", ", ",").replace(": ", ":")
    assert not re.search(r"\s", skeleton), text


@pytest.fixture(scope="module")
def smol(bundled_gguf, tmp_path_factory) -> Tokenizer:
    """The bundled model's tokenizer (read_tokenizer, with the user directory in a temp dir)."""
    from gpts.registry import read_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPTS_HOME", str(tmp_path_factory.mktemp("gpts-home")))
        return read_tokenizer("default")


def drive(tokenizer: Tokenizer, factory, rng: random.Random, wander: int, limit: int = 600) -> list[int]:
    """Sample as an adversarial engine would: `wander` uniformly random allowed tokens (long keys, odd bytes, deep
    nesting), then, to finish, the allowed tokens that close the most strings, objects and arrays. Checks at every
    step that some token is allowed and that only the tokenizer's own tokens are."""
    constraint, ids = factory(), []
    while not constraint.done():
        assert len(ids) < limit, f"no end after {limit} tokens: {tokenizer.decode(ids)!r}"
        allowed = constraint.mask().nonzero().flatten()
        assert len(allowed), f"no token allowed after {tokenizer.decode(ids)!r}"
        assert allowed.max() < tokenizer.vocab_size
        if len(ids) >= wander:
            closing = closers(tokenizer)[allowed]
            allowed = allowed[closing == closing.max()]
        token = rng.choice(allowed.tolist())
        constraint.advance(token)
        ids.append(token)
    return ids


@pytest.mark.parametrize("seed", range(4))
def test_json_object_mode_always_gives_an_object(smol, seed):
    factory = json_constraint(smol, None)
    text = smol.decode(drive(smol, factory, random.Random(seed), wander=40 * seed))
    assert isinstance(json.loads(text), dict), text
    assert_compact(text)


@pytest.mark.parametrize("seed", range(4))
def test_schema_output_validates(smol, seed):
    factory = json_constraint(smol, PERSON)
    ids = drive(smol, factory, random.Random(seed), wander=25 * seed)
    text = smol.decode(ids)
    value = json.loads(text)
    assert set(value) >= {"name", "age", "role"} and set(value) <= set(PERSON["properties"]), text
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert type(value["age"]) is int and 0 <= value["age"] <= 150
    assert value["role"] in ("admin", "user", "guest")
    assert all(isinstance(tag, str) for tag in value.get("tags", [])) and len(value.get("tags", [])) <= 3
    assert_compact(text)


def test_mask_is_cheap_to_share_and_sequences_are_independent(smol):
    """One factory serves many sequences (n > 1): each starts at the beginning, whatever the others did."""
    factory = json_constraint(smol, PERSON)
    first, second = factory(), factory()
    opening = first.mask()
    first.advance(int(opening.nonzero()[0]))
    assert torch.equal(second.mask(), opening)
    assert not torch.equal(first.mask(), opening)


def test_mask_spans_a_model_vocabulary_wider_than_the_tokenizer(smol):
    width = smol.vocab_size + 64  # models pad their embedding table
    constraint = json_constraint(smol, None, vocab_size=width)()
    mask = constraint.mask()
    assert mask.shape == (width,) and mask.dtype == torch.bool
    assert mask.any() and not mask[smol.vocab_size:].any()


def test_a_scalar_ends_with_the_end_of_turn_token(smol):
    """A number can always grow by another digit: it ends when the model picks eos, which the mask then allows."""
    constraint = json_constraint(smol, {"type": "integer"})()
    eos = min(smol.eos_ids)
    assert not constraint.mask()[eos]  # nothing yet: not an integer
    constraint.advance(smol.encode("7")[0])
    assert constraint.mask()[eos] and not constraint.done()
    constraint.advance(eos)
    assert constraint.done()


def test_special_tokens_never_appear_inside_json(smol):
    constraint = json_constraint(smol, {"type": "object", "properties": {"a": {"type": "string"}}})()
    for token in smol.encode('{"a": "'):
        constraint.advance(token)
    mask = constraint.mask()
    assert mask.any() and not mask[sorted(smol._special_ids)].any()


def test_a_token_outside_the_mask_is_refused(smol):
    constraint = json_constraint(smol, None)()
    with pytest.raises(GptsError, match="breaks the JSON grammar"):
        constraint.advance(smol.encode("hello")[0])


@pytest.mark.parametrize("schema, message", [
    ({"not": {"type": "string"}}, "Unimplemented keys"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"type": "string", "pattern": "(a"}, "unclosed group"),
    ({"type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}, "does not exist"),
    ({"type": "bogus"}, "Invalid type"),
    ({"enum": []}, "Unsatisfiable"),
    (True, "must be a JSON object"),
])
def test_schemas_llguidance_cannot_follow_are_clear_errors(smol, schema, message):
    with pytest.raises(GptsError, match=message) as error:
        json_constraint(smol, schema)
    assert error.value.fix


def test_a_vocabulary_that_cannot_spell_json_is_a_clear_error():
    with pytest.raises(GptsError, match="JSON mode cannot use this model's tokenizer"):
        json_constraint(Tokenizer.char_level("abc{}"), None)


def test_trained_byte_level_bpe_works_too():
    """Models pretrained with gpts have their own byte-level BPE (no eos of a chat template)."""
    tokenizer = Tokenizer.train_bpe(['{"key": "value", "n": 12}', "plain words here"] * 20, 300)
    text = tokenizer.decode(drive(tokenizer, json_constraint(tokenizer, None), random.Random(0), wander=30))
    assert isinstance(json.loads(text), dict)


def test_objects_are_closed_to_other_keys_unless_the_schema_opens_them(smol):
    """As OpenAI's strict mode: an object that lists its properties takes no others (left open, a small model adds
    keys until max_tokens cuts the JSON short), at any depth; additionalProperties given is kept."""
    open_person = {k: v for k, v in PERSON.items() if k != "additionalProperties"}
    schema = {"type": "object", "properties": {"person": open_person, "extra": {"type": "object", "properties": {},
                                                                                "additionalProperties": True}},
              "required": ["person", "extra"]}
    factory = json_constraint(smol, schema)
    for seed in range(3):
        value = json.loads(smol.decode(drive(smol, factory, random.Random(seed), wander=60)))
        assert set(value) <= {"person", "extra"}
        assert set(value["person"]) <= set(PERSON["properties"])
