"""The batching engine alone, without a server: what a decode step costs at 1 and at N rows, and what prefix reuse
saves a conversation that starts like an earlier one.

    .venv/bin/python bench/engine.py [--model default] [--rows 8] [--steps 30] [--trials 3]

- Step time: N requests (sampling, eos ignored) decode together on one engine; the mean of `--steps` steps after
  warm-up, for 1 row and for N rows, and the tokens per step gained (N x step(1) / step(N); continuous batching's
  ceiling for the server's aggregate tokens/s at N clients).
- Prefix reuse: three conversations with the same long system message on one engine, then the same three on a fresh
  engine each; prompt tokens reused and time to the first token (`Timings.prompt_ms`).
"""

import argparse
import statistics
import time

from gpts.api import load
from gpts.engine import Engine

STORY = "Tell me a long story about a dragon."
SYSTEM = ("You are the help desk of the town library. Opening hours: Monday to Friday 9:00-19:00, Saturday "
          "10:00-16:00, closed on Sunday. Members borrow up to 12 items for three weeks and renew twice online. "
          "Late returns cost 20 cents a day per item. The reading room is on the first floor; the children's corner "
          "and the makerspace on the ground floor. Printing costs 10 cents a page. Answer in one or two sentences.")
QUESTIONS = ["Are you open on Sunday?", "How many books can I borrow?", "Where is the makerspace?"]


def step_ms(lm, rows: int, steps: int) -> float:
    engine = Engine(lm.gpt, lm.tokenizer, max_batch=rows)
    prompt = lm.chat_prompt(STORY)
    for i in range(rows):
        engine.submit(prompt, lm.generation_config(max_new_tokens=steps + 4, ignore_eos=True, temperature=0.7,
                                                   seed=i))
    for _ in range(3):  # admission and prefill
        engine.step()
    start = time.perf_counter()
    for _ in range(steps):
        engine.step()
    return (time.perf_counter() - start) / steps * 1000


def first_token(lm, engine: Engine, question: str) -> tuple[int, int, float]:
    prompt = lm.chat_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}])
    request = engine.submit(prompt, lm.generation_config(max_new_tokens=1, temperature=0))
    for _ in request.events():
        pass
    timings = request.completions[0].timings
    return timings.prompt_n, timings.cache_n, timings.prompt_ms


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args(argv)
    lm = load(args.model)

    ratios = []
    for trial in range(args.trials):
        one, many = step_ms(lm, 1, args.steps), step_ms(lm, args.rows, args.steps)
        ratios.append(args.rows * one / many)
        print(f"trial {trial + 1}: step {one:.1f} ms at 1 row, {many:.1f} ms at {args.rows} rows: "
              f"{ratios[-1]:.2f}x the tokens per step")

    shared = Engine(lm.gpt, lm.tokenizer, max_batch=1)
    reused, fresh = [], []
    for question in QUESTIONS:
        reused.append(first_token(lm, shared, question))
        fresh.append(first_token(lm, Engine(lm.gpt, lm.tokenizer, max_batch=1), question))
    for question, (n, cached, ms), (_, _, cold) in zip(QUESTIONS, reused, fresh):
        print(f"prefix reuse: {question!r}: {cached} of {n} prompt tokens reused, first token {ms:.0f} ms "
              f"(alone: {cold:.0f} ms)")
    later = [ms for _, _, ms in reused[1:]]
    cold = [ms for _, _, ms in fresh[1:]]
    summary = {"tokens_per_step_ratio": statistics.median(ratios),
               "first_token_ms_reused": statistics.median(later), "first_token_ms_alone": statistics.median(cold)}
    print(f"median: {summary['tokens_per_step_ratio']:.2f}x the tokens per step at {args.rows} rows; first token "
          f"{summary['first_token_ms_reused']:.0f} ms with the shared prefix, {summary['first_token_ms_alone']:.0f} "
          "ms without")
    return summary


if __name__ == "__main__":
    main()
