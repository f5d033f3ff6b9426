"""Fine-tuning (`gpts finetune`): full or LoRA, on chat, prompt/completion, instruction or classification JSONL.

Hyperparameters are OpenAI's (`n_epochs`, `batch_size`, `learning_rate_multiplier`, each "auto" or a number), and
so are the metrics: per step `train_loss` and `train_mean_token_accuracy`, every `eval_interval` steps
`valid_loss` and `valid_mean_token_accuracy` on one validation batch, at each epoch end `full_valid_loss` and
`full_valid_mean_token_accuracy`. The loss covers the assistant tokens that carry weight (finetune_data.py).

A run directory:
    (the model)           LoRA: adapter_config.json + adapter.safetensors + peft/ (lora.py); full: a native checkpoint
    task.json             labels and instructions of a classification task, reused by `gpts eval classify`
    finetune_config.json  the settings, with the resolved hyperparameters
    metrics.jsonl, results.csv, metrics.png
    checkpoints/step-N/   what --resume needs (trainable weights, optimizer, step, RNG), at each epoch end, at
                          --max-steps and on Ctrl-C; only the latest is kept, and none once the run is done
    .lock                 held while a process trains here (gpts.rundir)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpts import lora, resources
from gpts.checkpoint import Checkpoint, save_native
from gpts.errors import GptsError
from gpts.events import Message, Meter, Report, ignore
from gpts.fileio import atomic_path, check_writable, read_json, write_text
from gpts.finetune_data import IGNORE_INDEX as IGNORE, FinetuneDataset, FinetuneExample, load_dataset
from gpts.interrupt import StopRequest, stop_on_signals
from gpts.model import GPT
from gpts.registry import read_checkpoint
from gpts.rundir import (RunLock, append_metrics, claim_new_run_dir, clear_for_new_run, rewind_metrics,
                         write_model_files)
from gpts.task import write_task
from gpts.train import learning_rate, rng_states, set_rng_states, warmup_warning

SETTINGS_FILE = "finetune_config.json"
BASE_LEARNING_RATE = {"lora": 1e-3, "full": 2e-5}  # what learning_rate_multiplier multiplies
MICRO_BATCH = 8  # examples per forward pass; larger batches accumulate gradients over several
CSV_COLUMNS = ("step", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
               "full_valid_loss", "full_valid_mean_token_accuracy")


@dataclass
class FinetuneConfig:
    """Every setting of `gpts finetune`; the CLI flags have the same names."""

    model: str = "default"
    data: str = ""
    out_dir: str = "out/finetune"
    validation_data: str | None = None
    val_fraction: float = 0.0  # without validation_data: the share of the training file held out
    method: str = "lora"  # or full
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None  # None: lora.py's default
    n_epochs: int | str = "auto"
    batch_size: int | str = "auto"
    learning_rate_multiplier: float | str = "auto"
    learning_rate: float | None = None  # explicit, instead of the multiplier
    warmup_fraction: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    max_length: int | None = None  # tokens per example (None: the model's context)
    labels: list[str] | None = None  # classification: the label set (None: those of the training file)
    instructions: str | None = None  # classification: the instruction text of the prompt
    eval_interval: int = 10
    max_steps: int | None = None  # stop early (the schedule still plans n_epochs); resume goes on from there
    dtype: str = "auto"  # bfloat16, float32, or auto: bfloat16 where the processor computes it natively
    seed: int = 1337
    resume: bool = False

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise GptsError(f"Unknown method {self.method!r}.", "Use --method lora or --method full.")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise GptsError(f"dtype={self.dtype!r} is not auto, bfloat16 or float32.", "Use one of those.")
        for name in ("n_epochs", "batch_size", "learning_rate_multiplier"):
            value = getattr(self, name)
            if value != "auto" and not (isinstance(value, (int, float)) and value > 0):
                raise GptsError(f"{name}={value!r} is neither 'auto' nor a positive number.",
                                f"Give {name} as auto or a number above 0.")
        for name in ("n_epochs", "batch_size"):  # counted, so never cut silently: 2.5 epochs is not 2
            value = getattr(self, name)
            if value != "auto":
                if value != int(value):
                    raise GptsError(f"{name}={value!r} is not a whole number.", f"Give {name} as auto or a whole number.")
                setattr(self, name, int(value))
        if not 0 <= self.val_fraction < 1:
            raise GptsError(f"val_fraction={self.val_fraction} is not in [0, 1).", "Try 0.1.")
        for name in ("lora_rank", "eval_interval", "max_steps", "max_length"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GptsError(f"{name}={value} must be positive.", f"Give {name} a value above 0.")


@dataclass
class Plan:
    """The resolved hyperparameters; also what train.learning_rate needs (a Schedule)."""

    n_epochs: int
    batch_size: int
    learning_rate: float
    steps_per_epoch: int
    warmup_steps: int
    min_lr: float = 0.0
    lr_decay_steps: int | None = None

    @property
    def total_steps(self) -> int:
        return self.n_epochs * self.steps_per_epoch


def plan(config: FinetuneConfig, n_train: int) -> Plan:
    """OpenAI's "auto": 3 epochs, adjusted so that 100 to 25,000 examples are seen; batches of 0.2 % of the data."""
    if config.n_epochs == "auto":
        n_epochs = 3
        if n_train * n_epochs < 100:
            n_epochs = min(25, math.ceil(100 / n_train))
        elif n_train * n_epochs > 25_000:
            n_epochs = max(1, 25_000 // n_train)
    else:
        n_epochs = config.n_epochs
    # At least 8: on a CPU, smaller batches leave the cores idle for no gain in quality.
    batch_size = (min(n_train, max(8, min(256, math.ceil(0.002 * n_train)))) if config.batch_size == "auto"
                  else min(config.batch_size, n_train))
    multiplier = 1.0 if config.learning_rate_multiplier == "auto" else float(config.learning_rate_multiplier)
    lr = config.learning_rate or multiplier * BASE_LEARNING_RATE[config.method]
    steps = math.ceil(n_train / batch_size)
    total = n_epochs * steps
    return Plan(n_epochs, batch_size, lr, steps, warmup_steps=round(config.warmup_fraction * total),
                min_lr=0.1 * lr, lr_decay_steps=total)


# -- batches ----------------------------------------------------------------------------------------------


def padded(examples: list[FinetuneExample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded inputs and next-token targets (B, T-1): padding comes after every real token, so the causal
    mask already keeps it out of their attention, and its targets are IGNORE."""
    width = max(len(ids) for ids, _ in examples)
    x = torch.zeros(len(examples), width, dtype=torch.long)
    y = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, labels) in enumerate(examples):
        x[row, :len(ids)] = torch.from_numpy(ids.astype(np.int64))
        y[row, :len(labels)] = torch.from_numpy(labels.astype(np.int64))
    return x[:, :-1], y[:, 1:]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


# -- the run ----------------------------------------------------------------------------------------------


class Finetuner:
    def __init__(self, config: FinetuneConfig, report: Report = ignore):
        config = dataclasses.replace(config, dtype=resources.resolve_dtype(config.dtype, torch.device("cpu")))
        self.config, self.report = config, report
        self.run_dir = Path(config.out_dir)
        self.base = read_checkpoint(config.model)
        context = self.base.config.context_length
        self.max_len = min(config.max_length or context, context)
        self.train_set, self.val_set = self.load_data()
        self.plan = plan(config, len(self.train_set.examples))

        torch.manual_seed(config.seed)
        model = GPT.from_state_dict(self.base.config, self.base.state_dict)
        if config.method == "lora":
            self.lora_config = lora.LoRAConfig(rank=config.lora_rank, alpha=config.lora_alpha,
                                               dropout=config.lora_dropout,
                                               targets=tuple(config.lora_targets or lora.TARGETS),
                                               base=config.model)
            model = lora.apply_lora(model, self.lora_config)
            if config.dtype == "bfloat16":
                # Autocast casts every frozen weight to bfloat16 at each matmul anyway: stored so, the casts go
                # (13 % of a step for SmolLM2-135M). The adapter keeps float32; merging uses the float32 base.
                for p in model.parameters():
                    if not p.requires_grad:
                        p.data = p.data.to(torch.bfloat16)
        self.model = model
        self.trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.optimizer = torch.optim.AdamW(list(self.trainable.values()), lr=self.plan.learning_rate,
                                           weight_decay=config.weight_decay, betas=(0.9, 0.999), fused=True)
        self.autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if config.dtype == "bfloat16"
                         else nullcontext())
        self.step = 0
        self.clock_s = 0.0
        self.rows: list[dict[str, Any]] = []

    def load_data(self) -> tuple[FinetuneDataset, FinetuneDataset | None]:
        c, tokenizer = self.config, self.base.tokenizer
        train = load_dataset(c.data, tokenizer, self.max_len, labels=c.labels, instructions=c.instructions,
                             report=self.report)
        if c.validation_data:
            val = load_dataset(c.validation_data, tokenizer, self.max_len, labels=train.labels,
                               instructions=c.instructions, report=self.report, purpose="validation")
            return train, val
        if c.val_fraction:
            return train.split(c.val_fraction, c.seed)
        return train, None

    # -- steps ------------------------------------------------------------------------------------------------

    def loss_and_accuracy(self, examples: list[FinetuneExample], train: bool) -> tuple[float, float, int]:
        """Summed loss, correct next-token predictions and trained-token count over `examples`; with `train`,
        gradients accumulate as for the mean over all trained tokens of the batch."""
        total = sum(int((labels[1:] != IGNORE).sum()) for _, labels in examples)
        loss_sum = correct = 0.0
        for start in range(0, len(examples), MICRO_BATCH):
            x, y = padded(examples[start:start + MICRO_BATCH])
            with self.autocast, (nullcontext() if train else torch.inference_mode()):
                logits = self.model(x)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE,
                                       reduction="sum")
            if train:
                (loss / max(total, 1)).backward()
            mask = y != IGNORE
            correct += (logits.argmax(-1)[mask] == y[mask]).sum().item()
            loss_sum += loss.item()
        return loss_sum, correct, total

    def train_step(self, batch: list[FinetuneExample]) -> dict[str, float]:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.plan)
        loss, correct, n = self.loss_and_accuracy(batch, train=True)
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.trainable.values(), self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {"train_loss": loss / max(n, 1), "train_mean_token_accuracy": correct / max(n, 1)}

    def validate(self, examples: list[FinetuneExample]) -> tuple[float, float]:
        self.model.eval()
        loss, correct, n = self.loss_and_accuracy(examples, train=False)
        return loss / max(n, 1), correct / max(n, 1)

    def validation_batch(self) -> list[FinetuneExample]:
        """A different validation batch at each evaluation, cycling through the set in a fixed order."""
        examples = self.val_set.examples
        index = self.step // self.config.eval_interval * self.plan.batch_size
        return [examples[(index + i) % len(examples)] for i in range(min(self.plan.batch_size, len(examples)))]

    # -- the loop -------------------------------------------------------------------------------------------------

    def run(self, stop: StopRequest) -> dict[str, Any]:
        c, p = self.config, self.plan
        examples = self.train_set.examples
        n_trainable = sum(t.numel() for t in self.trainable.values())
        self.report(Message(
            f"Fine-tuning {self.model.config.name or 'the model'} ({c.method}, {n_trainable / 1e6:.2f}M trainable "
            f"parameters, {c.dtype}) on {len(examples):,} {self.train_set.format} examples"
            + (f", validating on {len(self.val_set.examples):,}" if self.val_set else "")
            + f": {p.n_epochs} epoch(s) of {p.steps_per_epoch} steps, batch {p.batch_size}, lr {p.learning_rate:g}"))
        if warning := warmup_warning(c.max_steps, p, "The schedule is planned for every epoch: to train briefly at "
                                                     "the full rate, lower n_epochs instead of stopping early."):
            self.report(Message(warning, level="warning"))
        meter = Meter(self.report, "Fine-tuning", p.total_steps, "steps", completed=self.step)
        started = time.perf_counter()
        reason = None
        with stop_on_signals(stop, self.report):
            while self.step < p.total_steps:
                if c.max_steps is not None and self.step >= c.max_steps:
                    reason = "max_steps"
                    break
                if stop.is_set():
                    reason = "interrupted"
                    break
                epoch, index = divmod(self.step, p.steps_per_epoch)
                order = epoch_order(c.seed, epoch, len(examples))
                batch = [examples[i] for i in order[index * p.batch_size:(index + 1) * p.batch_size]]
                row = {"step": self.step + 1, **self.train_step(batch)}
                if self.val_set and self.step % c.eval_interval == 0:
                    row["valid_loss"], row["valid_mean_token_accuracy"] = self.validate(self.validation_batch())
                if self.step % p.steps_per_epoch == 0:
                    row["epoch"] = self.step // p.steps_per_epoch
                    if self.val_set:
                        row["full_valid_loss"], row["full_valid_mean_token_accuracy"] = self.validate(
                            self.val_set.examples)
                row["elapsed_s"] = round(self.clock_s + time.perf_counter() - started, 3)
                self.record(row)
                if "epoch" in row:
                    self.checkpoint(row["elapsed_s"])
                meter.update(self.step, epoch=epoch + 1, loss=round(row["train_loss"], 4),
                             accuracy=round(row["train_mean_token_accuracy"], 3))
        meter.done()
        elapsed = self.clock_s + time.perf_counter() - started
        if reason and self.step % p.steps_per_epoch:  # an epoch end has its checkpoint already
            self.checkpoint(elapsed)
        self.save_model()
        if reason is None:  # done: no resume can use a checkpoint now, and a full one weighs gigabytes
            shutil.rmtree(self.run_dir / "checkpoints", ignore_errors=True)
        if reason == "interrupted":
            self.report(Message(f"Stopped at step {self.step:,} with a checkpoint; {self.run_dir} holds the model as "
                                "trained so far, and resuming the run continues from the checkpoint."))
        last_full = next((r for r in reversed(self.rows) if "full_valid_loss" in r), {})
        return {"out_dir": str(self.run_dir), "method": c.method, "stop_reason": reason or "done", "steps": self.step,
                "epochs": self.step / p.steps_per_epoch, "examples": len(examples),
                "trained_tokens": round(self.step / p.steps_per_epoch * self.train_set.tokens),  # as OpenAI counts
                "trainable_parameters": n_trainable, "elapsed_s": round(elapsed, 3),
                "final_train_loss": self.rows[-1]["train_loss"] if self.rows else None,
                "full_valid_loss": last_full.get("full_valid_loss"),
                "full_valid_mean_token_accuracy": last_full.get("full_valid_mean_token_accuracy")}

    # -- what the run writes --------------------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        append_metrics(self.run_dir / "metrics.jsonl", row)
        if "epoch" in row or "valid_loss" in row:
            self.write_reports()

    def write_reports(self) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in self.rows:
            writer.writerow([row.get(k, "") for k in CSV_COLUMNS])
        write_text(self.run_dir / "results.csv", out.getvalue())
        plot_metrics(self.rows, self.run_dir / "metrics.png")

    def checkpoint(self, elapsed_s: float) -> None:
        """Everything --resume needs, at an epoch end or a stop; the one before it goes (resume needs the latest
        only, and a full fine-tuning checkpoint of even a small model weighs over a gigabyte)."""
        folder = self.run_dir / "checkpoints"
        state = {"trainable": {n: t.detach().clone() for n, t in self.trainable.items()},
                 "optimizer": self.optimizer.state_dict(), "step": self.step, "elapsed_s": elapsed_s,
                 "rng": rng_states()}
        latest = folder / f"step-{self.step:08d}"
        with atomic_path(latest) as tmp:
            tmp.mkdir(parents=True)
            torch.save(state, tmp / "state.pt")
        for entry in folder.iterdir():  # older checkpoints, and what a killed run left half-written: the run
            if entry != latest:         # directory is locked, so no other process is writing here
                shutil.rmtree(entry)

    def restore(self) -> None:
        saved = checkpoints(self.run_dir)
        if not saved:
            if holds_model(self.run_dir):
                raise GptsError(f"The run in {self.run_dir} is done: it holds its model, and nothing to resume.",
                                "Load it as a model, or fine-tune it further as a new run (--model "
                                f"{self.run_dir}).")
            raise GptsError(f"{self.run_dir} has no checkpoint to resume from.",
                            "Start the run again without --resume.")
        state = torch.load(saved[-1] / "state.pt", weights_only=False)
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                self.trainable[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.clock_s = state["step"], state["elapsed_s"]
        set_rng_states(state["rng"])
        self.rows = rewind_metrics(self.run_dir / "metrics.jsonl", self.step)

    def save_model(self) -> None:
        """The fine-tuned model into the run directory: a LoRA adapter, or a whole native checkpoint."""
        if self.config.method == "lora":
            write = partial(lora.save_adapter, self.model, self.lora_config, tokenizer=self.base.tokenizer,
                            generation=self.base.generation)
        else:
            write = partial(save_native, Checkpoint(self.model.config, self.model.state_dict(),
                                                    self.base.tokenizer, self.base.generation))
        write_model_files(self.run_dir, write)
        if self.train_set.task is not None:
            write_task(self.run_dir, self.train_set.task)


def plot_metrics(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 4.5), layout="tight")
    for ax, metric, name in zip(fig.subplots(1, 2), ("loss", "mean_token_accuracy"), ("loss", "token accuracy")):
        for kind, style in (("train", dict(linewidth=1)), ("valid", dict(marker=".", linestyle="none")),
                            ("full_valid", dict(marker="o"))):
            points = [(r["step"], r[f"{kind}_{metric}"]) for r in rows if f"{kind}_{metric}" in r]
            if points:
                ax.plot(*zip(*points), label=kind.replace("_", " "), **style)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's complete checkpoints, oldest first (what a writer killed mid-checkpoint left is no checkpoint)."""
    folder = run_dir / "checkpoints"
    found = folder.glob("step-*/state.pt") if folder.is_dir() else []
    return sorted(p.parent for p in found if re.fullmatch(r"step-\d{8}", p.parent.name))


def has_checkpoint(run_dir: Path) -> bool:
    return bool(checkpoints(run_dir))


def holds_model(run_dir: Path) -> bool:
    """Whether the run got as far as writing its model (at its end, or when it was stopped)."""
    return (run_dir / "adapter_config.json").is_file() or (run_dir / "config.json").is_file()


def worth_keeping(run_dir: Path) -> bool:
    return has_checkpoint(run_dir) or holds_model(run_dir)


def finetune(config: FinetuneConfig, report: Report = ignore, stop: StopRequest | None = None) -> dict[str, Any]:
    """Fine-tune as `config` says; return a summary. The run directory is a model reference. Progress and messages go
    to `report`; Ctrl-C, SIGTERM or `stop` end the run at the next step with a checkpoint and the model so far
    (stop_reason "interrupted"), which --resume continues exactly."""
    run_dir = Path(config.out_dir)
    stop = stop or StopRequest()
    if config.resume:
        if not (run_dir / SETTINGS_FILE).is_file():
            raise GptsError(f"{run_dir} is not a fine-tuning run (it has no {SETTINGS_FILE}).",
                            "Point --out to the directory of the run to resume.")
        with RunLock(run_dir):
            saved = {k: v for k, v in read_json(run_dir / SETTINGS_FILE).items() if k != "plan"}
            # The run is where it is now (it may have been moved), whatever its settings recorded.
            config = FinetuneConfig(**{**saved, "out_dir": str(run_dir), "resume": True,
                                       "max_steps": config.max_steps})
            tuner = Finetuner(config, report)
            tuner.restore()
            return tuner.run(stop)
    check_writable(run_dir)
    clear_for_new_run(run_dir, SETTINGS_FILE, worth_keeping, report)
    tuner = Finetuner(config, report)  # reads and checks the model and the data before anything is written
    lock = None
    try:
        lock = claim_new_run_dir(run_dir)
        settings = {**dataclasses.asdict(tuner.config), "resume": False, "max_steps": None}
        write_text(run_dir / SETTINGS_FILE, json.dumps({**settings, "plan": dataclasses.asdict(tuner.plan)},
                                                       indent=2) + "\n")
        return tuner.run(stop)
    except BaseException:
        if lock is not None and not worth_keeping(run_dir):  # leave no half-written run
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()
