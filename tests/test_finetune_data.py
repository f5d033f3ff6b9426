import json
import re

import pytest

from gpts.errors import GptsError
from gpts.finetune_data import ERRORS, IGNORE_INDEX, load_dataset, tokenize_conversation
from gpts.task import ClassificationTask, classification_messages
from gpts.tokenizer import Tokenizer

from helpers import Recorder

CORPUS = ["The quick brown fox jumps over the lazy dog.", "Hello there! How can I help?", "What is 2+2? It is 4.",
          "user assistant system", "Translate to French: cat, chat."] * 10
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there!"}, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 4."}]
USER = {"role": "user", "content": "Hi"}
ASSISTANT = {"role": "assistant", "content": "Hello!"}
GOOD = {"messages": [USER, ASSISTANT]}


# -- tokenizers -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_tok() -> Tokenizer:
    """GPT-2 style: byte-level BPE, <|endoftext|> its only special token, no chat template (ChatML as plain text)."""
    return Tokenizer.train_bpe(CORPUS, 400)


@pytest.fixture(scope="module")
def chatml_tok() -> Tokenizer:
    """No chat template (the ChatML fallback), with <|im_start|> / <|im_end|> as special tokens, eos <|im_end|>."""
    tok = Tokenizer.train_bpe(CORPUS, 400)
    tok.backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.eos_token = "<|im_end|>"
    return tok


@pytest.fixture(scope="module")
def smol(bundled_gguf) -> Tokenizer:
    from gpts.weights.gguf import read_gguf_metadata

    return Tokenizer.from_gguf_metadata(read_gguf_metadata(bundled_gguf))


def trained_runs(tok: Tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The trained stretches of an example, each decoded."""
    runs, run = [], []
    for i, label in zip(ids, labels):
        assert label in (IGNORE_INDEX, i)
        if label != IGNORE_INDEX:
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    return [tok.decode(r) for r in runs + ([run] if run else [])]


def write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def errors_of(exc: pytest.ExceptionInfo) -> dict[str, str]:
    """error name -> its report line, from the GptsError."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^  (\w+): .*$", exc.value.problem, re.M)}


# -- the loss mask --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chatml_tok", "smol"])
def test_mask_is_each_assistant_content_and_end_of_turn(name, request):
    tok = request.getfixturevalue(name)
    ids, labels = tokenize_conversation(tok, CHAT)
    assert ids == tok.encode_chat(CHAT, add_generation_prompt=False)  # the conversation's own tokens
    assert trained_runs(tok, ids, labels) == ["Hello there!<|im_end|>", "It is 4.<|im_end|>"]
    # Each trained span starts right after the tokens of the prompt that asks for it (the spans by difference).
    for i in (2, 4):
        prompt = tok.encode_chat(CHAT[:i])
        assert ids[:len(prompt)] == prompt
        assert labels[len(prompt) - 1] == IGNORE_INDEX and labels[len(prompt)] == ids[len(prompt)]


def test_weight_zero_turns_are_not_trained(smol):
    messages = [*CHAT[:3], {**CHAT[3]}, {**CHAT[4], "weight": 0}]
    ids, labels = tokenize_conversation(smol, messages)
    assert trained_runs(smol, ids, labels) == ["Hello there!<|im_end|>"]
    messages[2] = {**messages[2], "weight": 0}
    messages[4] = {**messages[4], "weight": 1}
    assert trained_runs(smol, *tokenize_conversation(smol, messages)) == ["It is 4.<|im_end|>"]


def test_without_an_end_of_turn_token_eos_is_added(gpt2_tok):
    # ChatML on a GPT-2 vocabulary: "<|im_end|>" is plain text, so the model is taught to stop with <|endoftext|>.
    ids, labels = tokenize_conversation(gpt2_tok, CHAT)
    assert trained_runs(gpt2_tok, ids, labels) == ["Hello there!<|im_end|><|endoftext|>",
                                                   "It is 4.<|im_end|><|endoftext|>"]
    expected = gpt2_tok.apply_chat_template(CHAT, add_generation_prompt=False)
    for reply in ("Hello there!", "It is 4."):
        expected = expected.replace(f"{reply}<|im_end|>", f"{reply}<|im_end|><|endoftext|>")
    assert gpt2_tok.decode(ids) == expected


def test_bos_is_added_as_encode_chat_adds_it(chatml_tok):
    tok = Tokenizer(chatml_tok.backend, bos_token="<|endoftext|>", eos_token="<|im_end|>", add_bos=True)
    ids, labels = tokenize_conversation(tok, CHAT)
    assert ids == tok.encode_chat(CHAT, add_generation_prompt=False) and ids[0] == tok.bos_id
    assert labels[0] == IGNORE_INDEX
    assert trained_runs(tok, ids, labels) == ["Hello there!<|im_end|>", "It is 4.<|im_end|>"]


def test_truncation_keeps_the_start(chatml_tok, tmp_path):
    full_ids, full_labels = tokenize_conversation(chatml_tok, CHAT)
    [example] = load_dataset(write(tmp_path / "d.jsonl", [{"messages": CHAT}]), chatml_tok, len(full_ids) - 3).examples
    assert (example.input_ids.tolist(), example.labels.tolist()) == (full_ids[:-3], full_labels[:-3])


def test_a_template_that_is_not_prefix_stable_is_an_error(chatml_tok, tmp_path):
    # The end marker only after the last message: a turn renders differently once the conversation goes on.
    tok = Tokenizer(chatml_tok.backend, eos_token="<|im_end|>", chat_template=(
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% else %}<|im_end|>{% endif %}"))
    with pytest.raises(GptsError, match="renders the conversation differently"):
        tokenize_conversation(tok, CHAT)
    with pytest.raises(GptsError) as e:
        load_dataset(write(tmp_path / "d.jsonl", [{"messages": CHAT}]), tok, 1000)
    assert "chat_template: 1 (line 1)" in e.value.problem


# -- formats --------------------------------------------------------------------------------------------------


def conversation(tok: Tokenizer, example) -> str:
    return tok.decode(example.input_ids)


def test_chat_format(chatml_tok, tmp_path):
    named = {"messages": [{**CHAT[0], "name": "rules"}, *CHAT[1:]]}  # "name" is accepted, not rendered
    events = Recorder()
    ds = load_dataset(write(tmp_path / "d.jsonl", [named] + [{"messages": CHAT}] * 11), chatml_tok, 1000,
                      report=events)
    assert (ds.format, len(ds), events.warnings, ds.labels, ds.task) == ("chat", 12, [], None, None)
    assert conversation(chatml_tok, ds.examples[0]) == chatml_tok.apply_chat_template(CHAT, False)
    assert ds.trained_tokens == 12 * ds.examples[0].trained_tokens > 0
    assert ds.tokens == 12 * len(ds.examples[0].input_ids)
    assert ds.lines == list(range(1, 13))


@pytest.mark.parametrize("row, messages", [
    ({"prompt": "2+2=", "completion": "4"},
     [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}]),
    ({"instruction": "Translate.", "input": "cat", "output": "chat", "text": "ignored"},
     [{"role": "user", "content": "Translate.\n\ncat"}, {"role": "assistant", "content": "chat"}]),
    ({"instruction": "Say hi.", "input": "", "output": "hi"},
     [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]),
    ({"instruction": "Say hi.", "output": "hi"},
     [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]),
])
def test_format_conversions(chatml_tok, tmp_path, row, messages):
    ds = load_dataset(write(tmp_path / "d.jsonl", [row] * 10), chatml_tok, 1000)
    assert ds.format == ("prompt_completion" if "prompt" in row else "alpaca")
    assert conversation(chatml_tok, ds.examples[0]) == chatml_tok.apply_chat_template(messages, False)
    assert trained_runs(chatml_tok, ds.examples[0].input_ids, ds.examples[0].labels) == [
        messages[-1]["content"] + "<|im_end|>"]


def test_classification_format(chatml_tok, tmp_path):
    rows = [{"text": f"review {i}", "label": ["pos", "neg", "meh"][i % 3]} for i in range(12)]
    ds = load_dataset(write(tmp_path / "d.jsonl", rows), chatml_tok, 1000, instructions="Rate it.")
    assert ds.format == "classification" and ds.labels == ["meh", "neg", "pos"]
    assert ds.task == ClassificationTask(["meh", "neg", "pos"], "Rate it.")
    expected = classification_messages("review 1", ["meh", "neg", "pos"], "Rate it.") + [
        {"role": "assistant", "content": "neg"}]
    assert conversation(chatml_tok, ds.examples[1]) == chatml_tok.apply_chat_template(expected, False)
    assert trained_runs(chatml_tok, ds.examples[1].input_ids, ds.examples[1].labels) == ["neg<|im_end|>"]
    # A given label set is kept as given; a label outside it is an error.
    given = load_dataset(write(tmp_path / "d.jsonl", rows), chatml_tok, 1000, labels=["pos", "neg", "meh", "other"])
    assert given.labels == ["pos", "neg", "meh", "other"]
    with pytest.raises(GptsError) as e:
        load_dataset(tmp_path / "d.jsonl", chatml_tok, 1000, labels=["pos", "neg"])
    assert errors_of(e)["unknown_label"].startswith("  unknown_label: 4 (lines 3, 6, 9, 12)")


def test_integer_labels_become_text(chatml_tok, tmp_path):
    events = Recorder()
    ds = load_dataset(write(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": i % 2} for i in range(10)]),
                      chatml_tok, 1000, report=events)
    assert ds.labels == ["0", "1"] and events.warnings == []
    assert trained_runs(chatml_tok, ds.examples[1].input_ids, ds.examples[1].labels) == ["1<|im_end|>"]
    single = Recorder()
    load_dataset(write(tmp_path / "d.jsonl", [{"text": f"t{i}", "label": 1} for i in range(10)]), chatml_tok, 1000,
                 report=single)
    assert single.warnings == [f"{tmp_path / 'd.jsonl'} has a single label, '1': the model can only learn to "
                               "always answer it."]


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    ("[1, 2]", {"data_type"}),
    ({"messages": []}, {"missing_messages_list"}),
    ({"conversation": [USER, ASSISTANT]}, {"missing_messages_list"}),
    ({"messages": [{"role": "user"}, ASSISTANT]}, {"message_missing_key", "missing_content"}),
    ({"messages": [{"content": "Hi"}, ASSISTANT]}, {"message_missing_key", "unrecognized_role"}),
    ({"messages": ["Hi", ASSISTANT]}, {"message_missing_key"}),
    ({"messages": [{**USER, "function_call": {}}, ASSISTANT]}, {"message_unrecognized_key"}),
    ({"messages": [{"role": "tool", "content": "42"}, ASSISTANT]}, {"unrecognized_role"}),
    ({"messages": [{"role": "user", "content": ""}, ASSISTANT]}, {"missing_content"}),
    ({"messages": [{"role": "user", "content": ["a", "b"]}, ASSISTANT]}, {"missing_content"}),
    ({"messages": [USER]}, {"example_missing_assistant_message"}),
    ({"messages": [USER, {**ASSISTANT, "weight": 2}]}, {"invalid_weight"}),
    ({"messages": [USER, {**ASSISTANT, "weight": True}]}, {"invalid_weight"}),
    ({"messages": [{**USER, "weight": 1}, ASSISTANT]}, {"invalid_weight"}),
    ('{"messages": [', {"invalid_json"}),
    ({"prompt": "a", "completion": "b"}, {"mixed_formats"}),
])
def test_each_chat_error_is_named_with_its_line(chatml_tok, tmp_path, line, expected):
    path = write(tmp_path / "d.jsonl", [GOOD, line, GOOD])
    with pytest.raises(GptsError) as e:
        load_dataset(path, chatml_tok, 1000)
    found = errors_of(e)
    assert set(found) == expected
    assert all(row.split(": ", 1)[1].startswith("1 (line 2)") for row in found.values())
    assert path in e.value.problem and "chat format" in e.value.problem and '{"messages": [' in e.value.fix


@pytest.mark.parametrize("first, line, expected", [
    ({"prompt": "a", "completion": "b"}, {"prompt": "a"}, "missing_field"),
    ({"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": 3}, "field_not_text"),
    ({"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": " "}, "empty_field"),
    ({"prompt": "a", "completion": "b"}, {"messages": [USER, ASSISTANT]}, "mixed_formats"),
    ({"instruction": "a", "output": "b"}, {"instruction": "a", "input": 5, "output": "b"}, "field_not_text"),
    ({"text": "a", "label": "x"}, {"text": "a", "label": True}, "field_not_text"),
    ({"text": "a", "label": "x"}, "7", "data_type"),
])
def test_other_format_errors(chatml_tok, tmp_path, first, line, expected):
    with pytest.raises(GptsError) as e:
        load_dataset(write(tmp_path / "d.jsonl", [first, line]), chatml_tok, 1000)
    assert list(errors_of(e)) == [expected] and f"  {expected}: 1 (line 2)" in e.value.problem


def test_all_errors_are_reported_together(chatml_tok, tmp_path):
    bad_role = {"messages": [{"role": "bot", "content": "x"}, ASSISTANT]}
    rows = [GOOD, bad_role, "not json", {"messages": [USER]}] + [bad_role] * 6 + [GOOD]
    with pytest.raises(GptsError) as e:
        load_dataset(write(tmp_path / "d.jsonl", rows), chatml_tok, 1000)
    found = errors_of(e)
    assert set(found) == {"unrecognized_role", "invalid_json", "example_missing_assistant_message"}
    assert found["unrecognized_role"].startswith("  unrecognized_role: 7 (lines 2, 5, 6, 7, 8 and 2 more): ")
    assert found["invalid_json"].startswith("  invalid_json: 1 (line 3)")
    assert found["example_missing_assistant_message"].startswith("  example_missing_assistant_message: 1 (line 4)")
    assert "has 9 errors" in e.value.problem and ERRORS["unrecognized_role"] in found["unrecognized_role"]


def test_invalid_utf8_is_an_error_on_its_line(chatml_tok, tmp_path):
    (tmp_path / "d.jsonl").write_bytes(json.dumps(GOOD).encode() + b'\n{"messages": "\xff"}\n')
    with pytest.raises(GptsError) as e:
        load_dataset(tmp_path / "d.jsonl", chatml_tok, 1000)
    assert "invalid_json: 1 (line 2): the line is not valid JSON; e.g. line 2: not valid UTF-8" in e.value.problem


@pytest.mark.parametrize("text, line", [("hello world\n", 1), ("\n\n[\n  {\"messages\": []}\n]\n", 3)])
def test_a_file_that_is_not_jsonl(chatml_tok, tmp_path, text, line):
    (tmp_path / "d.jsonl").write_text(text)
    with pytest.raises(GptsError, match=f"line {line}: not valid JSON"):
        load_dataset(tmp_path / "d.jsonl", chatml_tok, 1000)


def test_unknown_format(chatml_tok, tmp_path):
    with pytest.raises(GptsError, match=r"line 1: cannot tell the format .*'question', 'answer'") as e:
        load_dataset(write(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}]), chatml_tok, 1000)
    assert all(name in e.value.fix for name in ("chat", "prompt_completion", "alpaca", "classification"))


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_empty_file(chatml_tok, tmp_path, text):
    (tmp_path / "d.jsonl").write_text(text)
    with pytest.raises(GptsError, match="is empty"):
        load_dataset(tmp_path / "d.jsonl", chatml_tok, 1000)


def test_missing_file_and_bad_label_set(chatml_tok, tmp_path):
    with pytest.raises(GptsError, match="No such file"):
        load_dataset(tmp_path / "nope.jsonl", chatml_tok, 1000)
    path = write(tmp_path / "d.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(GptsError, match="distinct"):
        load_dataset(path, chatml_tok, 1000, labels=["x", "x"])


# -- warnings -------------------------------------------------------------------------------------------------


def test_warnings(chatml_tok, tmp_path):
    long = {"messages": [{"role": "user", "content": "Hello there! " * 40}, ASSISTANT]}
    unweighted = {"messages": [USER, {**ASSISTANT, "weight": 0}]}
    events = Recorder()
    ds = load_dataset(write(tmp_path / "d.jsonl", [GOOD, long, unweighted, long, GOOD]), chatml_tok, 60,
                      report=events)
    assert ds.lines == [1, 5]  # the long ones lost their reply, the weight-0 one has none
    assert all(len(e.input_ids) <= 60 for e in ds.examples)
    few, cut, left_out = events.warnings
    assert "only 2 examples" in few and "at least 10" in few
    assert "d.jsonl: 2 examples are longer than 60 tokens" in cut and "(lines 2, 4)" in cut
    assert "d.jsonl: 3 examples with nothing left to train on" in left_out and "(lines 2, 3, 4)" in left_out


def test_nothing_to_train_is_an_error(chatml_tok, tmp_path):
    path = write(tmp_path / "d.jsonl", [{"messages": [USER, {**ASSISTANT, "weight": 0}]}])
    with pytest.raises(GptsError, match="no example has a token to train on"):
        load_dataset(path, chatml_tok, 1000)


# -- split ----------------------------------------------------------------------------------------------------


def test_split_is_deterministic(chatml_tok, tmp_path):
    rows = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(50)]
    ds = load_dataset(write(tmp_path / "d.jsonl", rows), chatml_tok, 1000)
    train, val = ds.split(0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert sorted(train.lines + val.lines) == list(range(1, 51)) and val.lines == sorted(val.lines)
    again = ds.split(0.2, seed=1)
    assert (again[0].lines, again[1].lines) == (train.lines, val.lines)
    assert ds.split(0.2, seed=2)[1].lines != val.lines
    for line, (ids, _) in zip(val.lines, val.examples):  # examples stay with their lines; an example unpacks
        assert f"user\np{line - 1}<|im_end|>" in chatml_tok.decode(ids)
    assert len(ds.split(0.001)[1]) == 1 and len(ds.split(0)[1]) == 0
    with pytest.raises(GptsError):
        ds.split(1.0)
