"""The lm-evaluation-harness adapter: the harness's own task machinery (tasks defined here on local JSON files) on a
tiny random gpts model, checked against gpts' own evaluation and against plain forward passes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval", reason="the optional lm-eval extra (pip install 'gpts[lm-eval]')")

import gpts  # noqa: E402
from gpts.checkpoint import Checkpoint, save_native  # noqa: E402
from gpts.config import Config  # noqa: E402
from gpts.errors import GptsError  # noqa: E402
from gpts.evaluate import choice  # noqa: E402
from gpts.lm_eval_adapter import GptsLM  # noqa: E402
from gpts.model import GPT  # noqa: E402
from gpts.tokenizer import Tokenizer  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from lm_eval.utils import get_rolling_token_windows  # noqa: E402

CORPUS = ["the quick brown fox jumps over the lazy dog.", "hello world, hello gpts!", "a tiny model for tests.",
          "the cat sat on the mat.", "a dog ran in the park."] * 10
QUESTIONS = [  # twice over: equal contexts from different documents share a prefix pass
    {"context": "The quick brown fox", "choices": ["jumps over the lazy dog.", "sat on the mat.", "hello world"],
     "answer": 0},
    {"context": "The cat sat", "choices": ["on the mat.", "in the park.", "for tests."], "answer": 0},
    {"context": "A dog ran", "choices": ["over the fox.", "in the park."], "answer": 1},
    {"context": "Hello", "choices": ["world, hello gpts!", "dog."], "answer": 0},
    {"context": "A tiny model", "choices": ["jumps.", "for tests.", "on the mat.", "the lazy cat"], "answer": 1},
    {"context": "The lazy dog\n", "choices": ["ran.", "sat."], "answer": 1},  # trailing whitespace moves over
] * 2
PROMPTS = [{"prompt": "The quick brown", "answer": "fox"}, {"prompt": "Hello world,", "answer": "hello"},
           {"prompt": "A dog", "answer": "ran"}]
DOCS = [{"text": " ".join(CORPUS[:12])}, {"text": "the cat sat."}]  # the first is longer than the context
CONTEXT = 64

# Each task file: "task: NAME", then TASK_SOURCE (the local JSONL), then these lines.
TASK_SOURCE = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
"""
MC_TASK = """output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN_TASK = """output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["."]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""
ROLLING_TASK = """output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
"""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True, scope="module")
def offline():
    """The datasets library reads the local JSON files without asking the hub (module scope: before `results`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def save_tiny_model(out: Path, add_bos: bool = False) -> Path:
    tok = Tokenizer.train_bpe(CORPUS, 300)
    tok.add_bos = add_bos
    torch.manual_seed(0)
    config = Config.from_name("llama-nano", vocab_size=tok.vocab_size, context_length=CONTEXT, n_layer=2, n_embd=64,
                              intermediate_size=96)
    model = GPT(config)
    with torch.no_grad():  # far from uniform, so that choices score clearly apart
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    save_native(Checkpoint(config, model.state_dict(), tok, {}), out)
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tasks")
    for name, template, rows in (("mc", MC_TASK, QUESTIONS), ("gen", GEN_TASK, PROMPTS),
                                 ("rolling", ROLLING_TASK, DOCS)):
        data = out / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        source = TASK_SOURCE.format(data=data, cache=out / "cache")  # the cache in tmp, not in ~/.cache
        (out / f"{name}.yaml").write_text(f"task: gpts_{name}\n{source}{template.format()}")
    return out


@pytest.fixture(scope="module")
def lm(model_dir) -> GptsLM:
    return GptsLM(model=str(model_dir), device="cpu")


def evaluate(model_dir: Path, tasks_dir: Path, tasks: list[str]) -> dict:
    """A harness run, the model found by name in the harness's registry. Only our tasks are indexed: the harness's
    thousands of built-in task files take 5-15 s to index."""
    return lm_eval.simple_evaluate(model="gpts", model_args=f"model={model_dir}", tasks=tasks, log_samples=True,
                                   bootstrap_iters=0,
                                   task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False))


@pytest.fixture(scope="module")
def results(model_dir, tasks_dir) -> dict:
    return evaluate(model_dir, tasks_dir, ["gpts_mc", "gpts_gen", "gpts_rolling"])


def logprobs(model: GPT, ids: list[int], n: int) -> tuple[float, bool]:
    """One plain forward pass over ids[:-1]: the summed log-probability of the last n tokens of `ids` given the
    tokens before them, and whether each of them is the argmax."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[:-1]]))[0, -n:].float()
    targets = torch.tensor(ids[-n:])
    logprob = logits.log_softmax(-1).gather(-1, targets[:, None]).sum().item()
    return logprob, bool((logits.argmax(-1) == targets).all())


def assert_same_as_choice(results: dict, loaded: gpts.LoadedModel) -> None:
    ours = choice(loaded, QUESTIONS)
    metrics = results["results"]["gpts_mc"]
    assert metrics["acc,none"] == pytest.approx(ours.acc)
    assert metrics["acc_norm,none"] == pytest.approx(ours.acc_norm)
    assert 0 < ours.acc < 1  # the check could fail either way
    samples = sorted(results["samples"]["gpts_mc"], key=lambda s: s["doc_id"])
    harness = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    assert harness == [pytest.approx(ll, abs=1e-4) for ll in ours.logliks]


def test_multiple_choice_acc_equals_gpts_choice(results, lm):
    assert_same_as_choice(results, lm.loaded)


def test_a_model_that_adds_bos_scores_as_gpts_choice(tasks_dir, tmp_path):
    """Llama 2 style: every context starts with BOS, in the harness's split as in choice()."""
    model_dir = save_tiny_model(tmp_path / "bos", add_bos=True)
    assert_same_as_choice(evaluate(model_dir, tasks_dir, ["gpts_mc"]), gpts.load(str(model_dir)))


def test_loglikelihood_equals_a_forward_pass(results, lm):
    """Every (context, continuation) the harness asked for: the context and continuation split as its TemplateLM
    splits them (trailing whitespace moves to the continuation), scored by one forward pass."""
    tok = lm.tokenizer
    for sample in results["samples"]["gpts_mc"]:
        for (context, continuation), ((logprob, greedy),) in zip(sample["arguments"], sample["resps"]):
            stripped = context.rstrip()
            whole = tok.encode(stripped + context[len(stripped):] + continuation)
            n = len(whole) - len(tok.encode(stripped))
            expected, expected_greedy = logprobs(lm.gpt, whole, n)
            assert float(logprob) == pytest.approx(expected, abs=1e-4)
            assert greedy == expected_greedy


def test_is_greedy_and_empty_context(lm):
    """is_greedy is true for the model's own greedy continuation and false once one token differs; an empty context
    is the BOS token."""
    context = lm.tok_encode("The quick brown")
    greedy = lm.loaded.generate([context], temperature=0.0, max_new_tokens=4, ignore_eos=True)[0].token_ids
    other = greedy[:-1] + [(greedy[-1] + 1) % lm.gpt.config.vocab_size]
    scored = lm._loglikelihood_tokens([(("", ""), context, greedy), (("", ""), context, other)], disable_tqdm=True)
    assert [g for _, g in scored] == [True, False]
    assert scored[0][0] == pytest.approx(logprobs(lm.gpt, context + greedy, 4)[0], abs=1e-4)

    request = Instance("loglikelihood", {}, ("", "the cat sat."), 0)
    [(logprob, _)] = lm.loglikelihood([request], disable_tqdm=True)
    expected = logprobs(lm.gpt, [lm.tokenizer.bos_id] + lm.tokenizer.encode("the cat sat.", add_special=False),
                        len(lm.tokenizer.encode("the cat sat.", add_special=False)))[0]
    assert logprob == pytest.approx(expected, abs=1e-4)


def test_rolling_loglikelihood_equals_forward_passes_over_the_harness_windows(results, lm):
    samples = sorted(results["samples"]["gpts_rolling"], key=lambda s: s["doc_id"])
    assert len(lm.tok_encode(DOCS[0]["text"])) > 2 * CONTEXT  # three windows at least
    for sample, doc in zip(samples, DOCS):
        windows = get_rolling_token_windows(lm.tok_encode(doc["text"]), lm.prefix_token_id, CONTEXT, 1)
        expected = sum(logprobs(lm.gpt, inputs + predicted[-1:], len(predicted))[0] for inputs, predicted in windows)
        assert float(sample["resps"][0][0]) == pytest.approx(expected, abs=1e-3)


def test_generate_until_is_greedy_gpts_generation_cut_at_until(results, lm):
    samples = sorted(results["samples"]["gpts_gen"], key=lambda s: s["doc_id"])
    expected = [c.text for c in lm.loaded.generate([p["prompt"] for p in PROMPTS], temperature=0.0, max_new_tokens=6,
                                                   stop=["."])]
    assert [s["resps"][0][0] for s in samples] == expected
    assert all("." not in text for text in expected)
    assert "exact_match,none" in results["results"]["gpts_gen"]


def test_bad_arguments_are_gpts_errors(model_dir, lm):
    with pytest.raises(GptsError, match="modle"):
        GptsLM(modle=str(model_dir))
    request = Instance("generate_until", {}, ("Hello", {"until": ["."], "beams": 4}), 0)
    with pytest.raises(GptsError, match="beams"):
        lm.generate_until([request], disable_tqdm=True)


@pytest.mark.slow
def test_the_cli_wrapper_runs_a_task(model_dir, tasks_dir, tmp_path):
    """`python -m gpts.lm_eval_adapter` is lm_eval's CLI with the gpts model registered; its acc is choice()'s, and
    a bad model reference is a short error. Slow: each run indexes the harness's built-in tasks."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "gpts.lm_eval_adapter", "--model", "gpts", "--model_args",
                           f"model={model_dir}", "--tasks", "gpts_mc", "--include_path", str(tasks_dir),
                           "--output_path", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [written] = out.rglob("results_*.json")
    acc = json.loads(written.read_text())["results"]["gpts_mc"]["acc,none"]
    assert acc == pytest.approx(choice(gpts.load(str(model_dir)), QUESTIONS).acc)
    assert "gpts_mc" in proc.stdout  # the harness's table

    bad = subprocess.run([sys.executable, "-m", "gpts.lm_eval_adapter", "--model", "gpts", "--model_args",
                          f"model={tmp_path / 'nope'}", "--tasks", "gpts_mc", "--include_path", str(tasks_dir)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "No model named" in bad.stderr and "Traceback" not in bad.stderr
