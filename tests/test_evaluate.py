"""Evaluation on tiny random models: perplexity against transformers, the scoring primitive against plain forward
passes, metrics against hand-computed values, each `gpts eval` command through the CLI, and bad input."""

import json
import math
import re
from fractions import Fraction
from pathlib import Path

import pytest
import torch

import gpts
from gpts.checkpoint import Checkpoint, save_native
from gpts.config import Config
from gpts.errors import GptsError
from gpts.evaluate import (choice, choice_tokens, classification_metrics, classify, generate_eval, match_label,
                           perplexity, read_examples, reply_tokens, score_continuations, sliding_windows)
from gpts.model import GPT
from gpts.task import ClassificationTask, classification_messages, read_task, write_task
from gpts.tokenizer import Tokenizer

from helpers import bench_module, run

CORPUS = ["the quick brown fox jumps over the lazy dog.", "hello world, hello gpts!", "a tiny model for tests,",
          "good movie", "bad movie", "great film, loved it", "awful film, hated it"] * 10
TEXT = " ".join(CORPUS[:20]) + "\nnaïve café ½ 中文\n"  # multi-byte characters: bytes != characters

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(arch: str, tok: Tokenizer, context: int = 256) -> GPT:
    torch.manual_seed(0)
    if arch == "llama":
        config = Config.from_name("llama-nano", vocab_size=tok.vocab_size, context_length=context, n_layer=2,
                                  n_embd=64, intermediate_size=96)
    else:
        config = Config(arch="gpt2", vocab_size=tok.vocab_size, context_length=context, n_layer=2, n_head=4, n_embd=64)
    model = GPT(config).eval()
    with torch.no_grad():  # far from uniform, so that what a token sees changes what it scores
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def save_model(tmp_path_factory, arch: str, add_bos: bool) -> Path:
    tok = Tokenizer.train_bpe(CORPUS, 400)
    tok.add_bos = add_bos
    model = tiny_model(arch, tok)
    out = tmp_path_factory.mktemp("models") / arch
    save_native(Checkpoint(model.config, model.state_dict(), tok, {}), out)
    return out


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory, "llama", add_bos=True)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_model(tmp_path_factory, "gpt2", add_bos=False)


@pytest.fixture(scope="module")
def lm(llama_dir):
    return gpts.load(str(llama_dir))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@torch.no_grad()
def loglik(model: GPT, prefix: list[int], cont: list[int], greedy: bool = False) -> float | tuple[float, bool]:
    """log P(cont | prefix) from one plain forward pass over the whole sequence (and whether cont is all argmax)."""
    logprobs = model(torch.tensor([(prefix + cont)[:-1]]))[0].log_softmax(-1)[len(prefix) - 1:]
    total = sum(logprobs[i, t].item() for i, t in enumerate(cont))
    return (total, logprobs.argmax(-1).tolist() == cont) if greedy else total


# -- perplexity -------------------------------------------------------------------------------------------------


def test_sliding_windows_score_each_token_at_most_once():
    assert sliding_windows(10, 4, 2) == [(0, 1, 4), (2, 4, 6), (4, 6, 8), (6, 8, 10)]
    assert sliding_windows(10, 4, 4) == [(0, 1, 4), (4, 5, 8), (8, 9, 10)]  # disjoint: window starts unscored
    for n, context, stride in [(2, 4, 1), (37, 8, 3), (100, 16, 15), (17, 16, 5)]:
        windows = sliding_windows(n, context, stride)
        scored = [t for _, split, end in windows for t in range(split, end)]
        assert scored == list(range(1, n))
        assert all(end - begin <= context and begin < split for begin, split, end in windows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("stride", [8, 32])
def test_perplexity_matches_transformers(arch, stride, request, tmp_path):
    """Hugging Face's documented loop, with transformers' own model and tokenizer, on the same windows."""
    transformers = pytest.importorskip("transformers")
    from gpts.registry import read_checkpoint
    from gpts.weights.hf import write_hf_dir

    model_dir = request.getfixturevalue(f"{arch}_dir")
    hf_dir = write_hf_dir(read_checkpoint(str(model_dir)), tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = transformers.AutoTokenizer.from_pretrained(hf_dir)(TEXT, return_tensors="pt").input_ids
    context = 32
    nll_sum, n_tokens = bench_module("perplexity").reference_nll(hf, ids, context, stride)

    result = perplexity(gpts.load(str(model_dir)), TEXT, context=context, stride=stride)
    assert result.tokens == n_tokens
    assert result.nll_sum == pytest.approx(nll_sum, rel=1e-3)
    assert result.perplexity == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-3)
    assert result.bits_per_byte == pytest.approx(nll_sum / math.log(2) / len(TEXT.encode("utf-8")), rel=1e-3)


def test_perplexity_depends_on_the_windows_and_sums_texts(lm):
    short, long = (perplexity(lm, TEXT, context=32, stride=s).nll for s in (32, 8))
    assert abs(short - long) > 1e-3  # more context per scored token: the windows matter
    both = perplexity(lm, [TEXT, TEXT[:200]], context=32, stride=8)
    parts = [perplexity(lm, t, context=32, stride=8) for t in (TEXT, TEXT[:200])]
    assert [p.tokens for p in both.parts] == [p.tokens for p in parts]
    assert both.nll_sum == pytest.approx(sum(p.nll_sum for p in parts), rel=1e-6)
    assert both.bytes == sum(p.bytes for p in parts)
    with pytest.raises(GptsError, match="--stride 40"):
        perplexity(lm, TEXT, context=32, stride=40)
    with pytest.raises(GptsError, match="--context 1000"):
        perplexity(lm, TEXT, context=1000)


# -- the scoring primitive --------------------------------------------------------------------------------------


def test_batched_scores_equal_one_by_one_and_plain_forward(lm):
    ids = lm.tokenizer.encode(TEXT * 3)
    groups = [(ids[:5], [ids[5:9], ids[5:6], ids[30:33]]), (ids[:17], [ids[17:40]]), (ids[3:4], [ids[4:60], ids[9:10]]),
              (ids[:200], [ids[200:203]]), (ids[:3], [ids[3:150]])]  # these two together would overflow the cache
    assert len(ids) > 203 and 200 + 147 - 1 > lm.config.context_length
    greedy_cont = [lm.gpt(torch.tensor([ids[:40]]))[0, -1].argmax().item()]  # a continuation that is greedy
    groups.append((ids[:40], [greedy_cont, ids[40:41]]))
    batched = score_continuations(lm.gpt, groups, greedy=True)
    alone = score_continuations(lm.gpt, groups, batch_tokens=1)  # one group per batch: no padding
    for group, got, one in zip(groups, batched, alone):
        expected = [loglik(lm.gpt, list(group[0]), list(c), greedy=True) for c in group[1]]
        assert [g for _, g in got] == [g for _, g in expected]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], abs=1e-3, rel=1e-5)
        assert one == pytest.approx([s for s, _ in expected], abs=1e-3, rel=1e-5)
    assert batched[-1][0][1]  # the greedy continuation is found greedy


def test_a_prefix_too_long_loses_its_start(lm):
    ids = lm.tokenizer.encode(TEXT * 6)
    context = lm.config.context_length
    (score,), = score_continuations(lm.gpt, [(ids[:300], [ids[300:310]])])
    assert score == pytest.approx(loglik(lm.gpt, ids[300 - (context - 9):300], ids[300:310]), abs=1e-3)
    with pytest.raises(GptsError, match="does not fit"):
        score_continuations(lm.gpt, [(ids[:1], [ids[1:context + 2]])])


# -- classification ---------------------------------------------------------------------------------------------


def test_metrics_against_hand_computed_values():
    y_true = ["a", "a", "a", "b", "b", "c", "c", "c"]
    y_pred = ["a", "a", "b", "b", None, "c", "a", "a"]  # None: a reply that named no label
    m = classification_metrics(y_true, y_pred, ["a", "b", "c", "d"])
    F = Fraction
    # a: tp 2, predicted 4, true 3; b: tp 1, predicted 2, true 2; c: tp 1, predicted 1, true 3; d: nothing
    expected = {"a": (F(2, 4), F(2, 3), F(4, 7), 3), "b": (F(1, 2), F(1, 2), F(1, 2), 2),
                "c": (F(1, 1), F(1, 3), F(1, 2), 3), "d": (0, 0, 0, 0)}
    for label, (p, r, f1, support) in expected.items():
        assert m["per_class"][label] == pytest.approx({"precision": p, "recall": r, "f1": f1, "support": support})
    assert m["accuracy"] == pytest.approx(4 / 8)
    assert m["macro"] == pytest.approx({"precision": (F(1, 2) + F(1, 2) + 1) / 4,
                                        "recall": (F(2, 3) + F(1, 2) + F(1, 3)) / 4,
                                        "f1": (F(4, 7) + F(1, 2) + F(1, 2)) / 4})
    # micro: tp 4, predicted 7 (the unmatched reply predicts nothing), true 8
    assert m["micro"] == pytest.approx({"precision": 4 / 7, "recall": 4 / 8, "f1": 8 / 15})
    assert m["weighted"] == pytest.approx({"precision": (3 * F(1, 2) + 2 * F(1, 2) + 3) / 8,
                                           "recall": (2 + 1 + 1) / 8,
                                           "f1": (3 * F(4, 7) + 2 * F(1, 2) + 3 * F(1, 2)) / 8})
    assert m["confusion_matrix"] == {"labels": ["a", "b", "c", "d"],
                                     "matrix": [[2, 1, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 0, 0, 0]]}
    assert m["unmatched"] == 1 and m["n"] == 8


def test_metrics_against_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    import random

    rng = random.Random(0)
    labels = ["x", "y", "z", "w"]
    y_true = [rng.choice(labels[:3]) for _ in range(60)]
    y_pred = [rng.choice(labels + ["?"]) for _ in range(60)]
    m = classification_metrics(y_true, y_pred, labels)
    assert m["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    for average in ("macro", "micro", "weighted"):
        p, r, f1, _ = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=average,
                                                              zero_division=0)
        assert [m[average][k] for k in ("precision", "recall", "f1")] == pytest.approx([p, r, f1])
    assert m["confusion_matrix"]["matrix"] == metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist()


def test_match_label():
    labels = ["pos", "positive", "negative", "Neutral"]
    assert match_label("  Positive \n", labels) == "positive"
    assert match_label("neutral", labels) == "Neutral"
    assert match_label("negative, clearly", labels) == "negative"
    assert match_label("positively so", labels) == "positive"  # the longest label it starts with
    assert match_label("I think it is negative, not positive", labels) == "negative"  # the first mentioned
    assert match_label("no idea", labels) is None


def test_the_prompt_and_the_reply_tokens(lm):
    messages = classification_messages("great film", ["neg", "pos"], "Is the review positive?")
    assert [m["role"] for m in messages] == ["system", "user"] and messages[1]["content"] == "great film"
    assert "Is the review positive?" in messages[0]["content"] and "neg, pos" in messages[0]["content"]
    assert classification_messages("x", ["a"])[0]["content"].startswith("Classify the text.")
    prompt, (neg, pos) = reply_tokens(lm.tokenizer, messages, ["neg", "pos"])
    assert prompt == lm.tokenizer.encode_chat(messages)
    full = lm.tokenizer.encode_chat([*messages, {"role": "assistant", "content": "pos"}], add_generation_prompt=False)
    assert full[:len(prompt) + len(pos)] == prompt + pos and lm.tokenizer.decode(pos).startswith("pos")


def test_classify_predicts_the_most_likely_reply(lm):
    examples = [{"text": "good movie", "label": "pos"}, {"text": "awful film, hated it", "label": "neg"},
                {"text": "hello world", "label": 1}]
    result = classify(lm, examples, labels=["neg", "pos", "1"])
    for ex, scores, prediction in zip(examples, result.scores, result.predictions):
        prompt, replies = reply_tokens(lm.tokenizer, classification_messages(ex["text"], result.labels), result.labels)
        expected = [loglik(lm.gpt, prompt, r) for r in replies]
        assert scores == pytest.approx(expected, abs=1e-3)
        assert prediction == result.labels[expected.index(max(expected))]
    assert result.metrics["accuracy"] == sum(p == str(e["label"]) for p, e in zip(result.predictions, examples)) / 3


def test_task_file_round_trip_and_defaults(lm, llama_dir, tmp_path):
    assert read_task(str(llama_dir)) is None
    model_dir = tmp_path / "tuned"
    save_native(Checkpoint(lm.config, lm.gpt.state_dict(), lm.tokenizer, {}), model_dir)
    write_task(model_dir, ClassificationTask(["neg", "pos", "other"], "Is the review positive?"))
    assert read_task(str(model_dir)) == ClassificationTask(["neg", "pos", "other"], "Is the review positive?")
    tuned = gpts.load(str(model_dir))
    result = classify(tuned, [{"text": "good movie", "label": "pos"}])
    assert result.labels == ["neg", "pos", "other"]  # from task.json, not from the examples
    explicit = classify(tuned, [{"text": "good movie", "label": "pos"}], labels=["neg", "pos", "other"],
                        instructions="Is the review positive?")
    assert explicit.scores == result.scores  # the task's instructions were used
    (model_dir / "task.json").write_text('{"labels": "neg"}')
    with pytest.raises(GptsError, match="task.json is malformed"):
        read_task(model_dir)


def test_cli_classify(llama_dir, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "reviews.jsonl", [{"text": t, "label": l} for t, l in
                                                     [("good movie", "pos"), ("bad movie", "neg"),
                                                      ("great film, loved it", "pos"), ("awful film", "neg"),
                                                      ("hello", "neutral")]])
    png = tmp_path / "plots" / "confusion.png"
    code, out, err = run(monkeypatch, capsys, "eval", "classify", str(data), "--model", str(llama_dir), "--json",
                         "--confusion-png", str(png))
    assert code == 0, err
    m = json.loads(out)
    assert {"accuracy", "macro", "micro", "weighted", "per_class", "confusion_matrix", "n"} <= set(m)
    assert m["confusion_matrix"]["labels"] == ["neg", "neutral", "pos"] == list(m["per_class"])
    assert set(m["macro"]) == {"precision", "recall", "f1"}
    assert set(m["per_class"]["pos"]) == {"precision", "recall", "f1", "support"}
    matrix = m["confusion_matrix"]["matrix"]
    assert m["n"] == 5 == sum(map(sum, matrix))
    assert m["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(png.parent.glob(".*tmp"))

    code, out, _ = run(monkeypatch, capsys, "eval", "classify", str(data), "--model", str(llama_dir),
                       "--labels", "pos,neg,neutral", "--method", "generate")
    assert code == 0
    assert "accuracy" in out and "confusion matrix" in out and "weighted" in out and "naming no label" in out


# -- multiple choice --------------------------------------------------------------------------------------------


def test_choice_tokens_follow_the_harness(lm):
    tok = lm.tokenizer
    prefix, (cont,) = choice_tokens(tok, "hello world, ", ["hello"])  # the trailing space moves to the continuation
    assert prefix == tok.encode("hello world,") and prefix + cont == tok.encode("hello world, hello")
    prefix, (cont,) = choice_tokens(tok, "", [" good movie"])
    assert prefix == [tok.bos_id] and cont == tok.encode(" good movie", add_special=False)


def test_choice_acc_and_acc_norm(lm):
    # One short choice and one long one: per token the model is about as unsure, so the short one has the higher
    # total log-likelihood (acc) while the long one has the higher log-likelihood per character (acc_norm).
    examples = [{"context": "the quick brown fox", "choices": ["x", "jumps over the lazy dog. hello world, hello gpts"],
                 "answer": 1}, {"context": "hello world,", "choices": ["hello gpts!", "a", "bad movie"], "answer": 0}]
    result = choice(lm, examples)
    for ex, lls in zip(examples, result.logliks):
        prefix, conts = choice_tokens(lm.tokenizer, ex["context"], [" " + c for c in ex["choices"]])
        assert lls == pytest.approx([loglik(lm.gpt, prefix, c) for c in conts], abs=1e-3)
    first = result.logliks[0]
    assert first[0] > first[1] and first[0] / 1 < first[1] / len(examples[0]["choices"][1])
    assert result.predictions[0] == 0 and result.predictions_norm[0] == 1
    norm = [max(range(len(ll)), key=lambda i: ll[i] / len(ex["choices"][i]))
            for ll, ex in zip(result.logliks, examples)]
    assert result.predictions_norm == norm
    assert result.acc == sum(p == e["answer"] for p, e in zip(result.predictions, examples)) / 2
    assert result.acc_norm == sum(p == e["answer"] for p, e in zip(norm, examples)) / 2


def test_cli_choice(gpt2_dir, tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "mc.jsonl", [{"context": "the quick brown", "choices": ["fox", "dog"], "answer": 0},
                                               {"context": "hello", "choices": ["world", "film", "gpts"], "answer": 2}])
    code, out, err = run(monkeypatch, capsys, "eval", "choice", str(data), "--model", str(gpt2_dir), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"model", "acc", "acc_norm", "n"} and result["n"] == 2
    assert result["acc"] in (0, 0.5, 1) and result["acc_norm"] in (0, 0.5, 1)
    code, out, _ = run(monkeypatch, capsys, "eval", "choice", str(data), "--model", str(gpt2_dir))
    assert code == 0 and "acc_norm" in out


# -- generation -------------------------------------------------------------------------------------------------


def test_generate_eval_scores_exact_and_contains(lm, llama_dir, tmp_path, monkeypatch, capsys):
    prompts = ["the quick brown", "hello world"]
    replies = [c.text for c in lm.generate(prompts, temperature=0.0, max_new_tokens=6)]
    assert all(r.strip() for r in replies)
    examples = [{"prompt": prompts[0], "answer": f" {replies[0]} "},  # exact after strip
                {"prompt": prompts[1], "answer": replies[1].strip()[:2]}]  # contained only (unless 2 characters)
    result = generate_eval(lm, examples, max_new_tokens=6, chat=False)
    assert result.outputs == replies and not result.chat
    assert result.exact_match == (1 + (replies[1].strip() == replies[1].strip()[:2])) / 2 and result.contains == 1.0

    data = write_jsonl(tmp_path / "qa.jsonl", examples + [{"prompt": "a tiny", "answer": "zzz not it"}])
    code, out, err = run(monkeypatch, capsys, "eval", "generate", str(data), "--model", str(llama_dir),
                         "--max-new-tokens", "6", "--no-chat", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["n"] == 3 and got["contains"] == pytest.approx(2 / 3) and got["outputs"][:2] == replies
    code, out, _ = run(monkeypatch, capsys, "eval", "generate", str(data), "--model", str(llama_dir),
                       "--max-new-tokens", "4", "--chat")
    assert code == 0 and "exact_match" in out and "(chat)" in out


# -- the perplexity command and bad input -----------------------------------------------------------------------


def test_cli_perplexity(llama_dir, tmp_path, monkeypatch, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(TEXT)
    b.write_text(TEXT[:150])
    code, out, err = run(monkeypatch, capsys, "eval", "perplexity", str(a), str(b), "--model", str(llama_dir),
                         "--context", "32", "--stride", "16", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert {"nll", "perplexity", "bits_per_byte", "tokens", "files", "context", "stride"} <= set(result)
    assert [f["file"] for f in result["files"]] == [str(a), str(b)]
    assert result["tokens"] == sum(f["tokens"] for f in result["files"])
    assert result["perplexity"] == pytest.approx(math.exp(result["nll"]))
    code, out, _ = run(monkeypatch, capsys, "eval", "perplexity", str(a), "--model", str(llama_dir), "--context", "32")
    assert code == 0 and "bits/byte" in out and "stride 16" in out


def test_read_examples(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a\u2028b", "label": "x"}\n\n{"text": "c", "label": 2}\n')
    assert read_examples(path, {"text": str, "label": (str, int)}) == [(1, {"text": "a\u2028b", "label": "x"}),
                                                                   (3, {"text": "c", "label": 2})]


@pytest.mark.parametrize("command, lines, options, match", [
    ("classify", ['{"text": "a", "label": "x"}', "text,label"], [], r"line 2: not valid JSON"),
    ("classify", ['{"text": "a", "label": "x"}', '{"text": "b"}'], [], r"line 2: the field 'label' is missing"),
    ("classify", ['{"text": "a", "label": "x"}', '["a", "x"]'], [], r"line 2: expected a JSON object"),
    ("classify", ['{"text": "a", "label": "x"}', '{"text": "b", "label": "pos"}'], ["--labels", "x,y"],
     r"line 2: the label 'pos' is not one of the labels \(x, y\)"),
    ("classify", ['{"text": "a", "label": true}'], [], r"line 1: the field 'label' is true, not text or a whole"),
    ("classify", ["", " "], [], r"holds no examples"),
    ("choice", ['{"context": "a", "choices": ["b", "c"], "answer": 2}'], [], r"line 1: \"answer\" is 2"),
    ("choice", ['{"context": "a", "choices": ["b"], "answer": 0}'], [], r"line 1: \"choices\" must be"),
    ("generate", ['{"prompt": "a", "answer": 3}'], [], r"line 1: the field 'answer' is 3, not text"),
])
def test_bad_input_is_a_clear_error(command, lines, options, match, llama_dir, tmp_path, monkeypatch, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, out, err = run(monkeypatch, capsys, "eval", command, str(data), "--model", str(llama_dir), *options)
    assert code == 1 and not out
    assert err.startswith("Error:") and "Traceback" not in err
    assert re.search(match, " ".join(err.split())), err


def test_missing_file_and_bad_options(llama_dir, tmp_path, monkeypatch, capsys):
    for args in (["classify", str(tmp_path / "nope.jsonl")], ["perplexity", str(tmp_path / "nope.txt")],
                 ["classify", str(tmp_path), "--labels", "a,a"], ["classify", str(tmp_path), "--method", "vote"]):
        code, _, err = run(monkeypatch, capsys, "eval", *args, "--model", str(llama_dir))
        assert code == 1 and err.startswith("Error:") and "Traceback" not in err, err
