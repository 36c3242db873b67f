"""The sweep's cost model (rnn_ntk.sweep.cost): sizes, progress spacing, record bytes."""
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_ntk import sweep, train
from rnn_ntk.sweep import cost
from sweep_helpers import parse


def test_parse_size():
    assert sweep.parse_size("512M") == 512 * 2 ** 20
    assert sweep.parse_size("1.5GiB") == int(1.5 * 2 ** 30)
    assert sweep.parse_size("2e9") == 2 * 10 ** 9
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory size"):
            sweep.parse_size(bad)


@pytest.mark.parametrize("steps,log_every,width", [(200, 20, 32), (300, 10, 128), (4, 2, 4), (0, 1, 4),
                                                   (1000, 10, 128), (20000, 10, 256),
                                                   (3000, 10, 1024), (100000, 100, 256),
                                                   (10 ** 7, 1, 1024)])
def test_progress_every_spaces_reports_by_estimated_work(steps, log_every, width):
    cfg = sweep.build_config(parse(model=f"width = {width}"), (), width).replace(
        steps=steps, log_every=log_every)
    n = steps // log_every
    k = sweep.progress_every(cfg, "cpu")
    run_s, gap = sweep.run_seconds(cfg, "cpu"), sweep.PROGRESS_INTERVAL_S
    assert isinstance(k, int)
    if run_s < sweep.PROGRESS_MIN_RUN_S:        # too short for a report: the chunk's end reports
        assert k == 0
        return
    assert 1 <= k <= max(n, 1)
    spacing = run_s * k / n                      # estimated work between two reports
    assert k == n or spacing >= gap              # never closer than the interval (unless once per run)
    assert k == 1 or run_s * (k - 1) / n < 2 * gap   # and not much rarer than asked
    assert (k == n) == (run_s < 2 * gap) or k == n == 1


@pytest.mark.parametrize("extra", ["", "save_params = true", "linearized = true\nsave_params = true",
                                   "linearized = true\nkernel_stride = 1\nn_probe = 2"])
def test_output_bytes_counts_every_record_of_a_run(extra):
    # what a run returns, counted from the traced training program's shapes (8 bytes an entry)
    spec = parse(model="width = [3, 5]", task="output_dim = 2", train=extra,
                 sweep_="seed = 0\npack_widths = true")
    cfg = sweep.make_plan(spec, max_memory=2 ** 30).programs[0].cfg
    assert cfg.width_array == 5                       # packed: the records are at array width
    out = jax.eval_shape(train.make_train(cfg), train.run_key(0, ()), train.default_hparams(cfg))
    assert sweep.output_bytes(cfg) == 8 * sum(int(np.prod(a.shape)) for a in jax.tree.leaves(out))


def test_run_bytes_scales_with_the_item_size():
    cfg = sweep.build_config(parse(model="width = 16"), (), 16)
    assert cost.run_bytes(cfg.replace(dtype="float64")) == 2 * cost.run_bytes(cfg)
    assert cost.run_bytes(cfg.replace(model=cfg.model.replace(width=32))) > cost.run_bytes(cfg)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs /proc/meminfo")
def test_available_memory_is_a_fraction_of_the_available_host_memory():
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    assert sweep.available_memory("cpu") == pytest.approx(cost.MEMORY_FRACTION * avail, rel=0.1)
