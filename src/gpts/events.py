"""What a long job tells whoever runs it: progress and messages, as events sent to one callback.

Library code (data preparation, pretraining, fine-tuning, evaluation) never prints and never draws. It calls
`report(event)`: the CLI draws the events with rich (gpts.terminal), a test collects them in a list, and a
server sends them to a browser as JSON (`Event.to_dict`). The default callback drops them.

    Progress("Tokenizing", completed=3_000_000, total=10_000_000, unit="bytes")
    Progress("Training", completed=120, total=1000, unit="steps", metrics={"loss": 2.31})
    Message("Saved a checkpoint at step 120.")
    Message("Only 8 examples to train on.", level="warning")
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Unit = Literal["", "bytes", "steps", "examples", "windows", "requests"]
Level = Literal["info", "warning", "sample"]  # sample: text the model wrote, shown apart from gpts' own words


@dataclass(frozen=True)
class Progress:
    """How far one task of a job has come. The first event of a task starts its bar; `done` ends it."""

    task: str  # what is being done, as a person would say it ("Tokenizing")
    completed: float
    total: float | None = None  # None: unknown (a stream whose length is not known in advance)
    unit: Unit = ""
    metrics: dict[str, float | int | str] = field(default_factory=dict)  # shown beside the bar (loss, accuracy)
    done: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"type": "progress", **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Message:
    """A sentence for the person running the job."""

    text: str
    level: Level = "info"

    def to_dict(self) -> dict[str, Any]:
        return {"type": "message", **dataclasses.asdict(self)}


Event = Progress | Message
Report = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default callback: a job run without one is silent."""


class Meter:
    """The Progress events of one task, sent at most every `interval` seconds (a bar needs no more, and a browser
    at the other end of a server should not get thousands a second), and always at the end."""

    def __init__(self, report: Report, task: str, total: float | None = None, unit: Unit = "",
                 completed: float = 0, interval: float = 0.1):
        self.report, self.task, self.total, self.unit = report, task, total, unit
        self.completed, self.interval = completed, interval
        self.metrics: dict[str, float | int | str] = {}  # the latest, kept until new ones come
        self._sent = -math.inf

    def advance(self, amount: float = 1, **metrics: float | int | str) -> None:
        self.update(self.completed + amount, **metrics)

    def update(self, completed: float, **metrics: float | int | str) -> None:
        self.completed = completed
        self.metrics = metrics or self.metrics
        now = time.monotonic()
        if metrics or now - self._sent >= self.interval:
            self._sent = now
            self.report(Progress(self.task, completed, self.total, self.unit, dict(self.metrics)))

    def done(self) -> None:
        self.report(Progress(self.task, self.completed, self.total, self.unit, dict(self.metrics), done=True))
