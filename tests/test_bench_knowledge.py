"""bench/knowledge.py (issue 9): its made-up world is deterministic and fair (every answer in its own fact and in
no other), and the store finds the right chunk for its questions. No model generation here."""

import json
import os
import re

from helpers import bench_module

kb = bench_module("knowledge")


def test_the_same_seed_builds_the_same_knowledge_and_another_seed_another():
    first, again, other = kb.build_knowledge(3, 60), kb.build_knowledge(3, 60), kb.build_knowledge(4, 60)
    assert first.files == again.files and first.questions == again.questions and first.facts == again.facts
    assert first.files != other.files and first.questions != other.questions
    assert kb.build_corpus(5, 0.05).files == kb.build_corpus(5, 0.05).files


def test_questions_are_in_both_languages_and_every_fact_is_in_its_file_with_its_answer():
    knowledge = kb.build_knowledge(0, 120, files_per_language=4)
    assert len(knowledge.questions) == 120
    languages = {q.language for q in knowledge.questions}
    assert languages == {"en", "zh"}
    assert {q.shape for q in knowledge.questions} == set(kb.SHAPES)
    assert len(knowledge.files) == 8 and len(knowledge.facts) == 120 * 4  # each asked fact has 3 distractors
    for q in knowledge.questions:
        assert q.fact in knowledge.files[q.file]
        assert kb.contains_answer(q.fact, q.answer), q
        han = re.compile("[\u4e00-\u9fff]")  # Chinese facts and questions are in Chinese, English ones in English
        assert bool(han.search(q.fact)) == bool(han.search(q.question)) == (q.language == "zh") == (
            q.file.startswith("knowledge/zh/"))
    assert len({q.fact for q in knowledge.questions}) == len(knowledge.questions)


def test_no_answer_is_in_any_fact_but_its_own():
    knowledge = kb.build_knowledge(0, 300)
    assert kb.answer_clashes(knowledge) == []
    # The check itself finds a clash: the answer of one question written into another fact.
    q = knowledge.questions[0]
    knowledge.facts.append(f"A distractor that mentions {q.answer} too.")
    assert [(c.question, f) for c, f in kb.answer_clashes(knowledge)] == [(q.question, knowledge.facts[-1])]


def test_distractors_share_the_names_of_the_fact_they_are_made_for():
    knowledge = kb.build_knowledge(1, 40)
    bridge = next(q for q in knowledge.questions if q.shape == "bridge" and q.language == "en")
    landmark = bridge.fact.split(" bridge in ")[0].removeprefix("The ")
    assert sum(f.startswith(f"The {landmark} bridge in ") for f in knowledge.facts) >= 2


def test_answers_are_matched_as_whole_values_after_normalizing():
    assert kb.contains_answer("The village has 4817 inhabitants.", "4,817")
    assert kb.contains_answer("It HAS  4,817\ninhabitants", "4,817")
    assert not kb.contains_answer("about 14,817 people", "4,817")
    assert not kb.contains_answer("It costs 48.75 crowns", "48.7")
    assert kb.contains_answer("It sells for 48.75 crowns.", "48.75")
    assert kb.contains_answer("由市长艾达·伦斯克主持开通。", "艾达·伦斯克")
    assert kb.contains_answer("The mayor was edda lunsk", "Edda Lunsk")
    assert kb.contains_answer("It was opened on June 22, 1864 by", "22 June 1864")
    assert not kb.contains_answer("It was opened on June 22, 1865 by", "22 June 1864")


def test_the_answer_sample_is_seeded_and_spread_over_both_languages():
    questions = kb.build_knowledge(0, 100).questions
    sample = kb.answer_sample(questions, 21, 7)
    assert sample == kb.answer_sample(questions, 21, 7)
    assert [q.language for q in sample].count("en") == 11 and [q.language for q in sample].count("zh") == 10


def test_recall_through_the_store_is_high(bundled_gguf, tmp_path):
    from gpts.store import connect

    knowledge = kb.build_knowledge(0, 60, files_per_language=3)
    gpt, _ = kb.create(knowledge, tmp_path, "Varn valley")
    assert gpt.spec.retrieval.chunk_tokens == 800 and gpt.spec.retrieval.top_k == 5  # the spec's defaults
    assert {f.name for f in gpt.knowledge} == set(knowledge.files)
    result = kb.recall(connect(), gpt, knowledge.questions)
    for language in ("en", "zh", "all"):
        assert result[language]["recall@5"] >= 0.95, result
    assert result["all"]["recall@1"] >= 0.8, result


def test_the_quick_run_prints_its_figures(bundled_gguf, capsys, gpts_home):
    results = kb.main(["--quick", "--ingest-mb", "0.05", "--json"])
    assert json.loads(capsys.readouterr().out)["recall"] == results["recall"]
    assert results["recall"]["default"]["all"]["recall@5"] >= 0.95
    assert results["ingestion"]["chunks"] > 0
    # the ingestion GPT shares its store with the recall GPT; the second latency store holds one GPT
    assert [lat["chunks"] == lat["chunks_in_store"] for lat in results["latency"]] == [False, True]
    assert os.environ["GPTS_HOME"] == str(gpts_home)  # put back after the run's own temporary home
    printed = kb.table(results)
    assert "| recall@5 [800/400/5" in printed and "ingestion: create_gpt" in printed and "retrieve() at" in printed
