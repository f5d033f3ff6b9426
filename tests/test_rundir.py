"""The lock of a run directory: one process trains in it at a time, and the lock goes with its process."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from gpts.errors import GptsError
from gpts.rundir import RunLock, claim_new_run_dir, clear_for_new_run, new_run_dir

from helpers import Recorder


def test_a_second_holder_is_refused_and_told_who_holds_it(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(GptsError) as e:
            RunLock(tmp_path).acquire()
        assert f"in use: process {os.getpid()}" in e.value.problem and f"kill {os.getpid()}" in e.value.fix
    RunLock(tmp_path).acquire().release()  # released with the block


def test_the_lock_goes_with_a_killed_process(tmp_path):
    code = textwrap.dedent(f"""
        import time
        from gpts.rundir import RunLock
        lock = RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    with pytest.raises(GptsError, match=f"process {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    RunLock(tmp_path).acquire().release()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()


def test_a_run_that_died_before_its_first_checkpoint_makes_way(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "settings.yaml").write_text("x: 1")
    events = Recorder()
    clear_for_new_run(run, "settings.yaml", lambda d: False, events)
    assert not run.exists() and "stopped before its first checkpoint" in events.messages()[0]

    for name, has_checkpoint in (("other", False), ("finished", True)):  # not a run of this kind; a run to resume
        (tmp_path / name).mkdir()
        (tmp_path / name / ("notes.txt" if name == "other" else "settings.yaml")).write_text("keep me")
        with pytest.raises(GptsError, match="already exists"):
            clear_for_new_run(tmp_path / name, "settings.yaml", lambda d: has_checkpoint, events)
        assert (tmp_path / name).is_dir()


def test_a_new_run_never_replaces_one_that_appeared_meanwhile(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(GptsError, match="another run"), new_run_dir(run) as staging:
        (staging / "mine.txt").write_text("prepared while the other run started")
        run.mkdir()
        (run / "theirs.txt").write_text("the other run's")
    assert [p.name for p in tmp_path.iterdir()] == ["run"] and [p.name for p in run.iterdir()] == ["theirs.txt"]
    with pytest.raises(GptsError, match="another run"):
        claim_new_run_dir(run)
    claim_new_run_dir(tmp_path / "free").release()
