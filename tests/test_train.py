"""Pretraining on a tiny model and a few KB of text: what it writes, resume, DDP, stopping, bad input."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gpts
from gpts import resources
from gpts.config import Config
from gpts.data import prepare
from gpts.errors import GptsError
from gpts.train import Dist, TrainConfig, fit_batches, learning_rate, pretrain

from helpers import Recorder, run

WORDS = "the king queen said to my lord good night and you shall not go thou art here come away".split()
# Small enough to train in a second or two; learning rate high for loss to fall within a few dozen steps.
TINY = dict(model="gpt2-nano", model_config={"n_layer": 2, "n_head": 4, "n_embd": 64}, block_size=32,
            batch_size=8, learning_rate=3e-3, warmup_steps=5, eval_interval=10, eval_batches=2, log_interval=5,
            checkpoint_interval=1000, sample_tokens=8, dtype="float32")

pytestmark = pytest.mark.usefixtures("one_thread")


def corpus_text(n_lines: int = 600) -> str:
    rng = random.Random(0)
    return "".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize() + ".\n"
                   for _ in range(n_lines))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(corpus_text())
    return path


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare([str(corpus)], out, tokenizer="char")
    return out


def config(data, out, **settings) -> TrainConfig:
    return TrainConfig.load(None, {**TINY, "data": [str(data)], "out_dir": str(out), **settings})


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_clock(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "elapsed_s"}


# -- a run and what it leaves -----------------------------------------------------------------------------


def test_loss_falls_and_the_run_directory_has_everything(corpus, tmp_path):
    run_dir = tmp_path / "run"
    summary = pretrain(config(corpus, run_dir, tokenizer="char", max_steps=40, dtype="bfloat16"))  # raw text

    metrics = rows(run_dir)
    assert [r["step"] for r in metrics] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {"step", "tokens", "elapsed_s", "lr", "train_loss"} <= set(metrics[0])
    assert [r["tokens"] for r in metrics[:2]] == [5 * 8 * 32, 10 * 8 * 32]
    assert "val_loss" in metrics[1] and "full_val_loss" in metrics[-1]
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] - 1.0
    assert summary["final_val_loss"] == metrics[-1]["full_val_loss"] < 2.5 < metrics[1]["val_loss"] + 1
    assert summary["steps"] == 40 and summary["tokens"] == 40 * 8 * 32 and summary["stop_reason"] == "max_steps"

    assert (run_dir / "data" / "train.bin").is_file()
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "samples.txt").read_text().count("--- step") == 4  # steps 10, 20, 30, 40
    saved = TrainConfig.load(run_dir / "train_config.yaml")
    assert saved.block_size == 32 and saved.max_steps == 40 and saved.lr_decay_steps == 40
    assert [p.name for p in run_dir.iterdir() if p.name.startswith(".")] == [".lock"]  # no temporary files

    # The run directory and best/ are model references.
    model = gpts.load(str(run_dir))
    assert model.config.context_length == 32 and model.config.n_layer == 2
    text = model.generate("The king", max_new_tokens=10, seed=0)[0].text
    assert len(text) == 10
    assert gpts.load(str(run_dir / "best")).config == model.config


def test_schedule_warms_up_then_decays_to_min_lr():
    c = TrainConfig(learning_rate=1.0, min_lr=0.1, warmup_steps=10, lr_decay_steps=110)
    assert learning_rate(0, c) == pytest.approx(1 / 11)
    assert learning_rate(9, c) == pytest.approx(10 / 11)
    assert learning_rate(10, c) == pytest.approx(1.0)
    assert learning_rate(60, c) == pytest.approx(0.55)
    assert learning_rate(110, c) == learning_rate(500, c) == 0.1
    assert learning_rate(500, TrainConfig(learning_rate=1.0, warmup_steps=10)) == 1.0  # no decay horizon


# -- resume and processes -------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_follows_the_uninterrupted_trajectory(prepared, tmp_path, optimizer):
    settings = dict(lr_decay_steps=30, eval_interval=10, optimizer=optimizer)
    pretrain(config(prepared, tmp_path / "whole", max_steps=30, **settings))
    pretrain(config(prepared, tmp_path / "parts", max_steps=15, **settings))
    assert rows(tmp_path / "parts")[-1]["step"] == 15
    summary = pretrain(TrainConfig.load(None, {"out_dir": str(tmp_path / "parts"), "resume": True, "max_steps": 30}))

    whole, parts = rows(tmp_path / "whole"), rows(tmp_path / "parts")
    parts = [r for r in parts if r["step"] != 15]  # the interrupted run's last row has its final evaluation
    assert [without_clock(r) for r in parts] == [without_clock(r) for r in whole if r["step"] != 15]
    assert summary["steps"] == 30 and summary["tokens"] == 30 * 8 * 32
    assert summary["elapsed_s"] >= rows(tmp_path / "parts")[1]["elapsed_s"]  # the clock goes on across sessions


def test_resume_keeps_what_the_run_trains(prepared, corpus, tmp_path):
    pretrain(config(prepared, tmp_path / "run", max_steps=5))
    with pytest.raises(GptsError, match="already exists"):
        pretrain(config(prepared, tmp_path / "run", max_steps=10))
    with pytest.raises(GptsError, match="another data"):
        TrainConfig.load(None, {"out_dir": str(tmp_path / "run"), "resume": True, "data": [str(corpus)]})
    with pytest.raises(GptsError, match="already at its max_steps"):
        pretrain(TrainConfig.load(None, {"out_dir": str(tmp_path / "run"), "resume": True}))
    with pytest.raises(GptsError, match="not a training run"):
        TrainConfig.load(None, {"out_dir": str(tmp_path / "nothing"), "resume": True})


def test_torchrun_two_processes_with_accumulation_match_one(prepared, tmp_path):
    script = Path(sys.executable).parent / "gpts"
    if not script.is_file():
        pytest.skip("the gpts console script is not installed beside this interpreter")
    settings = dict(max_steps=12, dtype="float32", eval_interval=6, sample_tokens=0)
    pretrain(config(prepared, tmp_path / "one", **settings))

    # Two processes of two micro-steps of two sequences: the same global batch of 8.
    flags = [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **settings, "grad_accum": 2}.items() if k != "max_steps"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
           "pretrain", "--data", str(prepared), "--out", str(tmp_path / "two"), "--max-steps", "12", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    one, two = rows(tmp_path / "one"), rows(tmp_path / "two")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [5, 6, 10, 12]
    for a, b in zip(one, two):
        for key in ("train_loss", "val_loss", "full_val_loss"):
            assert (key in a) == (key in b)
            if key in a:
                assert b[key] == pytest.approx(a[key], abs=1e-5), (a["step"], key)
    assert gpts.load(str(tmp_path / "two")).config.n_layer == 2


# -- starting points and stopping -------------------------------------------------------------------------


def test_init_continues_from_a_model(corpus, prepared, tmp_path):
    pretrain(config(prepared, tmp_path / "first", max_steps=30))
    # Raw text: prepared with the init model's tokenizer by default.
    summary = pretrain(config(corpus, tmp_path / "second", init=str(tmp_path / "first"), model_config={}, max_steps=5,
                              warmup_steps=0, learning_rate=1e-4))
    first, second = rows(tmp_path / "first"), rows(tmp_path / "second")
    assert second[0]["train_loss"] < first[0]["train_loss"] - 1.0  # it starts where the first run ended
    assert summary["final_val_loss"] == pytest.approx(first[-1]["full_val_loss"], abs=0.1)
    assert gpts.load(str(tmp_path / "second")).config == gpts.load(str(tmp_path / "first")).config
    with pytest.raises(GptsError, match="reshape"):
        pretrain(config(prepared, tmp_path / "third", init=str(tmp_path / "first"), max_steps=5))


def test_target_val_loss_stops_at_the_first_full_evaluation_below_it(prepared, tmp_path):
    summary = pretrain(config(prepared, tmp_path / "run", max_steps=200, target_val_loss=3.5))
    metrics = rows(tmp_path / "run")
    evaluated = [r for r in metrics if "full_val_loss" in r]
    assert "val_loss" not in json.dumps(metrics).replace("full_val_loss", "")  # with a target, all are full
    assert evaluated[-1]["full_val_loss"] <= 3.5 < min([r["full_val_loss"] for r in evaluated[:-1]], default=9)
    assert summary["stop_reason"] == "target_val_loss" and summary["steps"] == evaluated[-1]["step"] < 200
    assert 0 < summary["target_reached_s"] <= evaluated[-1]["elapsed_s"] + 1e-3


def test_max_time_and_max_tokens_stop_the_run(prepared, tmp_path):
    summary = pretrain(config(prepared, tmp_path / "time", max_time=1e-6))
    assert summary["stop_reason"] == "max_time" and summary["steps"] == 5  # the clock is read at log steps
    summary = pretrain(config(prepared, tmp_path / "tokens", max_tokens=7 * 8 * 32))
    assert summary["stop_reason"] == "max_tokens" and summary["steps"] == 7
    assert TrainConfig.load(tmp_path / "tokens" / "train_config.yaml").lr_decay_steps == 7


# -- settings and bad input ---------------------------------------------------------------------------------


def test_settings_file_flags_and_types(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: 3e-4\nbatch_size: 16\nmax_tokens: 1e6\nmodel_config:\n  n_layer: 2\n")
    c = TrainConfig.load(path, {"batch_size": 8, "out_dir": tmp_path / "run", "data": "corpus.txt"})
    assert (c.learning_rate, c.batch_size, c.max_tokens, c.model_config) == (3e-4, 8, 1_000_000, {"n_layer": 2})
    assert (c.out_dir, c.data) == (str(tmp_path / "run"), ["corpus.txt"])
    assert TrainConfig.load(None, {}) == TrainConfig()


@pytest.mark.parametrize("text, match", [
    ("learning_rate: 1e-3\nbatchsize: 8\n", "Unknown setting 'batchsize'.*batch_size"),
    ("learning_rate: 1e-3\nmodel_config: [oops\n", "line 3 is not valid YAML"),
    ("batch_size: many\n", "batch_size='many' is not a whole number"),
    ("batch_size: 0\n", "batch_size=0 must be positive"),
    ("dtype: float16\n", "dtype='float16'"),
    ("optimizer: sgd\n", "optimizer='sgd' is not adamw or muon"),
    ("muon_momentum: 1.5\n", "muon_momentum=1.5 must lie in"),
    ("- a list\n", "holds a list"),
])
def test_bad_settings_files(tmp_path, text, match):
    path = tmp_path / "train.yaml"
    path.write_text(text)
    with pytest.raises(GptsError, match=match):
        TrainConfig.load(path, {})


def test_bad_input_leaves_no_run_directory(corpus, prepared, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "small.txt").write_text("Just a few words, far fewer than the windows need.\n")
    cases = [
        (dict(model="gpt9-nano"), "Unknown model preset"),
        (dict(model_config={"n_layers": 2}), "Unknown model_config key"),
        (dict(block_size=512), "longer than the model's context"),
        (dict(batch_size=6, grad_accum=4), "does not split evenly"),
        (dict(data=[str(tmp_path / "missing.txt")]), "missing.txt"),
        (dict(data=[str(tmp_path / "empty.txt")], tokenizer="char"), "empty"),
        (dict(data=[str(tmp_path / "small.txt")], tokenizer="char"), "fewer than one window"),
        (dict(block_size=256, model_config={"n_layer": 2, "n_head": 4, "n_embd": 64}, val_fraction=0.01),
         "fewer than one window"),
        (dict(init=str(tmp_path / "no-such-model")), "No model named"),
        (dict(sample_prompt="\u00e9\u00e9"), "sample_prompt"),
    ]
    for settings, match in cases:
        out = tmp_path / "run"
        data = settings.pop("data", [str(corpus)])
        with pytest.raises(GptsError, match=match):
            pretrain(TrainConfig.load(None, {**TINY, "data": data, "tokenizer": "char", "out_dir": str(out),
                                              "max_steps": 5, **settings}))
        assert not out.exists(), settings
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], settings


def test_cli_pretrain(prepared, tmp_path, monkeypatch, capsys):
    args = ["pretrain", "--data", str(prepared), "--out", str(tmp_path / "run"), "--max-steps", "5",
            *[f"--set={k}={json.dumps(v)}" for k, v in TINY.items()]]
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0 and "final_val_loss" in out
    code, _, err = run(monkeypatch, capsys, *args, "--set", "batch_sise=4")
    assert code == 1 and "Did you mean batch_size?" in err


# -- nothing a user does loses their work -------------------------------------------------------------------


def gpts_script() -> Path:
    script = Path(sys.executable).parent / "gpts"
    if not script.is_file():
        pytest.skip("the gpts console script is not installed beside this interpreter")
    return script


def start(*args: str) -> subprocess.Popen:
    """`gpts ARGS...` in its own process, as a person starts it in a terminal."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([str(gpts_script()), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def wait_for_rows(run_dir: Path, process: subprocess.Popen, n: int = 1) -> None:
    deadline = time.monotonic() + 120
    while not ((run_dir / "metrics.jsonl").is_file() and len(rows(run_dir)) >= n):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run logged no step in two minutes"
        time.sleep(0.05)


def cli_settings(**settings) -> list[str]:
    return [f"--set={k}={json.dumps(v)}" for k, v in {**TINY, **settings}.items()]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_a_checkpoint_that_resume_continues_exactly(prepared, tmp_path, signum):
    settings = dict(eval_interval=20, sample_tokens=0)
    run_dir = tmp_path / "run"
    process = start("pretrain", "--data", str(prepared), "--out", str(run_dir), "--max-steps", "200",
                    *cli_settings(**settings))
    wait_for_rows(run_dir, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "stopping after this step and saving a checkpoint" in err and "Stopped at step" in err
    stopped = int(err.split("Stopped at step ")[1].split()[0].replace(",", ""))
    assert 5 <= stopped < 200 and (run_dir / "checkpoint" / "state.pt").is_file()
    assert gpts.load(str(run_dir)).config.n_layer == 2  # the run directory holds the model as trained so far

    pretrain(TrainConfig.load(None, {"out_dir": str(run_dir), "resume": True}))
    pretrain(config(prepared, tmp_path / "whole", max_steps=200, **settings))
    assert [without_clock(r) for r in rows(run_dir)] == [without_clock(r) for r in rows(tmp_path / "whole")]


def test_a_run_directory_is_locked_while_a_process_trains_in_it(prepared, tmp_path):
    run_dir = tmp_path / "run"
    args = ["pretrain", "--data", str(prepared), "--out", str(run_dir), "--max-steps", "100000",
            *cli_settings(sample_tokens=0)]
    process = start(*args)
    try:
        wait_for_rows(run_dir, process)
        for settings in ({"resume": True}, {"max_steps": 5}):  # a second run into it, resumed or anew
            with pytest.raises(GptsError, match=f"in use: process {process.pid} .*pretrain"):
                pretrain(TrainConfig.load(None, {**TINY, "data": [str(prepared)], "out_dir": str(run_dir),
                                                 **settings}))
    finally:
        process.kill()  # kill -9: no checkpoint (its first is due at step 1,000), no clean-up
        process.wait()
    assert not (run_dir / "checkpoint").exists()
    # The lock went with the process, and a run that never reached a checkpoint does not block the same command.
    events = Recorder()
    summary = pretrain(config(prepared, run_dir, max_steps=5, sample_tokens=0), events)
    assert summary["steps"] == 5 and "stopped before its first checkpoint" in events.messages()[0]


def test_defaults_fit_the_memory_free(monkeypatch):
    shape = Config.from_name("smollm2-135m")  # its context, 8,192 tokens, at batch 16 takes 300 GB to train
    cpu = Dist(0, 1, torch.device("cpu"), False)
    for free_gb in (24, 4):
        monkeypatch.setattr(resources, "available_memory", lambda device: free_gb << 30)
        events = Recorder()
        block, accum = fit_batches(shape, TrainConfig(), cpu, events)
        need = resources.state_bytes(shape) + 16 // accum * block * resources.activation_bytes_per_token(shape)
        assert need <= free_gb << 30 and 16 % accum == 0
        assert f"block_size {block} (the model's context is 8,192)" in events.messages()[0]
        assert (block, accum) == ((1024, 4) if free_gb == 24 else (512, 16))  # shorter blocks when it must
    assert fit_batches(shape, TrainConfig(block_size=4096, grad_accum=1), cpu, events) == (4096, 1)  # as set
    events = Recorder()
    assert fit_batches(shape, TrainConfig(block_size=4096), cpu, events) == (4096, 16)
    assert "may not fit in memory" in events.warnings[0]


def test_a_long_context_trains_on_a_default_block_that_fits(corpus, tmp_path):
    shape = {**TINY["model_config"], "context_length": 8192}
    settings = {**TINY, "model_config": shape, "block_size": None}
    summary = pretrain(TrainConfig.load(None, {**settings, "data": [str(corpus)], "tokenizer": "char",
                                               "out_dir": str(tmp_path / "run"), "max_steps": 1, "sample_tokens": 0}))
    assert summary["steps"] == 1
    assert TrainConfig.load(tmp_path / "run" / "train_config.yaml").block_size == 1024


def test_a_run_that_ends_before_its_warmup_says_so(prepared, tmp_path):
    events = Recorder()
    pretrain(config(prepared, tmp_path / "run", max_steps=5, warmup_steps=50), events)
    assert "stops at step 5, before its 50 warmup steps end" in events.warnings[0]


def test_dtype_auto_is_bfloat16_only_where_it_is_fast(monkeypatch, prepared, tmp_path):
    for native, dtype in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(resources, "native_bfloat16", lambda device: native)
        pretrain(config(prepared, tmp_path / dtype, max_steps=1, dtype="auto", sample_tokens=0))
        assert TrainConfig.load(tmp_path / dtype / "train_config.yaml").dtype == dtype


def test_a_run_that_died_holding_a_model_is_kept(prepared, tmp_path):
    run_dir = tmp_path / "run"
    pretrain(config(prepared, run_dir, max_steps=10, sample_tokens=0))
    shutil.rmtree(run_dir / "checkpoint")  # as if killed after an evaluation saved best/, before any checkpoint
    with pytest.raises(GptsError, match="already exists"):
        pretrain(config(prepared, run_dir, max_steps=5))
    assert (run_dir / "best" / "model.safetensors").is_file()
