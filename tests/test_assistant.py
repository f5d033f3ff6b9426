"""The prompt builder and citations (no model), then custom GPTs on the bundled SmolLM2-135M-Instruct: instructions,
examples and knowledge each change what the model answers."""

from datetime import datetime
from pathlib import Path

import pytest

from gpts import store
from gpts.assistant import Assistant, build_messages, cite, fit_prompt, search_query
from gpts.errors import GptsError
from gpts.spec import parse_spec
from gpts.store.retrieval import Passage

EXAMPLE = [{"role": "user", "content": "Can I bring my dog?"}, {"role": "assistant", "content": "On Fridays."}]


def passage(text: str, file: str = "handbook.md", chunk: int = 0) -> Passage:
    return Passage(file, chunk, text, None, (3, 4), len(text.split()), -1.0)


def words(messages) -> int:
    return sum(len(m["content"].split()) + 1 for m in messages)


# -- building the prompt -------------------------------------------------------------------------------------------


def test_messages_are_instructions_and_knowledge_then_examples_then_history():
    spec = parse_spec({"name": "HR", "instructions": "Help {{gpt_name}} users. Today is {{current_date}}.",
                       "examples": [EXAMPLE]})
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    messages = build_messages(spec, history, "How much leave?", [passage("27 days of leave.")],
                              now=datetime(2026, 11, 29))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    system = messages[0]["content"]
    assert system.startswith("Help HR users. Today is 2026-11-29.")
    assert "[1] handbook.md, lines 3-4\n27 days of leave." in system
    assert messages[1:3] == EXAMPLE and messages[3:5] == history and messages[-1]["content"] == "How much leave?"


def test_a_long_conversation_loses_its_oldest_turns_whole_never_the_instructions_or_examples():
    spec = parse_spec({"name": "HR", "instructions": "Be helpful and brief.", "examples": [EXAMPLE]})
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]
    full = words(build_messages(spec, history, "last question", []))
    prompt = fit_prompt(spec, history, "last question", [], words, budget=full - 25)
    assert prompt.dropped_turns == 2  # 11 words a message: one turn (22) is not room enough, two are
    kept = prompt.messages[3:-1]
    assert kept == history[4:]
    assert prompt.messages[0]["content"] == "Be helpful and brief." and prompt.messages[1:3] == EXAMPLE
    assert prompt.tokens <= full - 25


def test_passages_go_after_the_conversation_and_the_weakest_first():
    spec = parse_spec({"name": "HR", "instructions": "Be brief."})
    found = [passage("strong " * 20, chunk=0), passage("weak " * 20, chunk=1)]
    budget = words(build_messages(spec, [], "question", found[:1]))
    prompt = fit_prompt(spec, [{"role": "user", "content": "old"}, {"role": "assistant", "content": "reply"}],
                        "question", found, words, budget)
    assert (prompt.dropped_turns, prompt.dropped_passages) == (1, 1)
    assert [p.chunk for p in prompt.passages] == [0]


def test_instructions_that_cannot_fit_are_an_error_that_says_so():
    spec = parse_spec({"name": "HR", "instructions": "word " * 100})
    with pytest.raises(GptsError, match="instructions, examples and message take") as e:
        fit_prompt(spec, [], "question", [], words, budget=50)
    assert "Shorten the instructions" in e.value.fix
    with pytest.raises(GptsError, match="blank"):
        fit_prompt(spec, [], "   ", [], words, budget=500)


def test_a_short_follow_up_is_searched_with_the_question_before_it():
    history = [{"role": "user", "content": "How many days of paid leave do engineers get?"},
               {"role": "assistant", "content": "27."}]
    assert search_query(history, "And interns?") == "How many days of paid leave do engineers get?\nAnd interns?"
    assert search_query(history, "What time is the office cat fed?") == "What time is the office cat fed?"


def test_citations_are_the_passages_the_reply_draws_on_with_their_closest_sentence():
    found = [passage("Dogs are welcome on Fridays. Parking is free.", "dogs.md"),
             passage("The office cat is named Biscuit Thunderpaw. Biscuit is fed at 9 am.", "cat.md", 3)]
    citations = cite("The office cat is called Biscuit Thunderpaw.", found)
    assert [(c.file, c.chunk) for c in citations] == [("cat.md", 3)]
    assert citations[0].quote == "The office cat is named Biscuit Thunderpaw."
    assert citations[0].to_dict() == {"file": "cat.md", "chunk": 3, "lines": [3, 4],
                                      "quote": "The office cat is named Biscuit Thunderpaw."}
    assert cite("I do not know.", found) == []
    assert [c.file for c in cite("办公室的猫名叫饼干雷爪。", [passage("办公室的猫名叫饼干雷爪。饼干九点喂食。", "猫.md")])] == ["猫.md"]


# -- on the bundled model ------------------------------------------------------------------------------------------

HANDBOOK = ("# Larkspur Labs handbook\n\nEvery employee gets 27 days of paid leave a year.\n\n"
            "The Larkspur Labs office cat is named Biscuit Thunderpaw. Biscuit is fed at 9 am.\n\n"
            "Dogs are welcome on Fridays only.\n")
HANDBOOK_ZH = ("# 拉克斯珀实验室员工手册\n\n每位员工每年有二十七天带薪假期。\n\n"
               "拉克斯珀实验室的办公室猫名叫饼干雷爪。饼干每天早上九点喂食。\n\n只有星期五可以带狗来办公室。\n")


@pytest.fixture(scope="module")
def smollm2(bundled_gguf):
    from gpts.api import load

    return load("default")


def answer(lm, slug_or_spec, question: str, base_dir: Path | None = None) -> object:
    gpt = store.create_gpt(slug_or_spec, base_dir) if not isinstance(slug_or_spec, str) else store.get_gpt(slug_or_spec)
    return Assistant(gpt, lm).answer([], question, temperature=0, max_new_tokens=40)


def test_instructions_change_the_answer(smollm2):
    named = parse_spec({"name": "Named", "instructions": "Your name is Zorblax. When asked your name, answer that "
                                                         "your name is Zorblax."})
    plain = parse_spec({"name": "Plain"})
    assert "Zorblax" in answer(smollm2, named, "What is your name?").text
    assert "Zorblax" not in answer(smollm2, plain, "What is your name?").text


def test_examples_make_a_classifier_answer_with_its_labels(smollm2):
    instructions = "Classify the sentiment of the review the user sends. Answer with one word: positive or negative."
    examples = [[{"role": "user", "content": text}, {"role": "assistant", "content": label}] for text, label in [
        ("The battery lasts for days and the screen is gorgeous.", "positive"),
        ("It broke after a week and support never answered.", "negative"),
        ("Exactly what I needed, fast delivery too.", "positive"),
        ("Cheap plastic, it smells awful and the lid does not close.", "negative")]]
    held_out = ["I love this blender, it crushes ice in seconds.", "Terrible headphones, the left side died.",
                "The app crashes every time I open it.", "Arrived broken and the seller refused a refund."]
    taught = parse_spec({"name": "Sentiment", "instructions": instructions, "examples": examples})
    untaught = parse_spec({"name": "Untaught", "instructions": instructions})
    gpts = [store.create_gpt(s) for s in (taught, untaught)]
    replies = [[Assistant(g, smollm2).answer([], text, temperature=0, max_new_tokens=8).text.strip()
                for text in held_out] for g in gpts]
    assert all(r in ("positive", "negative") for r in replies[0]), replies[0]
    assert not all(r in ("positive", "negative") for r in replies[1]), replies[1]


@pytest.mark.parametrize("language", ["english", "chinese"])
def test_a_knowledge_gpt_answers_from_its_file_and_cites_it(smollm2, tmp_path, language):
    text, file, question, fact, instructions = {
        "english": (HANDBOOK, "handbook.md", "What is the name of the Larkspur Labs office cat?", "Biscuit",
                    "You answer questions from Larkspur Labs employees using the handbook."),
        "chinese": (HANDBOOK_ZH, "手册.md", "拉克斯珀实验室的办公室猫叫什么名字？", "饼干雷爪",
                    "你根据员工手册回答拉克斯珀实验室员工的问题。"),
    }[language]
    (tmp_path / file).write_text(text)
    knowing = parse_spec({"name": f"Knows {language}", "instructions": instructions, "knowledge": [file]})
    reply = answer(smollm2, knowing, question, tmp_path)
    assert fact in reply.text
    assert [c.file for c in reply.citations] == [file]
    assert fact in reply.citations[0].quote
    base = answer(smollm2, parse_spec({"name": f"Base {language}"}), question)
    assert fact not in base.text
