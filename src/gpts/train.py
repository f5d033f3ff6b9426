"""Pretraining: a corpus and a model preset (or an existing model) in, a trained model out.

    gpts pretrain --data corpus.txt --out runs/mine
    torchrun --nproc-per-node 4 $(which gpts) pretrain --data corpus.txt --out runs/mine

One loop serves one process or many (torchrun + DistributedDataParallel). Each optimizer step trains on a
global batch of `batch_size` random windows of `block_size + 1` tokens drawn by a generator seeded with
(seed, step): every process draws the same windows and trains on its own share of them, so a run does not
depend on how many processes share it, and the data position of a resumed run is simply its step.

The run directory (`out_dir`):
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json
                        the latest weights as a native checkpoint: the run directory is a model reference
    best/               the weights with the lowest validation loss so far (a native checkpoint)
    checkpoint/         what --resume needs: weights, optimizer, step, tokens, clock, RNG states
    train_config.yaml   the resolved settings
    metrics.jsonl       one row per logged step; `val_loss` rows are estimates, `full_val_loss` rows cover
                        the whole validation split
    loss.png, samples.txt
    data/               the token shards, when the corpus was given raw
    .lock               held while a process trains here (gpts.rundir)

Defaults fit the machine: a block size of at most DEFAULT_BLOCK_SIZE tokens, the batch split into as many
micro-batches (grad_accum) as memory needs (gpts.resources), bfloat16 where the processor computes it natively.
Ctrl-C or SIGTERM stops at the next step boundary with a checkpoint that --resume continues exactly; so does
another thread through a StopRequest (gpts.interrupt).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import random
import time
import types
import typing
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
import yaml

from gpts import resources
from gpts.checkpoint import Checkpoint, save_native
from gpts.config import Config
from gpts.errors import GptsError
from gpts.events import Message, Meter, Report, ignore
from gpts.fileio import atomic_path, write_text
from gpts.interrupt import StopRequest, stop_on_signals
from gpts.model import GPT
from gpts.optim import Muon, Optimizers
from gpts.rundir import (RunLock, append_metrics, clear_for_new_run, new_run_dir, rewind_metrics,
                         write_model_files)

if typing.TYPE_CHECKING:
    from gpts.data import PreparedData

DEFAULT_MAX_STEPS = 1000  # when no max_steps, max_tokens or max_time is given: minutes on a laptop CPU
# block_size when none is given and the model's context is longer: a laptop trains SmolLM2-135M at 1,024 tokens
# a sequence (its context is 8,192: 2 MB of activations per token, ~260 GB for a batch of 16).
DEFAULT_BLOCK_SIZE = 1024
MIN_BLOCK_SIZE = 128  # the smallest block_size memory may shrink a default one to
DEFAULT_TOKENIZER = "bpe:8192"  # for a corpus given raw, without --init
SAMPLE_TEMPERATURE = 0.8
SETTINGS_FILE = "train_config.yaml"
STATE_FILE = "state.pt"
# What a run trains on and what it trains: a resumed run keeps its own.
FIXED_ON_RESUME = ("data", "model", "model_config", "init", "tokenizer", "val_fraction", "block_size", "seed")


@dataclass
class TrainConfig:
    """Every setting of `gpts pretrain`: the YAML keys, the --set keys and these field names are the same."""

    # data
    data: list[str] = field(default_factory=list)  # a prepared directory, or sources to prepare ([]: data.py's default)
    tokenizer: str | None = None  # for raw sources: a model reference, bpe:N or char (None: --init's, else bpe:8192)
    val_fraction: float = 0.1  # for raw sources: the share of tokens, from the end, held out
    out_dir: str = "out/pretrain"
    # model
    model: str = "gpt2-nano"  # preset trained from scratch
    model_config: dict[str, Any] = field(default_factory=dict)  # Config overrides, e.g. {n_layer: 2}
    init: str | None = None  # continue pretraining this model reference instead
    resume: bool = False
    seed: int = 1337
    device: str = "auto"  # auto: cuda when available
    # autocast compute dtype (weights and optimizer stay float32): bfloat16, float32, or auto: bfloat16 where the
    # device computes it natively (resources.native_bfloat16), else float32
    dtype: str = "auto"
    compile: bool = False  # torch.compile the model
    # batch: batch_size sequences per optimizer step in all, split over processes, then over grad_accum micro-steps
    batch_size: int = 16
    grad_accum: int | None = None  # None: as many as memory needs (at least 1)
    block_size: int | None = None  # tokens per sequence (None: the model's context, at most DEFAULT_BLOCK_SIZE,
                                   # less when memory needs it)
    # optimizer: AdamW, or Muon on the blocks' weight matrices and AdamW on the rest (optim.py); the same schedule,
    # linear warmup then cosine decay to min_lr, drives both
    optimizer: str = "adamw"
    muon_momentum: float = 0.95
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_decay_steps: int | None = None  # step where min_lr is reached (None: max_steps, or what max_tokens makes)
    weight_decay: float = 0.1  # on 2-D weights (embeddings too, as nanoGPT), not on biases and norms
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0: off
    # stopping: whichever comes first
    max_steps: int | None = None  # None with no max_tokens/max_time: 1000
    max_tokens: int | None = None
    max_time: float | None = None  # seconds of training (summed over resumes), checked at log and eval steps
    target_val_loss: float | None = None  # when set, every evaluation covers the whole validation split
    # reporting
    eval_interval: int = 250
    eval_batches: int = 20  # batches of batch_size sequences in a validation estimate
    log_interval: int = 10
    checkpoint_interval: int = 1000
    sample_tokens: int = 200  # tokens sampled at each evaluation (0: none)
    sample_prompt: str | None = None  # None: the first tokens of the validation split

    def __post_init__(self) -> None:
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_batches", "log_interval",
                     "checkpoint_interval", "block_size", "max_steps", "max_tokens", "max_time", "lr_decay_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GptsError(f"Setting {name}={value} must be positive.", f"Give {name} a value above 0.")
        for name in ("warmup_steps", "min_lr", "weight_decay", "grad_clip", "sample_tokens"):
            if getattr(self, name) < 0:
                raise GptsError(f"Setting {name}={getattr(self, name)} is negative.", f"Give {name} a value >= 0.")
        if self.learning_rate <= 0:
            raise GptsError(f"Setting learning_rate={self.learning_rate} must be positive.", "Try 1e-3.")
        if not 0 < self.val_fraction < 1:
            raise GptsError(f"Setting val_fraction={self.val_fraction} is not between 0 and 1.", "Try 0.1.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and 0 <= self.muon_momentum < 1):
            raise GptsError(f"Settings beta1={self.beta1}, beta2={self.beta2}, muon_momentum={self.muon_momentum} "
                            "must lie in [0, 1).", "Try 0.9, 0.99 and 0.95.")
        if self.optimizer not in ("adamw", "muon"):
            raise GptsError(f"Setting optimizer={self.optimizer!r} is not adamw or muon.", "Use one of those two.")
        if self.dtype not in ("auto", "bfloat16", "float32"):
            raise GptsError(f"Setting dtype={self.dtype!r} is not auto, bfloat16 or float32.", "Use one of those.")

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
        """Settings from a YAML file, then `overrides` on top; when resuming, the run's saved settings underneath."""
        settings = {**(_read_yaml(Path(path)) if path else {}), **(overrides or {})}
        if settings.get("resume") is True:
            settings = _resume_settings(settings)
        return cls.from_dict(settings)

    @classmethod
    def from_dict(cls, settings: dict[str, Any]) -> TrainConfig:
        hints = typing.get_type_hints(cls)
        for key in settings:
            if key not in hints:
                close = difflib.get_close_matches(key, hints, n=1)
                hint = f"Did you mean {close[0]}? " if close else ""
                raise GptsError(f"Unknown setting {key!r}.", f"{hint}Settings: {', '.join(hints)}.")
        return cls(**{key: _coerce(key, value, hints[key]) for key, value in settings.items()})

    def to_yaml(self) -> str:
        return yaml.safe_dump(dataclasses.asdict(self), sort_keys=False, allow_unicode=True)


_KIND_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
               list: "a list of strings", dict: "a mapping of KEY: VALUE"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """A setting from YAML or a flag, checked against its field's type (PyYAML reads 3e-4 as a string)."""
    optional = typing.get_origin(hint) is types.UnionType  # every union here is `X | None`
    kind = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
    kind = typing.get_origin(kind) or kind
    if value is None and optional:
        return None
    scalar = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    try:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and scalar and float(value).is_integer():
            return int(float(value))
        if kind is float and scalar:
            return float(value)
        if kind is str and (scalar or isinstance(value, Path)):
            return str(value)
        if kind is list:
            items = [value] if isinstance(value, (str, Path)) else value
            if isinstance(items, (list, tuple)) and all(isinstance(i, (str, Path)) for i in items):
                return [str(i) for i in items]
        if kind is dict and isinstance(value, dict):
            return value
    except (ValueError, OverflowError):
        pass
    raise GptsError(f"Setting {key}={value!r} is not {_KIND_NAMES[kind]}.", f"Give {key} {_KIND_NAMES[kind]}.")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise GptsError(f"Cannot read the settings file {path}: {e.strerror}.", "Check the path.") from e
    try:
        settings = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        raise GptsError(f"{path}{where} is not valid YAML: {getattr(e, 'problem', None) or e}.",
                        "Fix the YAML there (settings are KEY: VALUE lines).") from e
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise GptsError(f"{path} holds a {type(settings).__name__}, not settings.", "Write KEY: VALUE lines.")
    return settings


def _resume_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The run's saved settings, updated by the given ones (which may not change what the run trains)."""
    out_dir = Path(settings.get("out_dir") or TrainConfig.out_dir)
    saved_file = out_dir / SETTINGS_FILE
    if not saved_file.is_file():
        raise GptsError(f"Cannot resume {out_dir}: it is not a training run (no {SETTINGS_FILE}).",
                        "Check --out, or leave out --resume to start a new run.")
    saved = TrainConfig.from_dict(_read_yaml(saved_file))
    given = TrainConfig.from_dict({**dataclasses.asdict(saved), **settings})
    changed = [k for k in FIXED_ON_RESUME if k in settings and getattr(given, k) != getattr(saved, k)]
    if changed:
        raise GptsError(f"Cannot resume {out_dir} with another {', '.join(changed)}: the run was started with "
                        + ", ".join(f"{k}={getattr(saved, k)!r}" for k in changed) + ".",
                        "Leave those settings out when resuming, or start a new run with another --out.")
    return {**dataclasses.asdict(saved), **settings}


# -- processes ----------------------------------------------------------------------------------------


@dataclass
class Dist:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool  # this module started the process group, so it ends it

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            tdist.all_reduce(t)
        return t

    def any(self, flag: bool) -> bool:
        """True when `flag` is true in any process: decisions based on clocks must be the same everywhere."""
        if self.world == 1:
            return flag
        t = torch.tensor(float(flag), device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            tdist.barrier()


def start_processes(device: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise GptsError(f"Unknown device {device!r}.", "Use auto, cpu, cuda or cuda:N.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GptsError("device=cuda was asked for, but no CUDA GPU is available.", "Use device=cpu or auto.")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    owns_group = world > 1 and not tdist.is_initialized()
    if owns_group:
        tdist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev, owns_group)


# -- batches and the schedule -----------------------------------------------------------------------------


def window_starts(seed: int, stream: int, index: int, rows: int, n_tokens: int, block_size: int) -> np.ndarray:
    """Random window starts, a function of (seed, stream, index) only: stream 0 trains, 1 estimates validation."""
    return np.random.default_rng([seed, stream, index]).integers(0, n_tokens - block_size, size=rows)


def windows(tokens: np.ndarray, starts: np.ndarray, block_size: int,
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, block_size): the tokens at starts..starts+block_size, and one further on."""
    rows = torch.from_numpy(tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64))
    if device.type == "cuda":
        rows = rows.pin_memory().to(device, non_blocking=True)
    return rows[:, :-1], rows[:, 1:]


class Schedule(typing.Protocol):
    learning_rate: float
    min_lr: float
    warmup_steps: int
    lr_decay_steps: int | None


def learning_rate(step: int, config: Schedule) -> float:
    """For the update from step to step + 1: linear warmup, then cosine decay to min_lr at lr_decay_steps."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    if config.lr_decay_steps is None:
        return config.learning_rate
    if step >= config.lr_decay_steps:
        return config.min_lr
    progress = (step - config.warmup_steps) / (config.lr_decay_steps - config.warmup_steps)
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (config.learning_rate - config.min_lr)


def make_optimizer(model: GPT, config: TrainConfig) -> torch.optim.Optimizer | Optimizers:
    """AdamW on everything, or Muon on the blocks' weight matrices and AdamW on embeddings, head, norms, biases."""
    named = list(model.named_parameters())
    if config.optimizer == "muon":
        hidden = [p for n, p in named if p.dim() == 2 and n.startswith("blocks.")]
        named = [(n, p) for n, p in named if not (p.dim() == 2 and n.startswith("blocks."))]
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    adamw = torch.optim.AdamW(
        [{"params": [p for _, p in named if p.dim() >= 2], "weight_decay": config.weight_decay},
         {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0}],  # biases and norm gains
        lr=config.learning_rate, betas=(config.beta1, config.beta2), fused=fused)
    if config.optimizer == "adamw":
        return adamw
    # Newton-Schulz in the run's compute dtype: bfloat16 where it is native, float32 where bfloat16 is ~40x slower.
    ns_dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    muon = Muon(hidden, lr=config.learning_rate, weight_decay=config.weight_decay, momentum=config.muon_momentum,
                ns_dtype=ns_dtype)
    return Optimizers(muon, adamw)


# -- setup: everything checked before the run directory exists ---------------------------------------------


@dataclass
class Setup:
    config: TrainConfig  # resolved: block_size, grad_accum, dtype, tokenizer, max_steps, lr_decay_steps filled in
    data: PreparedData
    model_config: Config
    weights: dict[str, torch.Tensor] | None  # --init's; None: fresh (or from the checkpoint when resuming)
    generation: dict[str, Any]  # generation_config.json of the saved models
    resume_state: dict[str, Any] | None
    lock: RunLock | None  # process 0's hold on the run directory


def prepared_dir(config: TrainConfig) -> Path | None:
    """The prepared data directory the run reads: the one given, or the run's own copy (None: not made yet)."""
    from gpts.data import is_prepared

    if len(config.data) == 1 and is_prepared(config.data[0]):
        return Path(config.data[0])
    own = Path(config.out_dir) / "data"
    return own if is_prepared(own) else None


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoint" / STATE_FILE).is_file()


def worth_keeping(run_dir: Path) -> bool:
    """A checkpoint, or a model: the best one (saved at evaluations, which come before the first checkpoint)."""
    return has_checkpoint(run_dir) or (run_dir / "best").exists() or (run_dir / "config.json").is_file()


def _open_run(config: TrainConfig, dist: Dist, report: Report) -> tuple[dict[str, Any] | None, RunLock | None]:
    """Process 0's claim on the run directory: the checkpoint to resume (and the lock, held from here on), or a
    clear way for a new run. The other processes only read what process 0 has checked."""
    run_dir = Path(config.out_dir)
    if not config.resume:
        if dist.main:
            clear_for_new_run(run_dir, SETTINGS_FILE, worth_keeping, report)
        return None, None
    lock = RunLock(run_dir).acquire() if dist.main else None
    try:
        if not has_checkpoint(run_dir):
            raise GptsError(f"Cannot resume {run_dir}: it has no checkpoint yet (it stopped before its first one).",
                            "Run the same command without --resume: it starts the run anew in its place.")
        return torch.load(run_dir / "checkpoint" / STATE_FILE, map_location="cpu", weights_only=True), lock
    except BaseException:
        if lock is not None:
            lock.release()
        raise
def setup(config: TrainConfig, dist: Dist, report: Report) -> Setup:
    """Check everything, prepare the data, and (process 0, new runs) create the run directory in one move."""
    from gpts.data import PreparedData, prepare

    run_dir = Path(config.out_dir)
    state, lock = _open_run(config, dist, report)
    try:
        init = None
        if state is not None:
            shape = Config.from_dict(state["model_config"])
        elif config.init:
            from gpts.registry import read_checkpoint

            init = read_checkpoint(config.init)
            if config.model_config:
                raise GptsError(f"model_config cannot reshape the model given with --init ({config.init}).",
                                "Drop model_config, or train a preset from scratch instead of --init.")
            shape = init.config
        else:
            unknown = set(config.model_config) - {f.name for f in dataclasses.fields(Config)}
            if unknown:
                raise GptsError(f"Unknown model_config key(s): {', '.join(sorted(unknown))}.",
                                f"Model settings: {', '.join(f.name for f in dataclasses.fields(Config))}.")
            shape = Config.from_name(config.model, **config.model_config)
        if config.block_size is not None and config.block_size > shape.context_length:
            raise GptsError(f"block_size={config.block_size} is longer than the model's context "
                            f"({shape.context_length}).", f"Use block_size <= {shape.context_length}.")
        if config.batch_size % (dist.world * (config.grad_accum or 1)):
            raise GptsError(f"batch_size={config.batch_size} does not split evenly over {dist.world} process(es) "
                            f"x grad_accum={config.grad_accum or 1}.",
                            f"Use a batch_size that is a multiple of {dist.world * (config.grad_accum or 1)}.")
        # The vocabulary is the data's, unless the model (or a model_config override) fixes it.
        vocab_size = shape.vocab_size if init or state else config.model_config.get("vocab_size")

        if dist.main and not config.resume:
            with new_run_dir(run_dir) as staging:
                lock = RunLock(staging).acquire()  # held as the directory moves into place
                source = prepared_dir(config)
                if source is None:
                    tokenizer = config.tokenizer or config.init or DEFAULT_TOKENIZER
                    data = prepare(config.data, staging / "data", tokenizer=tokenizer,
                                   val_fraction=config.val_fraction, report=report)
                else:
                    data = PreparedData.open(source)
                config = resolve(config, dataclasses.replace(shape, vocab_size=vocab_size or data.vocab_size), dist,
                                 report, data)
                check_data(data, config, vocab_size)
                (staging / SETTINGS_FILE).write_text(config.to_yaml())
        dist.barrier()  # the other processes read what process 0 prepared, and train as it decided
        if config.resume:
            config = resolve(config, shape, dist, report if dist.main else ignore)  # the run's own sizes
        elif not dist.main:
            config = TrainConfig.from_dict(_read_yaml(run_dir / SETTINGS_FILE))
        source = prepared_dir(config)
        if source is None:
            raise GptsError(f"The prepared data of the run {run_dir} is gone (neither {config.data} nor "
                            f"{run_dir / 'data'} holds it).", "Put it back, or start a new run.")
        data = PreparedData.open(source)
        check_data(data, config, vocab_size)
        if config.resume and dist.main:
            write_text(run_dir / SETTINGS_FILE, config.to_yaml())
    except BaseException:
        if lock is not None:
            lock.release()
        raise

    if state is not None:
        model_config, generation = shape, state["generation"]
    elif init is not None:
        model_config, generation = init.config, init.generation
    else:
        model_config = dataclasses.replace(shape, vocab_size=vocab_size or data.vocab_size,
                                           context_length=config.block_size)
        generation = {"temperature": SAMPLE_TEMPERATURE}
    return Setup(config, data, model_config, init.state_dict if init else None, generation, state, lock)


def resolve(config: TrainConfig, shape: Config, dist: Dist, report: Report,
            data: PreparedData | None = None) -> TrainConfig:
    """The settings left to the machine, the data and each other, filled in: block_size and grad_accum
    (fit_batches), the compute dtype, max_steps and lr_decay_steps, the tokenizer."""
    data_tokens = min(len(data.train), len(data.val)) - 1 if data is not None else None
    block_size, grad_accum = fit_batches(shape, config, dist, report, data_tokens)
    max_steps, decay = config.max_steps, config.lr_decay_steps
    if max_steps is None and config.max_tokens is None and config.max_time is None:
        max_steps = DEFAULT_MAX_STEPS
    if decay is None and (max_steps or config.max_tokens):
        decay = max_steps or math.ceil(config.max_tokens / (config.batch_size * block_size))
    config = dataclasses.replace(config, block_size=block_size, grad_accum=grad_accum, max_steps=max_steps,
                                 lr_decay_steps=decay, dtype=resources.resolve_dtype(config.dtype, dist.device),
                                 tokenizer=config.tokenizer or config.init or DEFAULT_TOKENIZER)
    if warning := warmup_warning(config.max_steps, config, "Lower warmup_steps to train at the full rate."):
        report(Message(warning, level="warning"))
    return config


def fit_batches(shape: Config, config: TrainConfig, dist: Dist, report: Report,
                data_tokens: int | None = None) -> tuple[int, int]:
    """block_size and grad_accum: those set, else the longest block (up to DEFAULT_BLOCK_SIZE, and a power of two
    that leaves each split of `data_tokens` at least one window) and the fewest micro-batches whose activations fit
    the memory free now; what was chosen is said."""
    if config.block_size is not None and config.grad_accum is not None:
        return config.block_size, config.grad_accum
    rows = config.batch_size // dist.world  # sequences per step in this process
    free = resources.available_memory(dist.device)
    state = resources.state_bytes(shape)
    per_token = resources.activation_bytes_per_token(shape)
    accums = [config.grad_accum] if config.grad_accum else [a for a in range(1, rows + 1) if rows % a == 0]
    block = config.block_size or min(shape.context_length, DEFAULT_BLOCK_SIZE)
    data_note = ""
    if config.block_size is None and data_tokens is not None and data_tokens < block:
        block = 1 << (max(data_tokens, 1).bit_length() - 1)  # the largest power of two that leaves one window
        data_note = f", and a split of the data holds {data_tokens + 1:,}"

    def need(accum: int) -> float:
        return state + rows // accum * block * per_token

    while True:
        accum = next((a for a in accums if need(a) <= free), None)
        if accum is not None or config.block_size is not None or block // 2 < MIN_BLOCK_SIZE:
            break
        block //= 2
    fits, accum = accum is not None, accum or accums[-1]
    chosen = []
    if config.block_size is None and block < shape.context_length:
        chosen.append(f"block_size {block} (the model's context is {shape.context_length:,}{data_note})")
    if config.grad_accum is None and accum > 1:
        chosen.append(f"grad_accum {accum} (micro-batches of {rows // accum} of the {config.batch_size} sequences "
                      "a step)")
    sizes = f"about {resources.gigabytes(need(accum))} of the {resources.gigabytes(free)} this run may use"
    if not fits:
        report(Message(f"This run may not fit in memory: {sizes}. Lower block_size or batch_size, or raise "
                       "grad_accum.", level="warning"))
    elif chosen:
        report(Message(f"Chose {' and '.join(chosen)}: {sizes}. Set block_size or grad_accum to choose otherwise."))
    return block, accum


def warmup_warning(stops_at: int | None, schedule: Schedule, fix: str) -> str | None:
    """What to say when a run stops before its learning rate has warmed up (None when it does not)."""
    if stops_at is None or stops_at >= schedule.warmup_steps:
        return None
    reached = learning_rate(stops_at - 1, schedule)
    return (f"The run stops at step {stops_at:,}, before its {schedule.warmup_steps:,} warmup steps end: the learning "
            f"rate climbs only to {reached:.3g} of {schedule.learning_rate:g}. {fix}")


def check_data(data: PreparedData, config: TrainConfig, vocab_size: int | None) -> None:
    need = config.block_size + 1
    for split in ("train", "val"):
        n = len(getattr(data, split))
        if n < need:
            raise GptsError(f"The {split} split of the corpus has {n} tokens, fewer than one window of "
                            f"block_size + 1 = {need}.",
                            "Give more text, a smaller block_size, or (for the validation split) a larger "
                            "val_fraction.")
    if vocab_size is not None and data.vocab_size > vocab_size:
        raise GptsError(f"The data's tokenizer has {data.vocab_size} tokens, more than the model's vocabulary "
                        f"({vocab_size}).",
                        "Prepare the data with the model's tokenizer (--tokenizer MODEL), or a larger vocab_size.")
    if config.sample_prompt is not None and config.sample_tokens and not data.tokenizer.encode(config.sample_prompt):
        raise GptsError(f"sample_prompt={config.sample_prompt!r} is no tokens in this vocabulary.",
                        "Use text made of the corpus's characters.")


# -- reports ---------------------------------------------------------------------------------------------------


def plot_losses(rows: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(8, 4.5), layout="tight")
    ax = fig.add_subplot()
    train = [(r["step"], r["train_loss"]) for r in rows if "train_loss" in r]
    val = [(r["step"], r.get("full_val_loss", r.get("val_loss"))) for r in rows
           if "val_loss" in r or "full_val_loss" in r]
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val), label="validation", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def rng_states() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos,
                                                          has_gauss, gauss],
              "python": list(random.getstate())}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


# -- the loop -------------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, s: Setup, dist: Dist, report: Report):
        c = self.config = s.config
        self.dist = dist
        self.report = report if dist.main else ignore  # one process speaks for all
        self.data, self.generation, self.run_dir = s.data, s.generation, Path(c.out_dir)
        self.train_tokens, self.val_tokens = s.data.train, s.data.val
        device = dist.device

        torch.manual_seed(c.seed)
        model = GPT.from_state_dict(s.model_config, s.weights) if s.weights else GPT(s.model_config)
        self.model = model.to(device)
        self.optimizer = make_optimizer(model, c)
        self.autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if c.dtype == "bfloat16"
                         else nullcontext())
        self.forward = torch.compile(model) if c.compile else model  # also used to evaluate
        self.ddp = None
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [device.index] if device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.forward, device_ids=device_ids)

        self.micro_rows = c.batch_size // dist.world // c.grad_accum
        self.tokens_per_step = c.batch_size * c.block_size
        self.step = self.tokens = 0
        self.clock_s = 0.0  # training time of earlier sessions of this run
        self.best_val = math.inf
        self.target_reached_s: float | None = None
        self.rows: list[dict[str, Any]] = []
        if s.resume_state is not None:
            self.restore(s.resume_state)
        if c.sample_prompt is None:
            self.prompt = self.val_tokens[:min(16, c.block_size // 2)].astype(np.int64).tolist()
        else:
            self.prompt = self.data.tokenizer.encode(c.sample_prompt)

    # -- state ----------------------------------------------------------------------------------------------

    def restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.tokens, self.clock_s = state["step"], state["tokens"], state["elapsed_s"]
        self.best_val, self.target_reached_s = state["best_val_loss"], state["target_reached_s"]
        set_rng_states(state["rng"])
        if self.dist.main:
            self.rows = rewind_metrics(self.run_dir / "metrics.jsonl", self.step)

    def checkpoint(self) -> None:
        """The latest model into the run directory, then everything --resume needs into checkpoint/."""
        write_model_files(self.run_dir, partial(save_native, self.native()))
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "tokens": self.tokens, "elapsed_s": self.elapsed(), "best_val_loss": self.best_val,
                 "target_reached_s": self.target_reached_s, "model_config": self.model.config.to_dict(),
                 "generation": self.generation, "rng": rng_states()}
        with atomic_path(self.run_dir / "checkpoint" / STATE_FILE) as tmp:  # one file, replaced in one move
            torch.save(state, tmp)

    def native(self) -> Checkpoint:
        return Checkpoint(self.model.config, self.model.state_dict(), self.data.tokenizer, self.generation)

    def elapsed(self) -> float:
        return self.clock_s + time.perf_counter() - self.started

    # -- steps ----------------------------------------------------------------------------------------------

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step on the global batch; the loss and gradient norm stay on the device (no sync)."""
        c, dist = self.config, self.dist
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, c)
        starts = window_starts(c.seed, 0, self.step, c.batch_size, len(self.train_tokens), c.block_size)
        mine = starts[dist.rank * self.micro_rows * c.grad_accum:]
        loss_sum = torch.zeros((), device=dist.device)
        for micro in range(c.grad_accum):
            x, y = windows(self.train_tokens, mine[micro * self.micro_rows:(micro + 1) * self.micro_rows],
                           c.block_size, dist.device)
            last = micro == c.grad_accum - 1
            # DDP averages gradients across processes once, in the last micro-step's backward.
            with nullcontext() if self.ddp is None or last else self.ddp.no_sync():
                with self.autocast:
                    logits = (self.ddp or self.forward)(x)
                    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
                (loss / c.grad_accum).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip) if c.grad_clip else None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.tokens_per_step
        return loss_sum / c.grad_accum, grad_norm

    @torch.inference_mode()
    def val_loss(self, starts: np.ndarray) -> float:
        """Mean loss over the validation windows at `starts`, shared out over the processes."""
        dist, block_size = self.dist, self.config.block_size
        totals = torch.zeros(2, dtype=torch.float64, device=dist.device)  # loss sum, token count
        mine = np.array_split(starts, dist.world)[dist.rank]
        for i in range(0, len(mine), self.micro_rows):
            x, y = windows(self.val_tokens, mine[i:i + self.micro_rows], block_size, dist.device)
            with self.autocast:
                logits = self.forward(x)
            totals[0] += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum")
            totals[1] += y.numel()
        dist.all_sum(totals)
        return (totals[0] / totals[1]).item()

    def evaluate(self, full: bool) -> tuple[float, bool]:
        """The validation loss, and whether it covers the whole split: every block_size window, without overlap."""
        c = self.config
        n_windows = (len(self.val_tokens) - 1) // c.block_size
        if full or c.eval_batches * c.batch_size >= n_windows:  # an estimate that big costs more than the truth
            return self.val_loss(np.arange(n_windows) * c.block_size), True
        starts = np.concatenate([window_starts(c.seed, 1, i, c.batch_size, len(self.val_tokens), c.block_size)
                                 for i in range(c.eval_batches)])
        return self.val_loss(starts), False

    def sample(self) -> str:
        from gpts.engine import generate

        prompt = self.prompt[-max(1, self.config.block_size // 2):]
        new_tokens = min(self.config.sample_tokens, self.model.config.context_length - len(prompt))
        if new_tokens < 1:
            return self.data.tokenizer.decode(prompt)
        [completion] = generate(self.model, prompt, tokenizer=self.data.tokenizer, max_new_tokens=new_tokens,
                                temperature=SAMPLE_TEMPERATURE, seed=self.config.seed)
        return self.data.tokenizer.decode(prompt) + completion.text

    # -- the run --------------------------------------------------------------------------------------------

    def limit_reached(self, check_clock: bool) -> str | None:
        c = self.config
        if c.max_steps is not None and self.step >= c.max_steps:
            return "max_steps"
        if c.max_tokens is not None and self.tokens >= c.max_tokens:
            return "max_tokens"
        if check_clock and c.max_time is not None and self.dist.any(self.elapsed() >= c.max_time):
            return "max_time"
        return None

    def interrupted(self, stop: StopRequest) -> bool:
        """Whether any process was asked to stop: all of them then stop after the same step."""
        return self.dist.any(stop.is_set()) if self.dist.world > 1 else stop.is_set()

    def run(self, setup_s: float, stop: StopRequest) -> dict[str, Any]:
        c, dist = self.config, self.dist
        self.started = time.perf_counter()
        reason = self.limit_reached(check_clock=True) if self.step else None  # a resumed run may have no time left
        if reason:
            raise GptsError(f"The run in {self.run_dir} is already at its {reason} (step {self.step}).",
                            "Raise --max-steps, --max-tokens or --max-time to train further.")
        n_params = self.model.num_params()
        self.report(Message(f"Training {n_params / 1e6:.2f}M parameters on {len(self.train_tokens):,} tokens "
                            f"({dist.world} process(es), {dist.device}, {c.dtype}) into {self.run_dir}"))
        total = c.max_steps or (math.ceil(c.max_tokens / self.tokens_per_step) if c.max_tokens else None)
        meter = Meter(self.report, "Training", total, "steps", completed=self.step)
        last_log, row = (time.perf_counter(), self.tokens), {}
        with stop_on_signals(stop, self.report):
            while reason is None:
                loss, grad_norm = self.train_step()
                at_log, at_eval = self.step % c.log_interval == 0, self.step % c.eval_interval == 0
                reason = self.limit_reached(check_clock=at_log or at_eval)
                if reason is None and self.interrupted(stop):
                    reason = "interrupted"
                at_checkpoint = self.step % c.checkpoint_interval == 0
                if not (at_log or at_eval or at_checkpoint or reason):
                    meter.update(self.step)
                    continue  # nothing leaves the device: no sync
                if at_log or at_eval or reason != "interrupted":
                    # No row at an interrupted step that is not a logging step: the resumed run must log exactly
                    # the rows of an uninterrupted one, and an interruption is no reason for a full evaluation.
                    speed = (self.tokens - last_log[1]) / (time.perf_counter() - last_log[0])
                    full = reason not in (None, "interrupted")
                    row, reason = self.log_step(loss, grad_norm, at_eval or full, reason)
                    meter.update(self.step, loss=round(row["train_loss"], 4), tokens_per_s=round(speed))
                    last_log = (time.perf_counter(), self.tokens)
                if dist.main and (at_checkpoint or reason):
                    self.checkpoint()
        meter.done()
        if reason == "interrupted":
            self.report(Message(f"Stopped at step {self.step:,} with a checkpoint, which resuming the run continues "
                                "from."))
        return {"run_dir": str(self.run_dir), "stop_reason": reason, "steps": self.step, "tokens": self.tokens,
                "parameters": n_params, "elapsed_s": round(self.elapsed(), 3), "setup_s": round(setup_s, 3),
                "final_val_loss": row.get("full_val_loss"), "best_val_loss": self.best_val,
                "target_val_loss": c.target_val_loss, "target_reached_s": self.target_reached_s}

    def log_step(self, loss: torch.Tensor, grad_norm: torch.Tensor | None, evaluate: bool,
                 reason: str | None) -> tuple[dict[str, Any], str | None]:
        """The metrics row of this step, with an evaluation when due (the last one covering the whole split)."""
        c, dist = self.config, self.dist
        row = {"step": self.step, "tokens": self.tokens, "elapsed_s": 0.0, "lr": learning_rate(self.step - 1, c),
               "train_loss": dist.all_sum(loss).item() / dist.world}
        if grad_norm is not None:
            row["grad_norm"] = grad_norm.item()
        if evaluate:
            val, full = self.evaluate(full=reason not in (None, "interrupted") or c.target_val_loss is not None)
            row["full_val_loss" if full else "val_loss"] = val
            if full and c.target_val_loss is not None and val <= c.target_val_loss:
                self.target_reached_s = self.target_reached_s or self.elapsed()
                reason = reason or "target_val_loss"
        row["elapsed_s"] = round(self.elapsed(), 3)
        if dist.main:
            self.record(row)
        if evaluate:
            if dist.main:
                self.show_evaluation(row, val)
            if val < self.best_val:
                self.best_val = val
                if dist.main:
                    save_native(self.native(), self.run_dir / "best")
        return row, reason

    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        append_metrics(self.run_dir / "metrics.jsonl", row)

    def show_evaluation(self, row: dict[str, Any], val: float) -> None:
        kind = "full validation" if "full_val_loss" in row else "validation"
        self.report(Message(f"step {row['step']}: train loss {row['train_loss']:.4f}, {kind} loss {val:.4f} "
                            f"({row['elapsed_s']:.1f} s)"))
        plot_losses(self.rows, self.run_dir / "loss.png")
        if self.config.sample_tokens:
            text = self.sample()
            with open(self.run_dir / "samples.txt", "a") as f:
                f.write(f"--- step {row['step']} ---\n{text}\n\n")
            self.report(Message(text, level="sample"))


def pretrain(config: TrainConfig, report: Report = ignore, stop: StopRequest | None = None) -> dict[str, Any]:
    """Train as `config` says; return a summary (steps, tokens, seconds, final full validation loss, stop_reason).
    Progress and messages go to `report`. Ctrl-C, SIGTERM or `stop` end the run at the next step boundary with a
    checkpoint (stop_reason "interrupted"); --resume continues it exactly."""
    started = time.perf_counter()
    dist = start_processes(config.device)
    lock = None
    try:
        s = setup(config, dist, report)
        lock = s.lock
        trainer = Trainer(s, dist, report)
        summary = trainer.run(setup_s=time.perf_counter() - started, stop=stop or StopRequest())
        # gloo aborts ("terminate called without an active exception") when one process tears its group down
        # while another is still writing the final checkpoint; leave together.
        dist.barrier()
        return summary
    finally:
        if lock is not None:
            lock.release()
        if dist.owns_group:
            tdist.destroy_process_group()
