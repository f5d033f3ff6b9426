"""What a classifier is asked and trained on: the prompt of a classification task, and task.json.

Fine-tuning on {"text", "label"} data trains a model on `classification_messages`, and writes the label set and
instructions into the run directory as task.json; `gpts eval classify` reads it back, so the model is evaluated
with the prompt it was trained on. Both sides import this module; neither imports the other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from gpts.errors import GptsError
from gpts.fileio import read_json, write_text

DEFAULT_INSTRUCTIONS = "Classify the text."
TASK_FILE = "task.json"


@dataclass
class ClassificationTask:
    """What a model was fine-tuned to classify, kept in its directory as task.json:
    {"task": "classification", "labels": [...], "instructions": "..." or null}."""

    labels: list[str]
    instructions: str | None = None


def classification_messages(text: str, labels: Sequence[str], instructions: str | None = None) -> list[dict[str, str]]:
    """The conversation a classifier sees: a system turn with the instructions and the labels, then the text as the
    user's turn. The label, alone, is the assistant's reply. Fine-tuning trains on exactly this."""
    head = (instructions or DEFAULT_INSTRUCTIONS).strip()
    system = f"{head}\nAnswer with exactly one of these labels: {', '.join(labels)}."
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


def read_task(model_dir: str | Path | None) -> ClassificationTask | None:
    """The task.json of a model directory; None when there is none (the model was not fine-tuned for
    classification, or it is a file such as a GGUF)."""
    if model_dir is None:
        return None
    path = Path(model_dir) / TASK_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    labels = data.get("labels") if isinstance(data, dict) else None
    instructions = data.get("instructions") if isinstance(data, dict) else None
    if (not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels) or not isinstance(instructions, (str, type(None)))):
        raise GptsError(f"{path} is malformed.",
                        'It holds {"task": "classification", "labels": [distinct texts], '
                        '"instructions": text or null}.')
    return ClassificationTask(labels, instructions)


def write_task(model_dir: str | Path, task: ClassificationTask) -> Path:
    """Write task.json into a model directory (atomically); `read_task` reads it back."""
    path = Path(model_dir) / TASK_FILE
    write_text(path, json.dumps({"task": "classification", **asdict(task)}, indent=2, ensure_ascii=False) + "\n")
    return path


def parse_labels(text: str) -> list[str]:
    """--labels a,b,c -> ["a", "b", "c"]."""
    labels = [x.strip() for x in text.split(",") if x.strip()]
    if not labels or len(set(labels)) != len(labels):
        raise GptsError(f"--labels {text!r} is not a list of distinct labels.", "Write them like --labels neg,pos.")
    return labels
