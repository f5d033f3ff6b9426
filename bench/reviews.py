"""A small labeled task built deterministically: the sentiment of short product reviews.

    python bench/reviews.py OUT_DIR [--n 600] [--seed 0]   # writes train.jsonl and test.jsonl ({"text", "label"})

Reviews are composed from parts (product, opinion, detail, an occasional twist), so that no two share their
wording by chance and the held-out split is never seen in training. Used by bench/finetune.py and its test.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PRODUCTS = ["blender", "headphones", "backpack", "desk lamp", "coffee maker", "phone case", "keyboard", "kettle",
            "running shoes", "toaster", "webcam", "water bottle", "office chair", "tent", "vacuum cleaner",
            "electric toothbrush", "rice cooker", "umbrella", "monitor", "yoga mat"]
OPINIONS = {
    "positive": ["I love this {p}.", "This {p} is fantastic.", "Best {p} I have owned.", "Great {p}, works perfectly.",
                 "Really happy with this {p}.", "The {p} exceeded my expectations.", "Excellent {p} for the price.",
                 "Would buy this {p} again."],
    "negative": ["I regret buying this {p}.", "This {p} is terrible.", "Worst {p} I have owned.",
                 "The {p} broke after a week.", "Really disappointed with this {p}.", "The {p} is a waste of money.",
                 "Do not buy this {p}.", "The {p} stopped working almost immediately."],
}
DETAILS = {
    "positive": ["It arrived early and was easy to set up.", "The build quality is solid.", "It is quiet and fast.",
                 "Customer service was helpful too.", "It looks even better in person.", "Battery life is superb.",
                 "My whole family uses it every day.", "Five stars."],
    "negative": ["It arrived scratched and missing parts.", "The build quality is flimsy.", "It is loud and slow.",
                 "Customer service never answered.", "It looks cheap in person.", "Battery life is awful.",
                 "Nobody in my family wants to use it.", "One star."],
}
TWISTS = {  # a clause that points the other way, so that a single keyword does not decide
    "positive": ["The box was a bit dented, but", "I was skeptical at first, but", "Shipping took a while, yet"],
    "negative": ["The color is nice, but", "It looked promising at first, but", "The price was low, yet"],
}
LABELS = sorted(OPINIONS)


def review(rng: random.Random, label: str) -> str:
    product = rng.choice(PRODUCTS)
    opinion = rng.choice(OPINIONS[label]).format(p=product)
    parts = [opinion, rng.choice(DETAILS[label])]
    if rng.random() < 0.3:
        twist = rng.choice(TWISTS[label])
        parts[0] = f"{twist} {opinion[0].lower()}{opinion[1:]}"
    if rng.random() < 0.3:
        rng.shuffle(parts)
    return " ".join(parts)


def make_task(n: int = 600, seed: int = 0, test_fraction: float = 0.25) -> tuple[list[dict], list[dict]]:
    """`n` distinct labeled reviews, balanced, shuffled; the last `test_fraction` held out."""
    rng = random.Random(seed)
    seen: set[str] = set()
    examples = []
    while len(examples) < n:
        label = LABELS[len(examples) % len(LABELS)]
        text = review(rng, label)
        if text not in seen:
            seen.add(text)
            examples.append({"text": text, "label": label})
    rng.shuffle(examples)
    cut = round(n * (1 - test_fraction))
    return examples[:cut], examples[cut:]


def write_task(out: Path, n: int = 600, seed: int = 0) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.jsonl", out / "test.jsonl"
    for path, examples in zip(paths, make_task(n, seed)):
        path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_task(args.out, args.n, args.seed):
        print(path)
