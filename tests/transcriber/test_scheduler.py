"""Admission: what the scheduler lets in, judged on buffered audio (no worker running)."""

import numpy as np
import pytest

from hubbub.audio import SAMPLE_RATE
from hubbub.engines.base import SessionOptions
from hubbub.transcriber.scheduler import Scheduler, SchedulerFull


def _noop(_delivery) -> None:
    pass


def test_a_file_upload_backlog_does_not_refuse_live_sessions(cpu_engine):
    sched = Scheduler(cpu_engine, max_sessions=3)
    upload = sched.open("upload", SessionOptions(), _noop, realtime=False)
    sched.push(upload, np.zeros(10 * SAMPLE_RATE, np.float32))  # a file waits 10 s deep
    assert sched.max_lag_s() == 0.0  # a file is not live: its backlog is not lag
    live = sched.open("live-1", SessionOptions(), _noop)
    sched.push(live, np.zeros(5 * SAMPLE_RATE, np.float32))
    assert sched.max_lag_s() == pytest.approx(5.0)
    # A live session that lags past the bound does refuse the next live one...
    with pytest.raises(SchedulerFull, match="lag"):
        sched.open("live-2", SessionOptions(), _noop)
    # ...but not another file, which waits its turn.
    sched.open("upload-2", SessionOptions(), _noop, realtime=False)
    with pytest.raises(SchedulerFull, match="3 of 3"):
        sched.open("upload-3", SessionOptions(), _noop, realtime=False)
