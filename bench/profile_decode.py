"""Where a decoded token's time goes at batch 1: torch.profiler over greedy decoding of the bundled model (or
--model), summarised per token by operator, with the time no operator accounts for (Python, the engine's
bookkeeping, sampling glue) as its own line.

    .venv/bin/python bench/profile_decode.py [--model default] [--dtype float32] [--new-tokens 64] [--top 12]

The figures are per generated token: an operator's self time summed over the run, divided by the tokens.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

import gpts

PROMPT = "The history of the Roman empire is"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)

    lm = gpts.load(args.model, args.dtype)

    def decode() -> float:
        start = time.perf_counter()
        lm.generate(PROMPT, max_new_tokens=args.new_tokens, temperature=0, ignore_eos=True)
        return time.perf_counter() - start

    decode()  # warm-up: allocator, thread pool, lazy init
    plain = decode()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        profiled = decode()

    per_op: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in prof.key_averages():
        per_op[event.key] += event.self_cpu_time_total / 1000  # ms
        calls[event.key] += event.count
    n = args.new_tokens
    ops_ms = sum(per_op.values()) / n
    wall_ms = profiled * 1000 / n
    print(f"{args.model}, {args.dtype}, {torch.get_num_threads()} threads, {n} tokens greedy at batch 1: "
          f"{n / plain:.1f} tokens/s unprofiled ({plain * 1000 / n:.1f} ms a token), {wall_ms:.1f} ms profiled")
    print(f"{'operator':<40}{'ms/token':>10}{'calls/token':>13}{'share':>8}")
    for name, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{name[:39]:<40}{ms / n:>10.2f}{calls[name] / n:>13.1f}{ms / n / wall_ms:>8.1%}")
    print(f"{'(all operators)':<40}{ops_ms:>10.2f}{sum(calls.values()) / n:>13.1f}{ops_ms / wall_ms:>8.1%}")
    print(f"{'(outside operators: Python, engine)':<40}{wall_ms - ops_ms:>10.2f}{'':>13}{1 - ops_ms / wall_ms:>8.1%}")
    return {"tokens_per_s": n / plain, "ms_per_token": wall_ms, "operators_ms_per_token": ops_ms}


if __name__ == "__main__":
    main()
