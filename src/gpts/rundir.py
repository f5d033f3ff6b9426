"""A training run's directory, as `gpts pretrain` and `gpts finetune` keep it.

- One process trains in it at a time: it holds `.lock` (an OS file lock, which the system releases when the
  process ends, however it ends: kill -9 included). A second run gets an error naming the first.
- Its latest model is replaced file by file (`write_model_files`), so the directory stays a model reference.
- `metrics.jsonl` grows a line per logged step; a resumed run cuts it back to its checkpoint's step first.
- A run that died before its first checkpoint left nothing worth keeping: the same command replaces it.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpts.errors import GptsError
from gpts.events import Message, Report
from gpts.fileio import is_occupied, read_jsonl, temp_dir_beside, write_text

LOCK_FILE = ".lock"


class RunLock:
    """The lock of a run directory, held from `acquire` until `release` or the end of the process."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._file = None

    def acquire(self) -> RunLock:
        path = self.run_dir / LOCK_FILE
        file = open(path, "a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read()
            file.close()
            raise _in_use(self.run_dir, holder) from None
        file.seek(0)
        file.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                   "started": time.strftime("%Y-%m-%d %H:%M:%S")}, file)
        file.flush()
        self._file = file
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the lock
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _in_use(run_dir: Path, holder: str) -> GptsError:
    try:
        who = json.loads(holder)
        running = (f"process {who['pid']} on {who['host']}, started {who['started']}: {who['command']}")
        stop = f"kill {who['pid']}"
    except (ValueError, KeyError, TypeError):
        running, stop = "another process", "stop it"
    return GptsError(f"The run directory {run_dir} is in use: {running}.",
                     f"Wait for that run to finish, or stop it (Ctrl-C where it runs, or {stop}) and then resume "
                     "it with --resume; or pass another --out.")


def clear_for_new_run(run_dir: Path, settings_file: str, worth_keeping: Callable[[Path], bool],
                      report: Report) -> None:
    """Make way for a new run in `run_dir`: nothing to do when it is absent or empty; a run of the same kind that
    died before it wrote anything worth keeping (a checkpoint, a model), killed or out of memory, and that no
    process holds, is removed; anything else stays, and is an error."""
    if not is_occupied(run_dir):
        return
    if not run_dir.is_dir() or not (run_dir / settings_file).is_file() or worth_keeping(run_dir):
        raise GptsError(f"The run directory {run_dir} already exists.",
                        "Continue that run with --resume, or pass another --out.")
    with RunLock(run_dir):  # an error naming the process when one is still at work in it
        report(Message(f"Replacing {run_dir}: the run there stopped before its first checkpoint."))
        shutil.rmtree(run_dir)


@contextmanager
def new_run_dir(run_dir: Path) -> Iterator[Path]:
    """A staging directory that becomes `run_dir` when the block ends; an error inside leaves nothing. Unlike an
    atomic replacement, it never replaces a directory that appeared at `run_dir` meanwhile (another run started
    into it): that is an error, and the other run's files stay."""
    with temp_dir_beside(run_dir) as tmp:
        staging = tmp / run_dir.name
        staging.mkdir()
        yield staging
        try:
            os.rename(staging, run_dir)  # onto nothing or an empty directory only
        except OSError as e:
            raise GptsError(f"Cannot create the run directory {run_dir}: {e.strerror or e} (did another run start "
                            "there meanwhile?).", "Pass another --out, or resume that run with --resume.") from e


def claim_new_run_dir(run_dir: Path) -> RunLock:
    """Create `run_dir` for a run that trains in place (absent or empty before), and lock it."""
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        if is_occupied(run_dir):
            raise GptsError(f"The run directory {run_dir} appeared while this run was being set up (another run?).",
                            "Pass another --out, or resume that run with --resume.") from None
    return RunLock(run_dir).acquire()


def write_model_files(run_dir: Path, write: Callable[[Path], None],
                      last: tuple[str, ...] = ("config.json", "adapter_config.json")) -> None:
    """The latest model as files of the run directory itself, each replaced atomically.

    Savers such as save_native replace a whole directory, so `write` fills a temporary one whose files then move
    in; the config files move last, so the directory never names weights it does not hold yet.
    """
    with temp_dir_beside(run_dir / ".model") as tmp:
        write(tmp / "model")
        for f in sorted((tmp / "model").iterdir(), key=lambda f: f.name in last):
            if (run_dir / f.name).is_dir():
                shutil.rmtree(run_dir / f.name)
            os.replace(f, run_dir / f.name)


def rewind_metrics(path: Path, up_to_step: int) -> list[dict[str, Any]]:
    """The rows a resumed run keeps, those of the steps its checkpoint had done (a crash may have left more),
    rewritten as the whole file."""
    rows = []
    if path.is_file():
        for line in read_jsonl(path):  # a line cut short by a crash is not JSON, and goes
            if line.error is None and isinstance(line.value, dict) and line.value.get("step", math.inf) <= up_to_step:
                rows.append(line.value)
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:  # appended: a crash loses at most this line
        f.write(json.dumps(row) + "\n")
