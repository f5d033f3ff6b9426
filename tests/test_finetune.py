"""Fine-tuning on a tiny random model: LoRA and full runs, what a run writes, resume, the CLI, bad input."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gpts
from gpts.checkpoint import Checkpoint, save_native
from gpts.config import Config
from gpts.errors import GptsError
from gpts.evaluate import classify
from gpts.finetune import FinetuneConfig, finetune, plan
from gpts.model import GPT
from gpts.registry import read_checkpoint
from gpts.task import read_task
from gpts.tokenizer import Tokenizer

from helpers import Recorder, bench_module, run

REVIEWS = [("great film, loved it", "positive"), ("awful film, hated it", "negative"),
           ("a good movie", "positive"), ("a bad movie", "negative"), ("loved every minute", "positive"),
           ("hated every minute", "negative"), ("wonderful and fun", "positive"), ("boring and dull", "negative")]
OPENAI_METRICS = ("train_loss", "train_mean_token_accuracy")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory) -> Path:
    prompt = "<|im_start|>system\nClassify the text.\nAnswer with exactly one of these labels: negative, positive."
    corpus = [f"{prompt}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n{label}<|im_end|>"
              for text, label in REVIEWS] * 5
    tok = Tokenizer.train_bpe(corpus, 400)
    torch.manual_seed(0)
    config = Config.from_name("llama-nano", vocab_size=tok.vocab_size, context_length=256, n_layer=2, n_embd=64,
                              intermediate_size=96)
    model = GPT(config)
    with torch.no_grad():  # embeddings large enough for a frozen head to tell labels apart with confidence
        model.wte.weight.mul_(10)
    out = tmp_path_factory.mktemp("models") / "base"
    save_native(Checkpoint(config, model.state_dict(), tok, {}), out)
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in REVIEWS * 4))
    return path


def settings(base_dir, data, out, **overrides) -> FinetuneConfig:
    values = dict(model=str(base_dir), data=str(data), out_dir=str(out), n_epochs=3, batch_size=8,
                  learning_rate=1e-2, val_fraction=0.25, eval_interval=2, dtype="float32")
    return FinetuneConfig(**{**values, **overrides})


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_lora_run_learns_and_writes_everything(base_dir, data, tmp_path):
    run_dir = tmp_path / "run"
    summary = finetune(settings(base_dir, data, run_dir, n_epochs=8, learning_rate=1e-2))

    metrics = rows(run_dir)  # 24 training examples, batch 8: 3 steps per epoch
    assert [r["step"] for r in metrics] == list(range(1, 25)) and summary["steps"] == 24
    assert all(set(OPENAI_METRICS) <= set(r) for r in metrics)
    assert [r["step"] for r in metrics if "valid_loss" in r] == list(range(2, 25, 2))
    assert [(r["step"], r["epoch"]) for r in metrics if "full_valid_loss" in r] == [(3 * e, e) for e in range(1, 9)]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] / 3
    assert metrics[-1]["full_valid_mean_token_accuracy"] > metrics[2]["full_valid_mean_token_accuracy"]
    with open(run_dir / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 24 and table[2]["full_valid_loss"] == str(metrics[2]["full_valid_loss"])
    assert (run_dir / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert not (run_dir / "checkpoints").exists()  # a finished run has nothing to resume
    assert (run_dir / "peft" / "adapter_model.safetensors").is_file()
    assert (run_dir / "adapter.safetensors").stat().st_size < (base_dir / "model.safetensors").stat().st_size / 4
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == [".lock"]  # no temporary files

    # The run directory is a model reference, and evaluation prompts as training did.
    task = read_task(str(run_dir))
    assert task.labels == ["negative", "positive"] and task.instructions is None
    tuned = gpts.load(str(run_dir))
    result = classify(tuned, [{"text": t, "label": l} for t, l in REVIEWS])
    assert set(result.metrics["per_class"]) == {"negative", "positive"} and result.metrics["accuracy"] >= 0.5


def test_full_finetuning_writes_a_checkpoint(base_dir, data, tmp_path):
    run_dir = tmp_path / "full"
    finetune(settings(base_dir, data, run_dir, method="full", n_epochs=2, learning_rate=3e-3))
    assert (run_dir / "model.safetensors").is_file() and not (run_dir / "adapter_config.json").exists()
    (tmp_path / "plain.txt").write_text("as open() makes files")
    assert {f.stat().st_mode for f in run_dir.iterdir() if f.is_file()} == {(tmp_path / "plain.txt").stat().st_mode}
    assert not (run_dir / "checkpoints").exists()  # a finished run has nothing to resume (1.6 GB for SmolLM2)
    with pytest.raises(GptsError, match="is done"):
        finetune(FinetuneConfig(out_dir=str(run_dir), resume=True))
    before, after = gpts.load(str(base_dir)).gpt, gpts.load(str(run_dir)).gpt
    x = torch.tensor([[1, 2, 3]])
    assert not torch.allclose(before(x), after(x))


def test_resume_follows_the_uninterrupted_run(base_dir, data, tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    finetune(settings(base_dir, data, whole, lora_dropout=0.1))
    finetune(settings(base_dir, data, parts, lora_dropout=0.1, max_steps=4))  # stops inside the second epoch
    assert rows(parts)[-1]["step"] == 4
    finetune(FinetuneConfig(out_dir=str(parts), resume=True))

    def without_clock(r):
        return {k: v for k, v in r.items() if k != "elapsed_s"}
    assert [without_clock(r) for r in rows(parts)] == [without_clock(r) for r in rows(whole)]
    x = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(gpts.load(str(parts)).gpt(x), gpts.load(str(whole)).gpt(x), rtol=0, atol=0)


def test_auto_hyperparameters_follow_openai():
    auto = FinetuneConfig()
    assert (plan(auto, 10).n_epochs, plan(auto, 50).n_epochs, plan(auto, 500).n_epochs) == (10, 3, 3)
    assert plan(auto, 20_000).n_epochs == 1
    assert (plan(auto, 5).batch_size, plan(auto, 500).batch_size, plan(auto, 20_000).batch_size) == (5, 8, 40)
    assert plan(auto, 500).learning_rate == 1e-3
    assert plan(FinetuneConfig(method="full", learning_rate_multiplier=2), 500).learning_rate == 4e-5
    assert plan(FinetuneConfig(learning_rate=0.5, learning_rate_multiplier=2), 500).learning_rate == 0.5
    p = plan(FinetuneConfig(n_epochs=2, batch_size=16), 100)
    assert (p.steps_per_epoch, p.total_steps, p.lr_decay_steps) == (7, 14, 14)


def test_cli_finetune_and_lora_merge(base_dir, data, tmp_path, monkeypatch, capsys):
    run_dir, merged = tmp_path / "run", tmp_path / "merged"
    code, out, err = run(monkeypatch, capsys, "finetune", "--model", str(base_dir), "--data", str(data), "--out",
                         str(run_dir), "--n-epochs", "1", "--batch-size", "8", "--learning-rate", "0.01",
                         "--lora-rank", "4", "--lora-targets", "q_proj,v_proj", "--dtype", "float32", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["steps"] == 4 and summary["method"] == "lora"  # 32 examples, batch 8
    assert json.loads((run_dir / "adapter_config.json").read_text())["lora"]["targets"] == ["q_proj", "v_proj"]

    code, out, err = run(monkeypatch, capsys, "lora", "merge", str(run_dir), "--out", str(merged))
    assert code == 0, err
    x = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(gpts.load(str(merged)).gpt(x), gpts.load(str(run_dir)).gpt(x), rtol=1e-5, atol=1e-5)
    assert read_task(str(merged)).labels == ["negative", "positive"]


def test_bad_input_is_clear_and_leaves_nothing(base_dir, data, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n' * 12)
    out = tmp_path / "out"
    with pytest.raises(GptsError, match="example_missing_assistant_message"):
        finetune(settings(base_dir, bad, out))
    assert not out.exists()
    with pytest.raises(GptsError, match="method"):
        settings(base_dir, data, out, method="qlora")
    with pytest.raises(GptsError, match="n_epochs"):
        settings(base_dir, data, out, n_epochs="many")
    with pytest.raises(GptsError, match="batch_size=7.5 is not a whole number"):
        settings(base_dir, data, out, batch_size=7.5)
    assert settings(base_dir, data, out, n_epochs=2.0).n_epochs == 2
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(GptsError, match="already exists"):
        finetune(settings(base_dir, data, out))
    assert (out / "keep.txt").read_text() == "mine"

    code, _, err = run(monkeypatch, capsys, "finetune", "--model", str(base_dir), "--data", str(tmp_path / "none.jsonl"),
                       "--out", str(tmp_path / "x"))
    assert code == 1 and "none.jsonl" in err and "Traceback" not in err


def test_an_adapter_needs_its_own_base(base_dir, data, tmp_path):
    moved_base = tmp_path / "base"
    save_native(read_checkpoint(str(base_dir)), moved_base)
    run_dir = tmp_path / "run"
    finetune(settings(base_dir, data, run_dir, model=str(moved_base), n_epochs=1))
    ckpt = read_checkpoint(str(moved_base))
    ckpt.state_dict["wte.weight"] = ckpt.state_dict["wte.weight"] + 1
    save_native(ckpt, moved_base)
    with pytest.raises(GptsError, match="different base model"):
        gpts.load(str(run_dir))
    shutil.rmtree(moved_base)
    with pytest.raises(GptsError, match="cannot be loaded"):
        gpts.load(str(run_dir))


@pytest.mark.slow
def test_lora_teaches_the_bundled_model_a_task(bundled_gguf, tmp_path):
    """bench/finetune.py, shortened: held-out macro-F1 rises to at least 0.9 after one short LoRA epoch."""
    reviews = bench_module("reviews")

    torch.set_num_threads(2)  # the real model: worth both cores
    train, test = reviews.write_task(tmp_path / "task", n=160)
    examples = [json.loads(line) for line in test.read_text().splitlines()]
    before = classify(gpts.load("default"), examples, labels=reviews.LABELS).metrics
    finetune(FinetuneConfig(model="default", data=str(train), out_dir=str(tmp_path / "run"), n_epochs=1,
                            batch_size=8, learning_rate=1e-3))
    after = classify(gpts.load(str(tmp_path / "run")), examples).metrics  # labels from the run's task.json
    assert after["macro"]["f1"] >= 0.9 and after["macro"]["f1"] > before["macro"]["f1"]


def test_an_interrupt_saves_a_checkpoint_that_resume_continues_exactly(base_dir, data, tmp_path):
    script = Path(sys.executable).parent / "gpts"
    if not script.is_file():
        pytest.skip("the gpts console script is not installed beside this interpreter")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    options = dict(n_epochs=10, learning_rate=1e-3, val_fraction=0.25, eval_interval=2)
    process = subprocess.Popen(
        [str(script), "finetune", "--model", str(base_dir), "--data", str(data), "--out", str(parts), "--batch-size",
         "8", "--dtype", "float32", *[f"--{k.replace('_', '-')}={v}" for k, v in options.items()]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not ((parts / "metrics.jsonl").is_file() and rows(parts)):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Stopped at step" in err and "interrupted" in out  # the summary's stop_reason
    stopped = rows(parts)[-1]["step"]
    assert stopped < 30 and [p.name for p in (parts / "checkpoints").iterdir()] == [f"step-{stopped:08d}"]
    assert gpts.load(str(parts)).config.n_layer == 2  # the model as trained so far

    finetune(FinetuneConfig(out_dir=str(parts), resume=True))
    finetune(settings(base_dir, data, whole, **options))

    def without_clock(r):
        return {k: v for k, v in r.items() if k != "elapsed_s"}
    assert [without_clock(r) for r in rows(parts)] == [without_clock(r) for r in rows(whole)]


def test_an_output_that_cannot_be_written_is_said_before_the_work(base_dir, data, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    code, out, err = run(monkeypatch, capsys, "finetune", "--model", str(base_dir), "--data", str(data), "--out",
                         str(tmp_path / "notes.txt" / "run"))
    assert code == 1 and "notes.txt is a file, not a directory" in err and "Traceback" not in err


def test_a_run_stopped_before_its_warmup_says_so(base_dir, data, tmp_path):
    events = Recorder()
    finetune(settings(base_dir, data, tmp_path / "run", n_epochs=30, max_steps=1), events)  # warmup: 5 % of 90
    assert "stops at step 1, before its 4 warmup steps end" in events.warnings[0]


def test_a_moved_run_resumes_where_it_is(base_dir, data, tmp_path):
    finetune(settings(base_dir, data, tmp_path / "before", max_steps=4))
    shutil.move(tmp_path / "before", tmp_path / "after")
    finetune(FinetuneConfig(out_dir=str(tmp_path / "after"), resume=True))
    assert not (tmp_path / "before").exists() and rows(tmp_path / "after")[-1]["step"] == 9


def test_a_checkpoint_cut_short_is_no_checkpoint(base_dir, data, tmp_path):
    run_dir = tmp_path / "run"
    finetune(settings(base_dir, data, run_dir, max_steps=4))  # checkpoints at step 3 (an epoch end), then 4
    cut_short = run_dir / "checkpoints" / ".step-00000005.99999999-abcdefgh.tmp" / "step-00000005"
    cut_short.mkdir(parents=True)  # what a run killed while writing its next checkpoint leaves
    (cut_short / "state.pt").write_bytes(b"half a checkpoint")
    finetune(FinetuneConfig(out_dir=str(run_dir), resume=True, max_steps=6))  # from step 4
    assert [r["step"] for r in rows(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step-00000006"]

    fresh = tmp_path / "fresh"  # killed while writing its first checkpoint: the same command starts it anew
    (fresh / "checkpoints" / ".step-00000003.99999999-abcdefgh.tmp").mkdir(parents=True)
    (fresh / "finetune_config.json").write_text("{}")
    events = Recorder()
    finetune(settings(base_dir, data, fresh, max_steps=1), events)
    assert "stopped before its first checkpoint" in events.messages()[0]
