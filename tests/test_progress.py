"""Step progress (rnn_ntk.progress): reports count every step of every run, change no record, and
reach one listener at a time."""
import collections
import threading
import time

import jax
import numpy as np
import pytest

from rnn_ntk.lanes import Layout, run_keys, train_many
from rnn_ntk.model import ConfigError
from rnn_ntk.progress import progress_hook, progress_listener
from rnn_ntk.train import default_hparams, make_train
from train_helpers import (CFG_F32, CFG_MB, _assert_records_same_arithmetic, _count_compiles,
                           _jit_train, _np)


@pytest.mark.parametrize("layout,every", [(Layout(1, "map", 1), 1), (Layout(2, "map", 1), 2),
                                          (Layout(2, "vmap", 1), 1)],
                         ids=["1xmap", "2xmap-every2", "2xvmap"])
def test_progress_reports_count_every_step_and_change_nothing(layout, every):
    cfg = CFG_F32                      # 4 steps, a log every 2
    R = 3                              # odd: on 2 devices, one padding run (never reported)
    keys = run_keys(4, np.arange(R)[:, None])
    hp = {"lr": np.array([0.1, 0.3, 0.2])}
    calls, overlaps, busy = [], [], threading.Lock()

    def on_progress(lanes, steps):
        if not busy.acquire(blocking=False):   # the engine must never call two at once
            overlaps.append(1)
            return
        try:
            calls.append((lanes.tolist(), steps))
            time.sleep(0.002)                  # widen the window a concurrent call would hit
        finally:
            busy.release()

    out = _np(train_many(cfg, keys, hp, layout=layout, progress=on_progress, progress_every=every))
    ref = _np(train_many(cfg, keys, hp, layout=layout))
    _assert_records_same_arithmetic(out, ref)  # bit-identical with and without progress
    assert not overlaps
    done = collections.Counter()
    for lanes, steps in calls:
        assert steps == every * cfg.log_every
        done.update({lane: steps for lane in lanes})
    assert done == {i: cfg.steps for i in range(R)}     # sums to R x steps
    n_reports = cfg.steps // cfg.log_every // every
    if layout.strategy == "map":               # one call per report per run
        assert len(calls) == R * n_reports
    else:                                      # one call per report per device batch
        assert len(calls) == layout.n_devices * n_reports
        assert sorted(len(lanes) for lanes, _ in calls) == [1] * n_reports + [2] * n_reports

    # the progress program is cached: new values do not recompile it
    with _count_compiles() as compiles:
        calls.clear()
        train_many(cfg, run_keys(5, np.arange(R)[:, None]), {"lr": np.array([0.2, 0.1, 0.05])},
                   layout=layout, progress=on_progress, progress_every=every)[
            "train_loss"].block_until_ready()
        assert compiles == [] and sum(len(lanes) * n for lanes, n in calls) == R * cfg.steps


def test_progress_every_k_logs_reports_the_remainder_at_the_end():
    cfg = CFG_MB                               # 9 steps, a log every 3: logs 1, 2, 3
    key = jax.random.key(8)
    hp = {**default_hparams(cfg), "lr": 0.02}
    calls = []
    with progress_listener(lambda lanes, steps: calls.append((lanes.tolist(), steps))):
        out = _np(jax.jit(make_train(cfg, on_log=progress_hook(cfg, 2)))(key, hp, 7))
    assert calls == [([7], 6), ([7], 3)]       # after log 2 (logs 1-2), after log 3 (the rest)
    _assert_records_same_arithmetic(out, _np(_jit_train(cfg)(key, {"lr": 0.02})))
    with pytest.raises(ConfigError, match="progress"):
        progress_hook(cfg, -1)


def test_one_progress_listener_at_a_time():
    with progress_listener(lambda lanes, steps: None):
        with pytest.raises(RuntimeError, match="already installed"):
            with progress_listener(lambda lanes, steps: None):
                pass
    with progress_listener(lambda lanes, steps: None):   # released on exit
        pass
