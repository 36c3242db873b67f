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
