"""Ctrl-C and SIGTERM as a long job sees them: the first asks it to stop after its step, the second stops at once."""

import os
import signal
import threading

import pytest

from gpts.interrupt import StopRequest, stop_on_signals

from helpers import Recorder


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_first_signal_asks_second_stops_at_once(signum, code):
    stop, events = StopRequest(), Recorder()
    before = signal.getsignal(signum)
    with pytest.raises(KeyboardInterrupt), stop_on_signals(stop, events):
        os.kill(os.getpid(), signum)
        assert stop.is_set() and stop.exit_code == code
        assert "stopping after this step and saving a checkpoint" in events.warnings[0]
        os.kill(os.getpid(), signum)
        pytest.fail("the second signal did not stop at once")
    assert signal.getsignal(signum) is before  # the handlers are put back


def test_a_job_in_another_thread_is_stopped_by_whoever_runs_it():
    stop, handlers = StopRequest(), []

    def job() -> None:  # as a server runs a fine-tuning job: signals are the main thread's business
        with stop_on_signals(stop, Recorder()):
            handlers.append(signal.getsignal(signal.SIGINT))
            stop.set()

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert handlers == [signal.getsignal(signal.SIGINT)] and stop.is_set() and stop.signal is None
