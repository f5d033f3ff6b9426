"""`gpts tune`: teach a custom GPT's model what its examples show, with LoRA, and keep the result as a new version.

A small model follows a few examples' format but not always their substance (the bundled 135M model answers
"positive" to every review once shown four labeled ones). Tuning trains an adapter on the very prompts the GPT
builds: for each example, the GPT's instructions and its other examples as the prompt, and the example's reply as
the answer to learn (`--data` gives more conversations, or {"text", "label"} rows, to learn from in the same way).
The GPT is measured on its evaluation set before and after, and the new version's model is the adapter.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gpts.assistant import Assistant, build_messages, evaluate_gpt
from gpts.errors import GptsError
from gpts.events import Message, Report, ignore
from gpts.interrupt import StopRequest
from gpts.spec import GptSpec


def _exchanges(spec: GptSpec, data: Path | None) -> list[tuple[list[dict[str, str]], str, str]]:
    """(history, user message, reply to learn) triples: from `data`, else from the GPT's examples (each learned
    with the other examples as its few-shot prompt)."""
    if data is None:
        return [([{"role": m.role, "content": m.content} for m in conversation[:-2]], conversation[-2].content,
                 conversation[-1].content) for conversation in spec.examples]
    from gpts.fileio import read_jsonl

    rows = []
    for line in read_jsonl(data):
        value = line.value
        if line.error is None and isinstance(value, dict) and {"text", "label"} <= set(value):
            rows.append(([], str(value["text"]), str(value["label"])))
        elif line.error is None and isinstance(value, dict) and isinstance(value.get("messages"), list) and \
                len(value["messages"]) >= 2 and value["messages"][-1].get("role") == "assistant":
            turns = [m for m in value["messages"] if m.get("role") in ("user", "assistant")]
            rows.append((turns[:-2], turns[-2]["content"], turns[-1]["content"]))
        else:
            raise GptsError(f"{data}, line {line.number}: {line.error or 'neither a chat nor a text and label'}.",
                            'Each line is {"messages": [..., {"role": "assistant", ...}]} or {"text": ..., '
                            '"label": ...}.')
    return rows


def training_chats(spec: GptSpec, data: Path | None) -> list[dict[str, Any]]:
    """OpenAI chat fine-tuning rows: each the whole prompt the GPT builds, with only the final reply trained."""
    chats = []
    for i, (history, message, reply) in enumerate(_exchanges(spec, data)):
        own = spec.examples[i] if data is None else None
        others = spec.model_copy(update={"examples": [e for e in spec.examples if e is not own]})
        messages = build_messages(others, history, message, [])
        chats.append({"messages": [*({**m, "weight": 0} if m["role"] == "assistant" else m for m in messages),
                                   {"role": "assistant", "content": reply}]})
    if not chats:
        raise GptsError(f"{spec.slug} has no examples to learn from.",
                        "Add example conversations to the GPT (gpts edit --examples FILE), or pass --data FILE.")
    return chats


def tune_gpt(slug: str, data: str | Path | None = None, report: Report = ignore, stop: StopRequest | None = None,
             **finetune_options: Any) -> dict[str, Any]:
    """LoRA-fine-tune the GPT's model on its examples (or `data`), measure before and after on its evaluation set,
    and make a new version whose model is the adapter. Returns {"version", "adapter", "before", "after", "summary"}.
    `finetune_options` are FinetuneConfig fields (n_epochs, max_steps, learning_rate_multiplier, ...)."""
    from gpts.finetune import FinetuneConfig, finetune
    from gpts.store.catalogue import edit_gpt, record_evaluation
    from gpts.store.db import store_dir

    assistant = Assistant.load(slug)
    gpt = assistant.gpt
    chats = training_chats(gpt.spec, Path(data) if data else None)
    measured = gpt.file("evaluation") is not None
    before = evaluate_gpt(assistant, report=report) if measured else None
    if before is not None:
        record_evaluation(slug, gpt.version, before["metric"], before["score"], before)
        report(Message(f"Before tuning: {before['metric']} {before['score']:.4f}."))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    adapter = store_dir() / "adapters" / f"{slug}-v{gpt.version}-{stamp}"
    with tempfile.TemporaryDirectory(prefix="gpts-tune-") as tmp:
        train_file = Path(tmp) / "train.jsonl"
        train_file.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats))
        config = FinetuneConfig(model=gpt.spec.model, data=str(train_file), out_dir=str(adapter), method="lora",
                                **finetune_options)
        summary = finetune(config, report, stop)
    if stop is not None and stop.is_set():
        raise GptsError(f"Tuning {slug} was interrupted; the GPT is unchanged.",
                        f"Run gpts tune {slug} again (the adapter so far is in {adapter}).")
    tuned = edit_gpt(slug, {"model": str(adapter)}, note=f"tuned on {len(chats)} example(s)", report=report)
    after = None
    if measured:
        after = evaluate_gpt(Assistant.load(slug), report=report)
        record_evaluation(slug, tuned.version, after["metric"], after["score"], after)
        report(Message(f"After tuning: {after['metric']} {after['score']:.4f}."))
    return {"version": tuned.version, "adapter": str(adapter), "examples": len(chats), "before": before,
            "after": after, "summary": summary}
