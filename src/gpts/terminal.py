"""How gpts looks in a terminal: error paragraphs, warnings, and progress bars drawn from a job's events.

The CLI and the lm-evaluation-harness entry point both print through here; library code never does (it reports
events, gpts.events, and raises GptsError).
"""

from __future__ import annotations

import warnings
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress as Bars, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn

from gpts.events import Event, Message, Progress

err = Console(stderr=True, soft_wrap=True)  # an error paragraph stays one line per sentence in logs

STYLES = {"info": "", "warning": "yellow", "sample": "dim"}


def print_error(problem: str, fix: str = "") -> None:
    """A GptsError as people read it: 'Error: what went wrong', then how to fix it. Never markup: paths and user
    text often hold brackets."""
    err.print("[bold red]Error:[/] ", end="")
    err.print(problem, markup=False, highlight=False)
    if fix:
        err.print(fix, markup=False, highlight=False)


def print_message(message: Message, console: Console = err) -> None:
    if message.level == "warning":
        console.print("[yellow]Warning:[/] ", end="")
    console.print(message.text, markup=False, highlight=False, style=STYLES[message.level])


def show_warnings() -> None:
    """Python warnings that gpts raises (GptsWarning) print as one 'Warning:' line, without file and line number."""
    from gpts.errors import GptsWarning

    default = warnings.showwarning

    def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, GptsWarning):
            print_message(Message(str(message), level="warning"))
        else:
            default(message, category, *args, **kwargs)

    warnings.showwarning = show


def _amount(value: float, unit: str) -> str:
    if unit == "bytes":
        for scale, name in ((1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "kB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"
    return f"{value:,.0f}"


def _detail(event: Progress) -> str:
    done = _amount(event.completed, event.unit)
    count = f"{done}/{_amount(event.total, event.unit)}" if event.total is not None else done
    count += f" {event.unit}" if event.unit and event.unit != "bytes" else ""
    metrics = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.metrics.items())
    return f"{count}  {metrics}".rstrip()


class EventView:
    """Draws events on stderr: one bar per task, messages printed above the bars. The bars appear with the first
    progress event, so a job that fails or says something before it has drawn nothing else."""

    def __init__(self, console: Console = err, transient: bool = False):
        self.bars = Bars(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                         TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                         console=console, transient=transient)
        self.tasks: dict[str, TaskID] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message):
            print_message(event, self.bars.console)
            return
        if not self.bars.live.is_started:
            self.bars.start()
        task = self.tasks.get(event.task)
        if task is None:
            task = self.tasks[event.task] = self.bars.add_task(event.task, total=event.total, detail="")
        self.bars.update(task, completed=event.completed, total=event.total, detail=_detail(event))
        if event.done:
            self.bars.stop_task(task)
            del self.tasks[event.task]

    def __enter__(self) -> EventView:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars.live.is_started:
            self.bars.stop()

