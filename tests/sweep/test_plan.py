"""Sweep planning (rnn_ntk.sweep.plan): runs, buckets, the width-packing planner, chunking,
run keys. Nothing here trains.
"""
import itertools
import math

import jax
import numpy as np
import pytest

from rnn_ntk import sweep, train
from rnn_ntk.sweep import SpecError
from sweep_helpers import parse, spec_text


def test_axes_zip_and_runs():
    spec = parse(model='width = [4, 8]\nactivation = ["relu", "tanh"]\ntrainable = [["W"], ["W", "v"]]',
                 train="lr = [0.1, 0.2]",
                 sweep_="seeds = 2\n[sweep.zip]\nsigma_w = [1.0, 1.5]\nlabel_noise = [0.0, 0.1]")
    assert spec.axis_names == ["width", "activation", "trainable", "lr", "sigma_w", "label_noise",
                               "seed"]
    assert spec.axis("trainable").values == (("W",), ("W", "v"))
    assert spec.zips == (("sigma_w", "label_noise"),)
    runs = sweep.expand_runs(spec)
    expected = {(w, a, t, lr, s, ln, seed)
                for w, a, t, lr, (s, ln), seed in itertools.product(
                    [4, 8], ["relu", "tanh"], ["W", "Wv"], [0.1, 0.2], [(1.0, 0.0), (1.5, 0.1)],
                    [0, 1])}
    assert {r.coords for r in runs} == expected and len(runs) == len(expected) == 64
    res = spec.resolved
    assert res["model"]["width"] == [4, 8] and res["train"]["lr"] == [0.1, 0.2]
    assert res["sweep"]["zip"] == [{"sigma_w": [1.0, 1.5], "label_noise": [0.0, 0.1]}]
    assert res["sweep"]["seed"] == [0, 1]
    # defaults are resolved, and the readout decides the target when it is not given
    assert res["train"]["optimizer"] == "sgd" and res["model"]["readout"] == "last"
    cfg = sweep.build_config(spec, runs[0].static, 4)
    assert cfg.task.target == "last" and cfg.model.input_dim == 3

    # static axes (activation, trainable) split buckets; widths pack or not as forced
    for pack, n_prog in ((True, 4), (False, 8)):
        s2 = sweep.parse_spec(spec.text.replace("[sweep]", f"[sweep]\npack_widths = {str(pack).lower()}"))
        plan = sweep.make_plan(s2, max_memory=2 ** 30)
        assert len(plan.programs) == n_prog
        seen = []
        for p in plan.programs:
            statics = {plan.runs[i].static for i in p.runs}
            assert len(statics) == 1
            assert {plan.runs[i].width for i in p.runs} == set(p.widths)
            assert p.cfg.width_array == max(p.widths)
            assert p.cfg.array_width == (max(p.widths) if pack else None)
            # lanes: lr x zip x seed x widths of the program
            assert len(p.runs) == 2 * 2 * 2 * len(p.widths)
            seen += p.runs
        assert sorted(seen) == list(range(64))


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in _partitions(rest):
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]
        yield [[first]] + part


@pytest.mark.parametrize("seed", range(6))
def test_width_groups_optimal_against_all_partitions(seed):
    rng = np.random.default_rng(seed)
    widths = sorted(rng.choice(np.arange(2, 300), size=5, replace=False).tolist())
    counts = {w: int(rng.integers(1, 6)) for w in widths}
    a, b, comp = rng.uniform(1e-5, 1e-3), rng.uniform(0, 0.5), rng.uniform(0.1, 20)

    def cost(M, n):
        return n * (a * M * M + b)

    def total(groups):
        return sum(comp + cost(max(g), sum(counts[w] for w in g)) for g in groups)

    best = min(total(p) for p in _partitions(widths))
    got = sweep.choose_width_groups(counts, cost, comp)
    assert sorted(w for g in got for w in g) == widths
    assert math.isclose(total(got), best, rel_tol=1e-12)
    # the extremes: free compiles never pack, very expensive compiles always pack
    assert sweep.choose_width_groups(counts, cost, 0.0) == [(w,) for w in widths]
    assert sweep.choose_width_groups(counts, cost, 1e12) == [tuple(widths)]


def test_auto_packing_follows_the_cost_model():
    small = parse(model="width = [4, 8, 16]", sweep_='seeds = 2\npack_widths = "auto"')
    plan = sweep.make_plan(small, max_memory=2 ** 30)
    assert [p.widths for p in plan.programs] == [(4, 8, 16)]
    # padding width 8 to 2048 for many steps costs far more than a compile
    big = sweep.parse_spec(spec_text(model="width = [8, 2048]", sweep_="seeds = 2").replace(
        "steps = 4", "steps = 4000").replace("n_train = 6", "n_train = 64"))
    plan = sweep.make_plan(big, max_memory=2 ** 34)
    assert [p.widths for p in plan.programs] == [(8,), (2048,)]
    assert plan.groups == {plan.programs[0].bucket: [[8], [2048]]}
    # a stored grouping (resume) is kept even where the cost model would decide otherwise
    plan2 = sweep.make_plan(big, max_memory=2 ** 34, groups={plan.programs[0].bucket: [[8, 2048]]})
    assert [p.widths for p in plan2.programs] == [(8, 2048)]


def test_chunks_fit_the_memory_budget():
    spec = parse(model="width = [4, 8]", train="lr = [0.1, 0.2, 0.3]", sweep_="seeds = 4\npack_widths = true")
    big = sweep.make_plan(spec, max_memory=2 ** 30)
    p = big.programs[0]
    assert len(big.chunks) == 1 and big.chunks[0].size == 24
    devices = jax.devices()
    budget = sweep.chunk_memory(p, 5, devices, big.backend)
    assert sweep.chunk_memory(p, 6, devices, big.backend) > budget
    plan = sweep.make_plan(spec, max_memory=budget)
    sizes = {c.size for c in plan.chunks}
    assert len(sizes) == 1 and sizes.pop() <= 5
    assert all(len(c.runs) <= c.size for c in plan.chunks)
    assert all(sweep.chunk_memory(p, c.size, devices, plan.backend) <= budget for c in plan.chunks)
    covered = [i for c in plan.chunks for i in c.runs]
    assert sorted(covered) == list(range(24))
    assert len({c.name for c in plan.chunks}) == len(plan.chunks)
    # the spec's chunk_size caps lanes as well
    capped = sweep.make_plan(parse(model="width = [4, 8]", train="lr = [0.1, 0.2, 0.3]",
                                   sweep_="seeds = 4\npack_widths = true\nchunk_size = 7"),
                             max_memory=2 ** 30)
    assert [len(c.runs) for c in capped.chunks] == [6, 6, 6, 6]
    # finished runs are not planned again
    done = {big.runs[i].coords for i in range(10)}
    rest = sweep.make_plan(spec, max_memory=2 ** 30, done=done)
    assert sorted(i for c in rest.chunks for i in c.runs) == list(range(10, 24))
    assert rest.n_done == 10
    with pytest.raises(SpecError, match=r"one run needs about .* more than the memory budget"):
        sweep.make_plan(spec, max_memory=1000)


def _key_data(run):
    return np.asarray(jax.random.key_data(train.run_key(run.seed, run.key_coords)))


def test_run_keys_depend_on_values_not_positions():
    a = parse(model="width = [4, 8]", train="lr = [0.1, 0.2]", sweep_="seed = [0, 1]")
    b = parse(model="width = [2, 4, 8, 16]", train="lr = [0.05, 0.1, 0.2]", sweep_="seed = [5, 1, 0]")
    runs_b = {r.coords: r for r in sweep.expand_runs(b)}
    for r in sweep.expand_runs(a):
        np.testing.assert_array_equal(_key_data(r), _key_data(runs_b[r.coords]))
        # default: the key is the seed's key, shared by every other coordinate (paired design)
        np.testing.assert_array_equal(_key_data(r), np.asarray(jax.random.key_data(jax.random.key(r.seed))))
    c = parse(model="width = [4, 8]", train="lr = [0.1, 0.2]", sweep_='seed = [0, 1]\nkey_axes = ["lr"]')
    d = parse(model="width = [8]", train="lr = [0.3, 0.2]", sweep_='seed = [1]\nkey_axes = ["lr"]')
    keys = {r.coords: _key_data(r) for r in sweep.expand_runs(c)}
    assert not np.array_equal(keys[(4, 0.1, 0)], keys[(4, 0.2, 0)])
    np.testing.assert_array_equal(keys[(4, 0.1, 0)], keys[(8, 0.1, 0)])
    for r in sweep.expand_runs(d):
        if r.coords[1] == 0.2:
            np.testing.assert_array_equal(_key_data(r), keys[(8, 0.2, 1)])
    with pytest.raises(SpecError, match="sweep.key_axes: 'lrr' is not a sweep axis"):
        parse(train="lr = [0.1, 0.2]", sweep_='key_axes = ["lrr"]')


def test_demo_spec_is_valid_and_packs():
    spec = sweep.demo_spec()
    plan = sweep.make_plan(spec, max_memory=2 ** 32)
    assert spec.axis_names == ["width", "trainable", "seed"]
    assert len(plan.runs) == 4 * 2 * 3
    text = sweep.describe_plan(plan)
    assert "24 runs" in text and "estimated time" in text


# ---------------------------------------------------------------------------------------------
# device-aware planning, on CPU with faked accelerators

GiB, MiB = 2 ** 30, 2 ** 20


def _gpu_spec(seeds=60, width=1024):
    return parse(model=f"width = {width}", sweep_=f"seeds = {seeds}")


def _per_lane(p):
    """What one vmapped lane of a chunk holds: the run in flight and its records (chunk_memory)."""
    return p.run_bytes + p.out_bytes + 64


@pytest.mark.parametrize("in_use", [0, 300 * MiB])
def test_chunks_fill_the_fraction_of_one_fake_gpus_memory(in_use):
    from sweep_helpers import FakeDevice
    dev = FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": in_use})
    plan = sweep.make_plan(_gpu_spec(), devices=[dev])
    p = plan.programs[0]
    free = 2 * GiB - in_use
    expected = math.floor(sweep.MEMORY_FRACTION * free / _per_lane(p))
    assert 2 <= expected < len(plan.runs)                       # memory binds, not the run count
    assert plan.backend == "gpu" and plan.memory_source == "memory_stats"
    assert plan.device_memory == free and plan.max_memory == int(sweep.MEMORY_FRACTION * free)
    assert p.chunk_lanes == expected
    assert max(c.size for c in plan.chunks) <= expected
    assert sorted(i for c in plan.chunks for i in c.runs) == list(range(len(plan.runs)))
    # a chunk is one vmap of all its lanes on the device (the same estimate in choose_layout)
    assert train.choose_layout(p.cfg, expected, devices=[dev]) == train.Layout(1, "vmap", expected)


def test_chunks_on_two_fake_gpus_use_both_devices_memory():
    from sweep_helpers import FakeDevice
    devs = [FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": 100 * MiB}),
            FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": 500 * MiB})]
    plan = sweep.make_plan(_gpu_spec(seeds=120), devices=devs)
    p = plan.programs[0]
    per_dev = sweep.MEMORY_FRACTION * (2 * GiB - 500 * MiB)   # the fuller device bounds both
    # brute force: the most lanes L whose chunk (ceil(L/2) runs on each device, every lane's
    # records) fits the fraction of both devices' memory
    fits = [L for L in range(1, len(plan.runs) + 1)
            if -(-L // 2) * 2 * p.run_bytes + L * (p.out_bytes + 64) <= int(per_dev * 2)]
    assert 4 <= max(fits) < len(plan.runs)
    assert p.chunk_lanes == max(fits)
    lay = train.choose_layout(p.cfg, p.chunk_lanes, devices=devs)
    assert lay.n_devices == 2 and lay.strategy == "vmap"


def test_one_run_must_fit_one_fake_gpu():
    from sweep_helpers import FakeDevice
    spec = _gpu_spec(seeds=4)
    p = sweep.make_plan(spec, max_memory=2 ** 40).programs[0]
    # each device has room for 0.75 of a run: two devices would hold one run between them
    limit = int(0.75 * _per_lane(p) / sweep.MEMORY_FRACTION)
    devs = [FakeDevice({"bytes_limit": limit}) for _ in range(2)]
    with pytest.raises(SpecError, match="one run needs about .* more than the memory budget of one device"):
        sweep.make_plan(spec, devices=devs)
    # on host devices (shared RAM) the same budget is the whole chunk's
    host = [FakeDevice(None, platform="cpu") for _ in range(2)]
    assert sweep.make_plan(spec, devices=host, max_memory=int(2 * 0.75 * _per_lane(p)) + 2 * 64)


def test_max_memory_overrides_the_fake_gpus_memory():
    from sweep_helpers import FakeDevice
    dev = FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": 0})
    spec = _gpu_spec()
    p = sweep.make_plan(spec, devices=[dev]).programs[0]
    budget = 10 * _per_lane(p) + 5
    plan = sweep.make_plan(spec, devices=[dev], max_memory=budget)
    assert plan.max_memory == budget and plan.memory_fraction is None
    assert plan.programs[0].chunk_lanes == 10
    assert "set by --max-memory" in sweep.describe_plan(plan)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/meminfo"), reason="needs /proc/meminfo")
@pytest.mark.parametrize("stats", [None, RuntimeError("no memory_stats on this backend")])
def test_fake_gpu_without_memory_stats_plans_for_host_ram(stats):
    from sweep_helpers import FakeDevice, host_available_bytes
    devs = [FakeDevice(stats), FakeDevice(stats)]
    plan = sweep.make_plan(_gpu_spec(seeds=8), devices=devs)
    assert plan.memory_source == "host RAM"
    assert plan.device_memory * 2 == pytest.approx(host_available_bytes(), rel=0.1)
    assert plan.max_memory == pytest.approx(sweep.MEMORY_FRACTION * host_available_bytes(), rel=0.1)
    assert "host RAM" in sweep.describe_plan(plan)


def test_plan_description_says_which_memory_it_planned_for():
    from sweep_helpers import FakeDevice
    dev = FakeDevice({"bytes_limit": 2 * GiB, "bytes_in_use": GiB // 2}, kind="Fake H100")
    text = sweep.describe_plan(sweep.make_plan(_gpu_spec(seeds=4), devices=[dev]))
    line = text.splitlines()[1]
    assert "backend gpu, 1 device(s)" in line and "Fake H100" in line
    assert "1.5 GiB free per device (memory_stats)" in line
    assert f"{sweep.MEMORY_FRACTION:g} of it" in line
    # real host devices: the host RAM shared by them
    cpu = sweep.describe_plan(sweep.make_plan(_gpu_spec(seeds=4))).splitlines()[1]
    assert "host RAM" in cpu and f"shared by the {len(jax.devices())} device(s)" in cpu


def test_default_budget_on_host_devices_is_the_fraction_of_host_ram():
    from sweep_helpers import host_available_bytes
    plan = sweep.make_plan(_gpu_spec(seeds=4))
    assert plan.backend == "cpu" and plan.memory_source == "host RAM"
    assert plan.max_memory == pytest.approx(sweep.MEMORY_FRACTION * host_available_bytes(), rel=0.1)
    assert plan.memory_fraction == sweep.MEMORY_FRACTION
