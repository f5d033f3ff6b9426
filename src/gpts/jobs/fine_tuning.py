"""Fine-tuning jobs as OpenAI's API has them, kept in the store's database: the jobs, their events and checkpoints,
and the models they made.

A job's status moves validating_files -> queued -> running -> succeeded | failed, or to cancelled from any of the
first three. The server's routes create and cancel jobs; the job runner (runner.py) validates, queues and starts
them; the worker process (worker.py) records the run and its end. Each change is one transaction, and every change
of status names the status it expects to find, so that a cancel racing a job's end leaves one of the two, whole.

The model a job makes is the LoRA adapter in its run directory (run_dir), named as OpenAI names fine-tuned models:
ft:BASE:SUFFIX:ID. `fine_tuned_models` lists them for the serving layer.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gpts.errors import ConflictError, GptsError, NotFoundError
from gpts.jobs.common import new_id, page, unix_now
from gpts.jobs.uploads import FINE_TUNE, get_upload
from gpts.refs import resolve
from gpts.store.db import store_dir, transaction

Status = Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
UNFINISHED = ("validating_files", "queued", "running")
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


class JobFileError(GptsError):
    """A training or validation file a job cannot use; `param` names which (the server's 400 names it too)."""

    def __init__(self, problem: str, fix: str, param: str):
        super().__init__(problem, fix)
        self.param = param


@dataclass(frozen=True)
class Job:
    id: str
    model: str  # the base model as the client named it
    base_ref: str  # the model reference that stands for
    training_file: str
    validation_file: str | None
    hyperparameters: dict[str, Any]  # "auto" or a number each; the numbers the run chose once it starts
    suffix: str | None
    seed: int
    status: Status
    runner: str | None  # the job runner that runs it (runner.py)
    fine_tuned_model: str | None
    result_file: str | None
    trained_tokens: int | None
    error: dict[str, Any] | None  # {"code", "message", "param"}
    created_at: int
    finished_at: int | None

    @property
    def run_dir(self) -> Path:
        return run_dir(self.id)

    @property
    def log_path(self) -> Path:
        """What the worker process writes to its standard output and error: tracebacks, should it crash."""
        return jobs_dir() / f"{self.id}.log"

    @property
    def model_name(self) -> str:
        """The name of the model the job makes, as OpenAI names them: ft:BASE:SUFFIX:ID (SUFFIX may be empty). BASE
        is the original base model's, for a job that fine-tunes a fine-tuned model too."""
        base = (self.model.split(":")[1] if self.model.startswith("ft:")
                else Path(self.model.removeprefix("hf:").split("@")[0]).name.removesuffix(".gguf"))
        return f"ft:{base.replace(':', '-')}:{self.suffix or ''}:{self.id.removeprefix('ftjob-')[:8]}"

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's fine_tuning.job object."""
        return {"object": "fine_tuning.job", "id": self.id, "model": self.model, "created_at": self.created_at,
                "finished_at": self.finished_at, "fine_tuned_model": self.fine_tuned_model,
                "organization_id": "org-gpts", "result_files": [self.result_file] if self.result_file else [],
                "status": self.status, "training_file": self.training_file, "validation_file": self.validation_file,
                "hyperparameters": self.hyperparameters, "trained_tokens": self.trained_tokens, "error": self.error,
                "seed": self.seed, "estimated_finish": None, "integrations": [], "user_provided_suffix": self.suffix,
                "metadata": None,
                "method": {"type": "supervised", "supervised": {"hyperparameters": self.hyperparameters}}}


@dataclass(frozen=True)
class Event:
    id: str
    level: Literal["info", "warn", "error"]
    type: Literal["message", "metrics"]
    message: str
    data: dict[str, Any] | None
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's fine_tuning.job.event object."""
        return {"object": "fine_tuning.job.event", "id": self.id, "created_at": self.created_at, "level": self.level,
                "type": self.type, "message": self.message, "data": self.data}


@dataclass(frozen=True)
class Checkpoint:
    id: str
    job_id: str
    step: int
    metrics: dict[str, Any]
    created_at: int
    model_name: str  # the job's

    def to_dict(self) -> dict[str, Any]:
        """OpenAI's fine_tuning.job.checkpoint object. Only the last checkpoint's model is kept (the job's model: a
        run keeps one training state, see gpts.finetune), so the checkpoint names are for reference."""
        return {"object": "fine_tuning.job.checkpoint", "id": self.id, "created_at": self.created_at,
                "fine_tuned_model_checkpoint": f"{self.model_name}:ckpt-step-{self.step}",
                "fine_tuning_job_id": self.job_id, "metrics": self.metrics, "step_number": self.step}


class FineTunedModel(NamedTuple):
    id: str  # ft:BASE:SUFFIX:ID, what a client names it
    ref: str  # its run directory, a model reference
    created_at: int
    parent: str  # the model it was fine-tuned from, as the job named it


def jobs_dir() -> Path:
    return store_dir() / "fine_tuning"


def run_dir(job_id: str) -> Path:
    return jobs_dir() / job_id


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["model"], row["base_ref"], row["training_file"], row["validation_file"],
               json.loads(row["hyperparameters"]), row["suffix"], row["seed"], row["status"], row["runner"],
               row["fine_tuned_model"], row["result_file"], row["trained_tokens"],
               json.loads(row["error"]) if row["error"] else None,
               row["created_at"], row["finished_at"])


# -- what the routes do -----------------------------------------------------------------------------------------


def stable_reference(ref: str) -> str:
    """`ref` as a worker reads it wherever it starts, now or after a restart: a local path made absolute."""
    mref = resolve(ref)
    return str(mref.path.resolve()) if mref.kind in ("gguf", "native", "adapter", "hf") else ref


def _check_file(conn: sqlite3.Connection, file_id: str, param: str) -> None:
    try:
        purpose = get_upload(conn, file_id).purpose
    except NotFoundError as e:
        raise JobFileError(e.problem, "Upload the file first (purpose fine-tune), and pass the id it gets.",
                           param) from None
    if purpose != FINE_TUNE:
        raise JobFileError(f"{param} {file_id} has the purpose {purpose!r}, not {FINE_TUNE!r}.",
                           f"Upload the examples with purpose {FINE_TUNE!r}.", param)


def create_job(conn: sqlite3.Connection, model: str, base_ref: str, training_file: str,
               validation_file: str | None = None, hyperparameters: dict[str, Any] | None = None,
               suffix: str | None = None, seed: int | None = None) -> Job:
    """A new job on the model `model` (what the client called it) whose reference is `base_ref`, validating its
    files until the runner queues it. Files that do not exist or are not for fine-tuning are a JobFileError. Without
    a seed, one is drawn and kept, so that the job can be run again alike."""
    base_ref = stable_reference(base_ref)
    hyperparameters = {name: "auto" for name in HYPERPARAMETERS} | (hyperparameters or {})
    job_id = new_id("ftjob-")
    with transaction(conn):
        _check_file(conn, training_file, "training_file")
        if validation_file is not None:
            _check_file(conn, validation_file, "validation_file")
        conn.execute("INSERT INTO fine_tuning_jobs (id, model, base_ref, training_file, validation_file, "
                     "hyperparameters, suffix, seed, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (job_id, model, base_ref, training_file, validation_file, json.dumps(hyperparameters), suffix,
                      secrets.randbelow(2**31) if seed is None else seed, "validating_files", unix_now()))
        add_event(conn, job_id, f"Created fine-tuning job: {job_id}")
        add_event(conn, job_id, f"Validating training file: {training_file}"
                  + (f" and validation file: {validation_file}" if validation_file else ""))
    return get_job(conn, job_id)


def get_job(conn: sqlite3.Connection, job_id: str) -> Job:
    row = conn.execute("SELECT * FROM fine_tuning_jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"No fine-tuning job with id {job_id!r}.", "List the jobs to see their ids.")
    return _job(row)


def list_jobs(conn: sqlite3.Connection, after: str | None = None, limit: int = 20) -> tuple[list[Job], bool]:
    rows, more = page(conn, "fine_tuning_jobs", "fine-tuning job", after, limit)
    return [_job(r) for r in rows], more


def cancel_job(conn: sqlite3.Connection, job_id: str) -> Job:
    """Mark a job cancelled; the runner then stops its worker, if it has one, at its next step."""
    with transaction(conn):
        job = get_job(conn, job_id)
        if job.status not in UNFINISHED:
            raise ConflictError(f"The fine-tuning job {job_id} has {job.status} already: there is nothing to cancel.")
        conn.execute("UPDATE fine_tuning_jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                     (unix_now(), job_id))
        add_event(conn, job_id, "Fine-tuning job cancelled.")
    return get_job(conn, job_id)


def list_events(conn: sqlite3.Connection, job_id: str, after: str | None = None,
                limit: int = 20) -> tuple[list[Event], bool]:
    """A page of the job's events, newest first."""
    get_job(conn, job_id)
    rows, more = page(conn, "fine_tuning_events", "event of this job", after, limit, "job_id = ?", (job_id,))
    return [Event(r["id"], r["level"], r["type"], r["message"], json.loads(r["data"]) if r["data"] else None,
                  r["created_at"]) for r in rows], more


def list_checkpoints(conn: sqlite3.Connection, job_id: str, after: str | None = None,
                     limit: int = 10) -> tuple[list[Checkpoint], bool]:
    """A page of the job's checkpoints (one per epoch), newest first."""
    job = get_job(conn, job_id)
    rows, more = page(conn, "fine_tuning_checkpoints", "checkpoint of this job", after, limit, "job_id = ?",
                      (job_id,))
    return [Checkpoint(r["id"], job_id, r["step"], json.loads(r["metrics"]), r["created_at"], job.model_name)
            for r in rows], more


def fine_tuned_models(conn: sqlite3.Connection) -> list[FineTunedModel]:
    """The models that jobs made, oldest first: for the serving layer to list and load (a run directory is a model
    reference)."""
    rows = conn.execute("SELECT id, fine_tuned_model, finished_at, model FROM fine_tuning_jobs "
                        "WHERE status = 'succeeded' ORDER BY seq").fetchall()
    return [FineTunedModel(r["fine_tuned_model"], str(run_dir(r["id"])), r["finished_at"], r["model"]) for r in rows]


# -- what the runner and the worker record ------------------------------------------------------------------------


def add_event(conn: sqlite3.Connection, job_id: str, message: str, level: str = "info", data: dict | None = None,
              step: int | None = None) -> None:
    """One event, in the caller's transaction; one with a `step` is that step's metrics."""
    conn.execute("INSERT INTO fine_tuning_events (id, job_id, level, type, message, data, step, created_at) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (new_id("ftevent-"), job_id, level, "message" if step is None else "metrics", message,
                  None if data is None else json.dumps(data), step, unix_now()))


def log_event(conn: sqlite3.Connection, job_id: str, message: str, level: str = "info") -> None:
    with transaction(conn):
        add_event(conn, job_id, message, level)


def add_checkpoint(conn: sqlite3.Connection, job_id: str, step: int, metrics: dict[str, Any]) -> None:
    """In the caller's transaction."""
    conn.execute("INSERT INTO fine_tuning_checkpoints (id, job_id, step, metrics, created_at) VALUES (?, ?, ?, ?, ?)",
                 (new_id("ftckpt-"), job_id, step, json.dumps(metrics), unix_now()))


def rewind(conn: sqlite3.Connection, job_id: str, step: int) -> None:
    """Forget the metrics and checkpoints after `step`, where a resumed run goes on from (it trains those steps
    again)."""
    with transaction(conn):
        conn.execute("DELETE FROM fine_tuning_events WHERE job_id = ? AND step > ?", (job_id, step))
        conn.execute("DELETE FROM fine_tuning_checkpoints WHERE job_id = ? AND step > ?", (job_id, step))


def set_hyperparameters(conn: sqlite3.Connection, job_id: str, hyperparameters: dict[str, Any]) -> None:
    with transaction(conn):
        conn.execute("UPDATE fine_tuning_jobs SET hyperparameters = ? WHERE id = ?",
                     (json.dumps(hyperparameters), job_id))


def move(conn: sqlite3.Connection, job_id: str, expected: Status, status: Status, message: str,
         error: dict[str, Any] | None = None, **columns: Any) -> bool:
    """Change a job's status from `expected` to `status`, with an event that says so (`message`) and any other
    `columns` set; False, changing nothing, when its status is not `expected` any more (it was cancelled)."""
    if status in ("succeeded", "failed", "cancelled"):
        columns["finished_at"] = unix_now()
    if error is not None:
        columns["error"] = json.dumps(error)
    assignments = "".join(f", {name} = ?" for name in columns)
    with transaction(conn):
        updated = conn.execute(f"UPDATE fine_tuning_jobs SET status = ?{assignments} WHERE id = ? AND status = ?",
                               (status, *columns.values(), job_id, expected)).rowcount
        if updated:
            add_event(conn, job_id, message, "error" if status == "failed" else "info")
    return bool(updated)


def take_over(conn: sqlite3.Connection, job_id: str, old_runner: str | None, new_runner: str) -> bool:
    """Make `new_runner` the runner of a running job whose runner is gone; False when another took it first."""
    with transaction(conn):
        return bool(conn.execute("UPDATE fine_tuning_jobs SET runner = ? WHERE id = ? AND status = 'running' AND "
                                 "runner IS ?", (new_runner, job_id, old_runner)).rowcount)
