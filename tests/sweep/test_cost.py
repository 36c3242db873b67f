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


GiB, MiB = 2 ** 30, 2 ** 20


def test_device_memory_is_each_devices_free_memory_where_reported():
    from sweep_helpers import FakeDevice
    one = FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": 300 * MiB})
    assert cost.device_memory([one]) == 2 * GiB - 300 * MiB
    assert cost.memory_source([one]) == "memory_stats"
    # no bytes_in_use reported: the whole limit
    assert cost.device_memory([FakeDevice({"bytes_limit": 3 * GiB})]) == 3 * GiB
    # several devices: the least free of them (each must hold its share)
    two = [one, FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": 1 * GiB})]
    assert cost.device_memory(two) == 1 * GiB
    # the default budget: the fraction of every device's memory
    assert cost.available_memory(devices=two) == int(cost.MEMORY_FRACTION * 2 * GiB)
    assert cost.available_memory(devices=[one]) == int(cost.MEMORY_FRACTION * (2 * GiB - 300 * MiB))


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs /proc/meminfo")
@pytest.mark.parametrize("stats", [None, {}, {"bytes_in_use": 5}, RuntimeError("unsupported"),
                                   "cpu", "mixed"])
def test_device_memory_falls_back_to_host_ram_shared_by_the_devices(stats):
    from sweep_helpers import FakeDevice, host_available_bytes
    if stats == "cpu":       # host devices share the host RAM, whatever they report
        devs = [FakeDevice({"bytes_limit": GiB}, platform="cpu") for _ in range(2)]
    elif stats == "mixed":   # one device without a limit: no per-device number for all of them
        devs = [FakeDevice({"bytes_limit": GiB}), FakeDevice(None)]
    else:
        devs = [FakeDevice(stats) for _ in range(2)]
    assert cost.memory_source(devs) == "host RAM"
    assert cost.device_memory(devs) == pytest.approx(host_available_bytes() / 2, rel=0.1)
    assert cost.device_memory(devs[-1:]) == pytest.approx(host_available_bytes(), rel=0.1)


def test_device_memory_of_the_real_cpu_devices_is_the_host_ram():
    from sweep_helpers import host_available_bytes
    devs = jax.devices()
    assert cost.memory_source(devs) == "host RAM"
    assert cost.device_memory(devs) * len(devs) == pytest.approx(host_available_bytes(), rel=0.1)
