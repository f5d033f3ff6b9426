"""The speedrun: character-level Shakespeare to a full validation loss of 1.88, against a transformers peer.

    .venv/bin/python bench/speedrun.py [--data ../shared/data/tinyshakespeare.txt] [--skip-peer] [--out RUN_DIR]

- gpts: `gpts pretrain --config bench/speedrun.yaml --data DATA --out RUN_DIR` (the whole speedrun: data
  preparation, model, training, evaluations, checkpoints) in a subprocess, timed from process start to exit.
  The run stops once its full validation loss is at or below the YAML's target_val_loss.
- peer: a plain training loop over transformers' GPT2LMHeadModel with nanoGPT's documented CPU baseline
  (4 layers, 4 heads, 128 wide, block 64, batch 12, 2000 iterations, lr 1e-3 cosine to 1e-4 after 100 warmup
  steps, beta2 0.99, weight decay 0.1, clip 1.0, no dropout, float32), in a subprocess of this script, timed
  the same way. Like nanoGPT's README command (--eval_iters=20) it estimates the validation loss on 20 random
  batches every 250 iterations; then it measures the full validation loss once, at the end.

Both sides use nanoGPT's shakespeare_char data: the sorted characters of the text as the vocabulary, the first
90 % for training and the last 10 % for validation. "Full validation loss" is the mean loss over every
non-overlapping block_size window of the validation split.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
RECIPE = BENCH / "speedrun.yaml"
DEFAULT_DATA = BENCH.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def gpts_command() -> str:
    # The console script next to this interpreter, so that the bench runs the gpts it was started with.
    script = Path(sys.executable).with_name("gpts")
    found = str(script) if script.is_file() else shutil.which("gpts")
    if found is None:
        sys.exit("The gpts command was not found; install the package (pip install -e .) or activate its venv.")
    return found


def run_gpts(data: Path, run_dir: Path) -> dict:
    command = [gpts_command(), "pretrain", "--config", str(RECIPE), "--data", str(data), "--out", str(run_dir)]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command)
    wall_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"gpts pretrain failed (exit status {done.returncode}).")
    target = yaml.safe_load(RECIPE.read_text())["target_val_loss"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "full_val_loss" in r]
    hit = next((r for r in evaluated if r["full_val_loss"] <= target), None)
    return {"wall_s": wall_s, "final_val_loss": evaluated[-1]["full_val_loss"], "steps": rows[-1]["step"],
            "target": target, "target_step": hit and hit["step"], "target_train_s": hit and hit["elapsed_s"]}


def run_peer(data: Path) -> dict:
    command = [sys.executable, __file__, "--peer-only", "--data", str(data)]
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    wall_s = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"The transformers peer failed (exit status {done.returncode}).")
    return {"wall_s": wall_s, **json.loads(done.stdout.splitlines()[-1])}


def peer(data: Path) -> dict:
    """nanoGPT's CPU baseline on transformers' GPT2LMHeadModel; prints progress to stderr, returns the results."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    block_size, batch_size, max_iters = 64, 12, 2000
    lr, min_lr, warmup_iters = 1e-3, 1e-4, 100
    eval_interval, eval_iters = 250, 20

    text = data.read_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    tokens = torch.from_numpy(np.array([stoi[c] for c in text], dtype=np.int64))
    n_train = int(0.9 * len(tokens))
    train, val = tokens[:n_train], tokens[n_train:]

    def batch(split: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(len(split) - block_size, (rows,))
        index = starts[:, None] + torch.arange(block_size)
        return split[index], split[index + 1]

    def get_lr(it: int) -> float:  # nanoGPT's schedule
        if it < warmup_iters:
            return lr * (it + 1) / (warmup_iters + 1)
        ratio = (it - warmup_iters) / (max_iters - warmup_iters)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    torch.manual_seed(1337)
    config = GPT2Config(vocab_size=len(chars), n_positions=block_size, n_layer=4, n_head=4, n_embd=128,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    model = GPT2LMHeadModel(config)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": 0.1}, {"params": others, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.99))

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x).logits
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())

    @torch.inference_mode()
    def val_estimate() -> float:
        model.eval()
        loss = sum(loss_of(*batch(val, batch_size)).item() for _ in range(eval_iters)) / eval_iters
        model.train()
        return loss

    @torch.inference_mode()
    def full_val_loss() -> float:
        model.eval()
        n = (len(val) - 1) // block_size
        x, y = val[:n * block_size].view(n, block_size), val[1:n * block_size + 1].view(n, block_size)
        total = sum(loss_of(x[i:i + 256], y[i:i + 256]).item() * len(x[i:i + 256]) for i in range(0, n, 256))
        return total / n

    started = time.perf_counter()
    estimate = math.nan
    for it in range(max_iters):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it)
        loss = loss_of(*batch(train, batch_size))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (it + 1) % eval_interval == 0:
            estimate = val_estimate()
            print(f"peer step {it + 1}: train loss {loss.item():.4f}, val estimate {estimate:.4f} "
                  f"({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
    return {"steps": max_iters, "val_estimate": estimate, "final_val_loss": full_val_loss(),
            "train_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tinyshakespeare.txt (default: %(default)s)")
    parser.add_argument("--skip-peer", action="store_true", help="Run only the gpts speedrun.")
    parser.add_argument("--out", type=Path, help="Keep the gpts run here (default: a temporary directory).")
    parser.add_argument("--peer-only", action="store_true", help="Run only the peer and print its result as JSON "
                                                                 "(what the bench runs in its subprocess).")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"The corpus {args.data} does not exist; download tinyshakespeare.txt "
                     "(https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt) "
                     "and pass --data PATH.")
    if args.peer_only:
        print(json.dumps(peer(args.data)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        ours = run_gpts(args.data, args.out or Path(tmp) / "run")
    theirs = None if args.skip_peer else run_peer(args.data)

    reached = (f"{ours['target']} at step {ours['target_step']} after {ours['target_train_s']:.1f} s of training"
               if ours["target_step"] else f"NOT reached ({ours['target']})")
    print(f"\ngpts speedrun: {ours['wall_s']:.1f} s end to end, {ours['steps']} steps, full val loss "
          f"{ours['final_val_loss']:.4f}; target {reached}")
    if theirs:
        print(f"transformers peer: {theirs['wall_s']:.1f} s end to end ({theirs['train_s']:.1f} s training), "
              f"{theirs['steps']} steps, full val loss {theirs['final_val_loss']:.4f} "
              f"(val estimate {theirs['val_estimate']:.4f})")
        print(f"ratio: gpts reaches its target in {theirs['wall_s'] / ours['wall_s']:.2f}x less time than the peer's run")


if __name__ == "__main__":
    main()
