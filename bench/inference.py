"""Prefill and decode speed of gpts against transformers (and llama.cpp when llama-cpp-python is installed),
on the same weights, in one run.

    .venv/bin/python bench/inference.py [--model default] [--dtype float32] [--prompt-tokens 512] [--new-tokens 128]

- prefill: tokens/s for one forward pass over a prompt of --prompt-tokens tokens into an empty KV cache,
  logits of the last position only (what generation needs).
- decode: tokens/s for --new-tokens greedy tokens at batch 1 after a short prompt, eos ignored; the wall time
  of each engine's own generate() call, prompt included (it is 16 tokens).
Each figure is the median of --repeats runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import gpts
from gpts.registry import resolve

DECODE_PROMPT_TOKENS = 16


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool, lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def prompt_ids(vocab_size: int, n: int, seed: int = 0) -> list[int]:
    # Speed does not depend on what the tokens say; a fixed seed keeps every run identical.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(100, vocab_size - 100, (n,), generator=g).tolist()


def bench_gpts(lm: gpts.LoadedModel, long: list[int], short: list[int], new: int, repeats: int) -> dict[str, float]:
    model = lm.gpt
    idx = torch.tensor([long])

    @torch.inference_mode()
    def prefill() -> None:
        model(idx, cache=model.new_cache(1, len(long)), last_only=True)

    def decode() -> None:
        lm.generate(short, max_new_tokens=new, temperature=0, ignore_eos=True)

    return {"prefill": len(long) / median_seconds(prefill, repeats), "decode": new / median_seconds(decode, repeats)}


def bench_transformers(gguf_path, dtype: torch.dtype, long: list[int], short: list[int], new: int,
                       repeats: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, DynamicCache

    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=dtype).eval()
    idx, short_idx = torch.tensor([long]), torch.tensor([short])

    @torch.inference_mode()
    def prefill() -> None:
        model(idx, past_key_values=DynamicCache(), use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def decode() -> None:
        model.generate(short_idx, attention_mask=torch.ones_like(short_idx), max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)

    return {"prefill": len(long) / median_seconds(prefill, repeats), "decode": new / median_seconds(decode, repeats)}


def bench_llama_cpp(gguf_path, long: list[int], short: list[int], new: int, repeats: int) -> dict[str, float] | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(gguf_path), n_ctx=len(long) + new + 8, n_batch=len(long),
                n_threads=torch.get_num_threads(), verbose=False)

    def prefill() -> None:
        llm.reset()
        llm.eval(long)

    def decode() -> None:
        llm.reset()
        for i, _ in enumerate(llm.generate(short, top_k=1, temp=0.0, reset=True)):
            if i + 1 == new:
                break

    return {"prefill": len(long) / median_seconds(prefill, repeats), "decode": new / median_seconds(decode, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a GGUF model reference (all engines read the same file)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ref = resolve(args.model)
    if ref.kind not in ("bundled", "gguf"):
        parser.error("--model must name a GGUF file (or the bundled model) so every engine reads the same weights")
    lm = gpts.load(args.model, args.dtype)
    long = prompt_ids(lm.config.vocab_size, args.prompt_tokens)
    short = prompt_ids(lm.config.vocab_size, DECODE_PROMPT_TOKENS, seed=1)
    print(f"model {args.model} ({ref.path.name}), {args.dtype}, {torch.get_num_threads()} threads, "
          f"prefill {args.prompt_tokens} tokens, decode {args.new_tokens} tokens at batch 1, median of {args.repeats}")

    results = {"gpts": bench_gpts(lm, long, short, args.new_tokens, args.repeats)}
    del lm
    results["transformers"] = bench_transformers(ref.path, gpts.api.parse_dtype(args.dtype), long, short,
                                                 args.new_tokens, args.repeats)
    llama_cpp = bench_llama_cpp(ref.path, long, short, args.new_tokens, args.repeats)
    if llama_cpp is not None:
        results["llama.cpp (GGUF as stored)"] = llama_cpp  # it computes on the quantized blocks themselves

    peer = results["transformers"]
    print(f"{'engine':<26}{'prefill tok/s':>15}{'decode tok/s':>15}{'prefill ratio':>15}{'decode ratio':>15}")
    for name, r in results.items():
        print(f"{name:<26}{r['prefill']:>15.1f}{r['decode']:>15.1f}"
              f"{r['prefill'] / peer['prefill']:>14.2f}x{r['decode'] / peer['decode']:>14.2f}x")
    print("ratios are against transformers on the same weights and dtype"
          + ("" if llama_cpp is not None else "; llama.cpp skipped: llama-cpp-python is not installed"))


if __name__ == "__main__":
    main()
