"""The job runner of `gpts serve`: a thread that moves fine-tuning jobs along and runs each in a worker process.

At each tick (every POLL_S seconds, or at once after `wake`, which the routes call when a job is created or
cancelled) it
- reaps the workers that ended: a worker records its job's end itself (succeeded, failed, stopped for a cancel,
  paused for a shutdown), so a job still running after its worker is gone failed, and says so;
- asks the workers of cancelled jobs to stop;
- validates new jobs (validating_files -> queued, or failed);
- takes over the jobs left running by a runner that is gone (a server that stopped, or was killed): their worker
  resumes the run from its last checkpoint;
- starts queued jobs, oldest first, while fewer than `slots` workers run.

A worker is `python -m gpts.jobs run JOB_ID` (worker.py), so torch and the model live in that process only, and a
crash there leaves the server standing. It runs in a session of its own, out of reach of a Ctrl-C meant for the
server: the runner decides when it stops. Its standard input is a pipe from the runner, and closing it asks the
worker to stop at its next step with a checkpoint. The system closes it too when the server dies, however it dies,
so no worker outlives its server by more than a step.

Several servers may share one store: a job is claimed in a transaction, so one runner runs it, and a runner is known
by its process and a token ("PID:TOKEN"), so a job is taken over only when its runner's process has ended (or, in the
same process, when that runner was stopped).
"""

from __future__ import annotations

import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from gpts import paths
from gpts.errors import GptsError, naming
from gpts.events import Message, Report, ignore
from gpts.finetune_data import check_file
from gpts.jobs.fine_tuning import Job, get_job, move, take_over
from gpts.jobs.uploads import upload_path
from gpts.store.db import connect

POLL_S = 0.5
STOP_TIMEOUT_S = 60.0  # how long a stopping worker may take to finish its step and save a checkpoint


@dataclass
class Worker:
    job_id: str
    process: subprocess.Popen
    stopping: bool = False

    def stop(self) -> None:
        """Ask the worker to stop at its next step, saving a checkpoint."""
        if not self.stopping:
            self.stopping = True
            self.process.stdin.close()


class JobRunner:
    def __init__(self, slots: int = 1, report: Report = ignore,
                 on_tick: Callable[[sqlite3.Connection], None] | None = None):
        """`slots`: how many jobs run at once; `report`: where the runner's own troubles go (warnings); `on_tick`:
        called at each tick with the runner's store connection (the server serves the new fine-tuned models)."""
        if slots < 1:
            raise GptsError(f"slots={slots}: a job runner needs at least one.", "Run one job at a time: slots=1.")
        self.slots, self.report, self.on_tick = slots, report, on_tick
        self.token = f"{os.getpid()}:{secrets.token_hex(8)}"
        self.workers: dict[str, Worker] = {}
        self._stop_timeout = STOP_TIMEOUT_S
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpts-job-runner", daemon=True)

    def start(self) -> JobRunner:
        self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the jobs now rather than at the next tick (a job was created or cancelled)."""
        self._wake.set()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every worker at its next step, with a checkpoint, and the runner with them: the jobs stay running in
        the database, and the next runner resumes them. A worker that takes longer than `timeout` is killed (its job
        then resumes from the checkpoint before, at the end of an epoch)."""
        self._stop_timeout = timeout
        self._stopping.set()
        self._wake.set()
        self._thread.join()

    # -- the thread ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        conn = connect()
        try:
            while not self._stopping.is_set():
                try:
                    self._tick(conn)
                except Exception as e:  # the store, the disk, or a bug: say so, and try again at the next tick
                    self.report(Message(f"The job runner failed a tick: {type(e).__name__}: {e}", level="warning"))
                self._wake.wait(POLL_S)
                self._wake.clear()
        finally:
            self._stop_workers()
            conn.close()

    def _tick(self, conn: sqlite3.Connection) -> None:
        self._reap(conn)
        if self.on_tick is not None:
            self.on_tick(conn)
        for job_id, worker in self.workers.items():
            if get_job(conn, job_id).status != "running":
                worker.stop()
        for row in conn.execute("SELECT id FROM fine_tuning_jobs WHERE status = 'validating_files' "
                                "ORDER BY seq").fetchall():
            self._validate(conn, get_job(conn, row["id"]))
        for row in conn.execute("SELECT id, runner FROM fine_tuning_jobs WHERE status = 'running' "
                                "ORDER BY seq").fetchall():
            if len(self.workers) < self.slots and self._gone(row["runner"]) and take_over(
                    conn, row["id"], row["runner"], self.token):
                self._start(conn, get_job(conn, row["id"]))
        while len(self.workers) < self.slots:
            row = conn.execute("SELECT id FROM fine_tuning_jobs WHERE status = 'queued' ORDER BY seq").fetchone()
            if row is None:
                break
            if move(conn, row["id"], "queued", "running", "Fine-tuning job started", runner=self.token):
                self._start(conn, get_job(conn, row["id"]))

    def _reap(self, conn: sqlite3.Connection) -> None:
        for job_id, worker in list(self.workers.items()):
            code = worker.process.poll()
            if code is None:
                continue
            del self.workers[job_id]
            job = get_job(conn, job_id)
            if job.status == "running" and job.runner == self.token:
                how = (f"exit status {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"
                       + (": out of memory?" if -code == signal.SIGKILL else ""))
                move(conn, job_id, "running", "failed", "The worker process ended unexpectedly.",
                     error={"code": "worker_died", "param": None,
                            "message": f"The worker process of the job ended unexpectedly ({how}). Its log: "
                                       f"{job.log_path}. Create the job again."})

    def _validate(self, conn: sqlite3.Connection, job: Job) -> None:
        """The checks of the files that need no model (gpts.finetune_data.check_file; the worker reads them with the
        model's tokenizer later)."""
        counts = []
        for param, file_id in (("training_file", job.training_file), ("validation_file", job.validation_file)):
            if file_id is None:
                continue
            try:
                with naming({upload_path(file_id): file_id}):
                    fmt, examples = check_file(upload_path(file_id))
            except GptsError as e:
                move(conn, job.id, "validating_files", "failed", f"Validation of {file_id} failed.",
                     error={"code": f"invalid_{param}", "param": param, "message": str(e)})
                return
            counts.append(f"{file_id}: {examples} {fmt} examples")
        move(conn, job.id, "validating_files", "queued",
             f"Files validated ({'; '.join(counts)}), moving job to queued state")

    def _gone(self, runner: str | None) -> bool:
        """Whether the runner `runner` ("PID:TOKEN") has stopped."""
        if runner is None:
            return True
        pid = runner.partition(":")[0]
        if int(pid) == os.getpid():
            return runner != self.token
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # another user's process
            return False
        return False

    def _start(self, conn: sqlite3.Connection, job: Job) -> None:
        """A worker for `job`, which this runner has just claimed (running)."""
        try:
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log_path, "ab") as log:
                process = subprocess.Popen([sys.executable, "-m", "gpts.jobs", "run", job.id], stdin=subprocess.PIPE,
                                           stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                           env={**os.environ, "GPTS_HOME": str(paths.home())})
        except OSError as e:
            move(conn, job.id, "running", "failed", "The worker process could not start.",
                 error={"code": "worker_not_started", "param": None,
                        "message": f"The worker process could not start: {e.strerror or e}."})
            return
        self.workers[job.id] = Worker(job.id, process)

    def _stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            try:
                worker.process.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                self.report(Message(f"The worker of {worker.job_id} did not stop within {self._stop_timeout:g} s: "
                                    "killed; the job resumes from its last checkpoint.", level="warning"))
                worker.process.kill()
                worker.process.wait()
        self.workers.clear()
