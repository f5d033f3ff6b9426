"""The worker process of a fine-tuning job, `python -m gpts.jobs run JOB_ID`, which the job runner starts.

It runs gpts.finetune on the job in the job's run directory: a new run, or the one a stopped server left, resumed
from its last checkpoint (or begun again, when it stopped before its first). The method is LoRA: on a CPU a step
of SmolLM2-135M costs about the same either way, but LoRA's optimizer state and checkpoints weigh megabytes
instead of gigabytes, so checkpoints are quick and many fine-tuned models share one base in memory.

What happens goes into the store's database as it happens: finetune's messages as events, each step's metrics as a
metrics event (read from the run's metrics.jsonl, which holds every metric of the step), each epoch's end as a
checkpoint, and at the end the job's status. The worker stops at its next step, saving a checkpoint, when its
standard input closes: the runner closes it to cancel the job or to shut down, and the system when the server dies.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from gpts.errors import GptsError, named, naming
from gpts.events import Event, Message, Progress
from gpts.fileio import read_json
from gpts.finetune import BASE_LEARNING_RATE, CSV_COLUMNS, SETTINGS_FILE, FinetuneConfig, checkpoints, finetune
from gpts.interrupt import StopRequest
from gpts.jobs.fine_tuning import (Job, add_checkpoint, add_event, get_job, log_event, move, rewind,
                                   set_hyperparameters)
from gpts.jobs.uploads import RESULTS, add_upload, delete_upload, upload_path
from gpts.rundir import RunLock
from gpts.store.db import connect, transaction

METHOD = "lora"
LOCK_WAIT_S = 120.0  # how long a resumed run waits for the worker of a dead server to save its checkpoint
LEVELS = {"info": "info", "warning": "warn", "sample": "info"}


def job_files(job: Job) -> dict[Path, str]:
    """The paths of the job's files in the store, and their ids: what its events and errors call them."""
    return {upload_path(f): f for f in (job.training_file, job.validation_file) if f}


class JobReport:
    """finetune's `report` callback: its messages become the job's events; at each step of training, the new rows
    of metrics.jsonl become metrics events, and checkpoints where an epoch ended. Once `stop` is set, what finetune
    says about stopping is for the command line (how to resume it): the worker says it in the job's terms instead."""

    def __init__(self, conn: sqlite3.Connection, job: Job, after_step: int, stop: StopRequest):
        self.conn, self.job, self.stop = conn, job, stop
        self.metrics = job.run_dir / "metrics.jsonl"
        self.after_step = after_step  # the steps up to here are recorded already
        self.offset = 0  # how far metrics.jsonl is read
        self.total_steps: float | None = None
        self.files = job_files(job)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Message) and not (self.stop.is_set() and event.level == "info"):
            log_event(self.conn, self.job.id, named(event.text, self.files), LEVELS[event.level])
        elif isinstance(event, Progress) and event.task == "Fine-tuning":
            if self.total_steps is None:
                self.total_steps = event.total
                self.record_hyperparameters()
            self.record_steps()

    def record_hyperparameters(self) -> None:
        """The numbers the run chose for "auto", as OpenAI reports them once a job runs."""
        plan = read_json(self.job.run_dir / SETTINGS_FILE)["plan"]
        set_hyperparameters(self.conn, self.job.id, {
            "n_epochs": plan["n_epochs"], "batch_size": plan["batch_size"],
            "learning_rate_multiplier": plan["learning_rate"] / BASE_LEARNING_RATE[METHOD]})

    def record_steps(self) -> None:
        if not self.metrics.is_file():
            return
        with open(self.metrics, "rb") as f:
            f.seek(self.offset)
            text = f.read()
        complete = text[:text.rfind(b"\n") + 1]  # a line is whole once its newline is written
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            row = json.loads(line)
            if row["step"] > self.after_step:
                self.record_step(row)
                self.after_step = row["step"]

    def record_step(self, row: dict[str, Any]) -> None:
        metrics = {k: row[k] for k in CSV_COLUMNS if k in row}  # OpenAI's metrics
        said = [f"{name}={row[key]:.4f}" for key, name in (("train_loss", "training loss"),
                                                          ("valid_loss", "validation loss"),
                                                          ("full_valid_loss", "full validation loss")) if key in row]
        total = int(self.total_steps) if self.total_steps else "?"
        with transaction(self.conn):
            add_event(self.conn, self.job.id, f"Step {row['step']}/{total}: {', '.join(said)}",
                      data={**metrics, "total_steps": self.total_steps}, step=row["step"])
            if "epoch" in row:
                add_checkpoint(self.conn, self.job.id, row["step"], metrics)


def stop_at_end_of_input(stop: StopRequest) -> None:
    """Set `stop` when standard input closes (the runner asks, or the server is gone). os.read, not sys.stdin: a
    daemon thread blocked inside a buffered reader aborts the interpreter's exit."""
    while os.read(sys.stdin.fileno(), 4096):
        pass
    stop.set()


def wait_for_run_dir(run_dir: Path, stop: StopRequest) -> None:
    """Wait while another process holds the run directory: the worker of a server that died, saving its checkpoint
    before it stops. After LOCK_WAIT_S, go on (and finetune's error names that process)."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while run_dir.is_dir() and not stop.is_set() and time.monotonic() < deadline:
        try:
            RunLock(run_dir).acquire().release()
            return
        except GptsError:
            time.sleep(0.5)


def train(conn: sqlite3.Connection, job: Job, stop: StopRequest) -> dict[str, Any]:
    """finetune on the job: a new run, or the resumption of the one in its run directory."""
    run_dir = job.run_dir
    wait_for_run_dir(run_dir, stop)
    saved = checkpoints(run_dir)
    resume = (run_dir / SETTINGS_FILE).is_file() and bool(saved)
    step = int(saved[-1].name.removeprefix("step-")) if resume else 0
    rewind(conn, job.id, step)
    if resume:
        log_event(conn, job.id, f"Resuming from the checkpoint at step {step}: the server stopped while the job ran.")
        config = FinetuneConfig(out_dir=str(run_dir), resume=True)
    else:
        if run_dir.exists():
            log_event(conn, job.id, "Starting again from the beginning: the server stopped before the job's first "
                                    "checkpoint.")
        config = FinetuneConfig(
            model=job.base_ref, data=str(upload_path(job.training_file)), out_dir=str(run_dir), method=METHOD,
            validation_data=str(upload_path(job.validation_file)) if job.validation_file else None, seed=job.seed,
            **job.hyperparameters)
    return finetune(config, JobReport(conn, job, step, stop), stop)


def finish(conn: sqlite3.Connection, job: Job, summary: dict[str, Any], stop: StopRequest) -> None:
    """Record how the run ended: done (the job succeeded, its metrics kept as a results file), or stopped: because
    the job was cancelled (its run directory goes), because the server is stopping (the job resumes when it starts
    again), or by a signal from outside the server (the job failed)."""
    if summary["stop_reason"] == "done":
        with open(job.run_dir / "results.csv", "rb") as f:
            results = add_upload(conn, f, "step_metrics.csv", RESULTS)
        name = job.model_name
        if move(conn, job.id, "running", "succeeded", "The job has successfully completed", fine_tuned_model=name,
                result_file=results.id, trained_tokens=summary["trained_tokens"]):
            log_event(conn, job.id, f"New fine-tuned model created: {name}")
            return
        delete_upload(conn, results.id)  # cancelled at the last moment
    if get_job(conn, job.id).status == "cancelled":
        shutil.rmtree(job.run_dir, ignore_errors=True)
        log_event(conn, job.id, f"Cancelled at step {summary['steps']}.")
    elif stop.signal is not None:
        name = signal.Signals(stop.signal).name
        move(conn, job.id, "running", "failed", f"Stopped by {name} at step {summary['steps']}.",
             error={"code": "worker_stopped", "param": None,
                    "message": f"The worker process was stopped by {name}, from outside the server, at step "
                               f"{summary['steps']}. Create the job again."})
    else:
        log_event(conn, job.id, f"Paused at step {summary['steps']} with a checkpoint: the server is stopping. The "
                                "job resumes when it starts again.")


def main(job_id: str) -> int:
    stop = StopRequest()
    threading.Thread(target=stop_at_end_of_input, args=(stop,), daemon=True).start()
    conn = connect()
    try:
        job = get_job(conn, job_id)
        try:
            with naming(job_files(job)):
                summary = train(conn, job, stop)
        except GptsError as e:
            move(conn, job.id, "running", "failed", "Fine-tuning failed.",
                 error={"code": "training_failed", "param": None, "message": str(e)})
            return 1
        except Exception as e:  # a bug: the traceback goes to the job's log
            traceback.print_exc()
            move(conn, job.id, "running", "failed", "Fine-tuning failed.",
                 error={"code": "internal_error", "param": None,
                        "message": f"Internal error: {type(e).__name__}: {e}. The log has the details: {job.log_path}"})
            return 1
        finish(conn, job, summary, stop)
        return 0
    finally:
        conn.close()
