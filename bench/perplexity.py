"""Perplexity of the bundled SmolLM2-135M-Instruct on tinyshakespeare: gpts against transformers, same windows.

    .venv/bin/python bench/perplexity.py [--data ../shared/data/tinyshakespeare.txt] [--chars 50000]
                                         [--context 512] [--stride 256]

Both read the same GGUF weights (transformers dequantizes it itself) and score the same sliding windows (Hugging
Face's "Perplexity of fixed-length models": each window scores only the tokens the previous one did not), in
float32. Prints both perplexities, their relative difference (the goal: within 0.1 %), and both times.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

import gpts
from gpts.evaluate import perplexity
from gpts.registry import bundled_path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def reference_nll(model, ids: torch.Tensor, context: int, stride: int) -> tuple[float, int]:
    """Summed NLL and tokens scored by a transformers model over token ids (1, N): the loop of Hugging Face's
    perplexity guide. tests/test_evaluate.py checks gpts against it too."""
    nll, n, scored_to = 0.0, 0, 0
    for begin in range(0, ids.size(1), stride):
        end = min(begin + context, ids.size(1))
        window = ids[:, begin:end]
        labels = window.clone()
        labels[:, :-(end - scored_to)] = -100
        with torch.inference_mode():
            loss = model(window, labels=labels).loss
        k = int((labels[:, 1:] != -100).sum())  # the tokens the shifted loss averages over
        nll, n, scored_to = nll + loss.item() * k, n + k, end
        if end == ids.size(1):
            break
    return nll, n


def transformers_nll(text: str, context: int, stride: int) -> tuple[float, int]:
    import transformers

    path = bundled_path("smollm2-135m-instruct")
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                              dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return reference_nll(model, tokenizer(text, return_tensors="pt").input_ids, context, stride)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--chars", type=int, default=50_000, help="Score the first this many characters.")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    args = parser.parse_args()
    text = args.data.read_text()[:args.chars]

    start = time.perf_counter()
    ours = perplexity(gpts.load("default"), text, args.context, args.stride)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    nll, n = transformers_nll(text, args.context, args.stride)
    theirs_s = time.perf_counter() - start

    theirs = math.exp(nll / n)
    print(f"gpts:         perplexity {ours.perplexity:.4f} over {ours.tokens:,} tokens, {ours_s:.1f} s "
          f"(bits per byte {ours.bits_per_byte:.4f})")
    print(f"transformers: perplexity {theirs:.4f} over {n:,} tokens, {theirs_s:.1f} s (model load included)")
    print(f"relative difference {abs(ours.perplexity - theirs) / theirs:.2e} (goal: < 1e-3); "
          f"time ratio {theirs_s / ours_s:.2f}x")


if __name__ == "__main__":
    main()
