"""Fine-tuning, shown and timed: the bundled SmolLM2-135M-Instruct learns the sentiment of product reviews.

    .venv/bin/python bench/finetune.py [--n 600] [--epochs 1] [--skip-peer] [--out DIR]

1. Builds the task deterministically (bench/reviews.py: `n` reviews, a quarter held out, never trained on).
2. Evaluates the bundled model on the held-out reviews zero-shot (`gpts eval classify`'s prompt and scoring).
3. LoRA-fine-tunes it (`gpts finetune --method lora`, rank 8, every projection, batch 8, lr 1e-3, dtype auto:
   bfloat16 autocast where the processor computes it natively, else float32).
4. Evaluates the fine-tuned model the same way and prints both reports side by side (the goal: macro-F1 >= 0.9).
5. Times LoRA training steps of gpts against transformers + peft on the same weights (the bundled GGUF exported
   to a Hugging Face directory), the same tokenized batches, rank, alpha, targets, optimizer and compute dtype, in
   the same run, and prints training tokens/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reviews  # noqa: E402

import gpts  # noqa: E402
from gpts.evaluate import classify, read_examples  # noqa: E402
from gpts.finetune import FinetuneConfig, Finetuner, finetune, padded  # noqa: E402
from gpts.resources import resolve_dtype  # noqa: E402

RANK, ALPHA, BATCH, LR = 8, 16.0, 8, 1e-3
TIMED_STEPS, WARMUP_STEPS = 20, 2


def evaluate(model_ref: str, test: Path) -> dict:
    examples = [row for _, row in read_examples(test, {"text": str, "label": str})]
    return classify(gpts.load(model_ref), examples, labels=reviews.LABELS).metrics


def side_by_side(before: dict, after: dict) -> Table:
    table = Table("held-out metric", "zero-shot", "after LoRA", title="SmolLM2-135M-Instruct on review sentiment")
    rows = [("accuracy", lambda m: m["accuracy"])]
    rows += [(f"{avg} {k}", lambda m, a=avg, k=k: m[a][k]) for avg in ("macro", "micro", "weighted")
             for k in ("precision", "recall", "f1")]
    rows += [(f"{label} f1", lambda m, label=label: m["per_class"][label]["f1"]) for label in reviews.LABELS]
    for name, get in rows:
        table.add_row(name, f"{get(before):.3f}", f"{get(after):.3f}")
    return table


def batches(tuner: Finetuner, n: int) -> list:
    examples = tuner.train_set.examples
    return [examples[i * BATCH:(i + 1) * BATCH] for i in range(n)]


def time_gpts(train: Path, out: Path) -> tuple[float, list]:
    config = FinetuneConfig(model="default", data=str(train), out_dir=str(out), lora_rank=RANK, lora_alpha=ALPHA,
                            batch_size=BATCH, learning_rate=LR, n_epochs=1)
    tuner = Finetuner(config)
    work = batches(tuner, WARMUP_STEPS + TIMED_STEPS)
    for batch in work[:WARMUP_STEPS]:
        tuner.train_step(batch)
    start = time.perf_counter()
    for batch in work[WARMUP_STEPS:]:
        tuner.train_step(batch)
    seconds = time.perf_counter() - start
    return sum(len(ids) for b in work[WARMUP_STEPS:] for ids, _ in b) / seconds, work


def time_peer(work: list, hf_dir: Path, dtype: str) -> float:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.0,
                                  fused=True)

    def step(batch: list) -> None:
        x, y = padded(batch)  # the same right-padded inputs and shifted targets as gpts trains on
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
            logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for batch in work[:WARMUP_STEPS]:
        step(batch)
    start = time.perf_counter()
    for batch in work[WARMUP_STEPS:]:
        step(batch)
    seconds = time.perf_counter() - start
    return sum(len(ids) for b in work[WARMUP_STEPS:] for ids, _ in b) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=600, help="Reviews in all (a quarter held out).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-peer", action="store_true", help="Skip the transformers + peft timing.")
    parser.add_argument("--out", type=Path, help="Keep the fine-tuned adapter here (default: a temporary dir).")
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        train, test = reviews.write_task(Path(tmp) / "task", args.n)
        console.print(f"Task: {args.n} reviews, {len(train.read_text().splitlines())} to train on, "
                      f"{len(test.read_text().splitlines())} held out")
        before = evaluate("default", test)
        run_dir = args.out or Path(tmp) / "run"
        started = time.perf_counter()
        summary = finetune(FinetuneConfig(model="default", data=str(train), out_dir=str(run_dir), lora_rank=RANK,
                                          lora_alpha=ALPHA, batch_size=BATCH, learning_rate=LR, n_epochs=args.epochs))
        tune_s = time.perf_counter() - started
        after = evaluate(str(run_dir), test)
        console.print(side_by_side(before, after))
        console.print(f"LoRA fine-tuning: {summary['steps']} steps in {tune_s:.1f} s; held-out macro-F1 "
                      f"{before['macro']['f1']:.3f} -> {after['macro']['f1']:.3f} (goal: >= 0.9)")

        ours, work = time_gpts(train, Path(tmp) / "timing")
        dtype = resolve_dtype("auto", torch.device("cpu"))
        console.print(f"gpts LoRA training: {ours:,.0f} tokens/s (batch {BATCH}, rank {RANK}, {dtype})")
        if not args.skip_peer:
            from gpts.api import convert_model

            hf_dir = convert_model("default", "hf", Path(tmp) / "hf")
            theirs = time_peer(work, hf_dir, dtype)
            console.print(f"transformers + peft: {theirs:,.0f} tokens/s; ratio gpts/peer {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
