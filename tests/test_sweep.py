"""Sweep specs: parsing, axes and zips, validation, the width-packing planner, chunking, run keys.

Nothing here trains (the end-to-end checks through the CLI are in test_cli.py).
"""
import itertools
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_ntk import sweep, train
from rnn_ntk.sweep import SpecError

BASE = """
[model]
{model}
[task]
kind = "random_labels"
n_train = 6
n_test = 4
length = 4
input_dim = 3
{task}
[train]
steps = 4
log_every = 2
{train}
[sweep]
{sweep}
"""


def spec_text(model="width = 4", task="", train="", sweep_="seed = 0"):
    return BASE.format(model=model, task=task, train=train, sweep=sweep_)


def parse(**kw):
    return sweep.parse_spec(spec_text(**kw), "<test>")


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


def test_shared_dims_and_batch_size_forms():
    spec = sweep.parse_spec(spec_text(model="width = 4\ninput_dim = 3", task="").replace(
        "input_dim = 3\n\n[train]", "\n[train]") + "", "<t>")
    cfg = sweep.build_config(spec, (), 4)
    assert cfg.model.input_dim == cfg.task.input_dim == 3
    spec = parse(train='batch_size = ["full", 2]')
    assert spec.axis("batch_size").values == (None, 2)
    # an axis mixing kinds of values gets string coordinates (so ds.sel(batch_size="2") works)
    assert [r.coords[0] for r in sweep.expand_runs(spec)] == ["full", "2"]
    assert spec.axis("batch_size").coords == ["full", "2"]
    # zipped axes: coordinates are the unique values (the store is dense over them)
    z = parse(model="", sweep_="[sweep.zip]\nwidth = [4, 4, 8]\nlr = [0.1, 0.2, 0.1]")
    assert z.axis("width").coords == [4, 8] and z.axis("lr").coords == [0.1, 0.2]
    assert [r.coords for r in sweep.expand_runs(z)] == [(4, 0.1, 0), (4, 0.2, 0), (8, 0.1, 0)]
    # dotted names (bare or quoted) and several zip groups, each one factor of the product
    z2 = parse(model="", sweep_=('[[sweep.zip]]\nmodel.width = [4, 8]\n"train.lr" = [0.1, 0.2]\n'
                                 '[[sweep.zip]]\nsigma_w = [1.0, 2.0, 3.0]\nlabel_noise = [0.0, 0.1, 0.2]'))
    assert z2.zips == (("width", "lr"), ("sigma_w", "label_noise"))
    runs = sweep.expand_runs(z2)
    assert len(runs) == 6
    assert {(r.coords[0], r.coords[1]) for r in runs} == {(4, 0.1), (8, 0.2)}
    assert {(r.coords[2], r.coords[3]) for r in runs} == {(1.0, 0.0), (2.0, 0.1), (3.0, 0.2)}
    with pytest.raises(SpecError, match="model.input_dim: set in \\[model\\] and in \\[task\\]"):
        parse(model="width = 4\ninput_dim = 3")


def test_all_problems_reported_at_once():
    text = spec_text(model='widht = 4\nactivation = "relu"\ntrainable = []',
                     train='lr = inf\nsteps_ = 3',
                     sweep_="seed = 0\n[sweep.zip]\nsigma_w = [1.0, 2.0]\nmomentum = [0.5]")
    with pytest.raises(SpecError) as e:
        sweep.parse_spec(text, "<t>")
    probs = e.value.problems
    expected = ["model.widht: unknown key (did you mean 'width'?)",
                "model.trainable: must name at least one of ['W', 'U', 'b', 'v']",
                "train.lr: learning rate must be finite and > 0, got inf",
                "train.steps_: unknown key (did you mean 'steps'?)",
                "sweep.zip: zipped axes must have equal lengths (sigma_w has 2, momentum has 1)",
                "model.width: required"]
    for msg in expected:
        assert msg in probs, (msg, probs)
    assert all("\n" not in p for p in probs)


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
    budget = sweep._chunk_memory(p, 5, devices, big.backend)
    assert sweep._chunk_memory(p, 6, devices, big.backend) > budget
    plan = sweep.make_plan(spec, max_memory=budget)
    sizes = {c.size for c in plan.chunks}
    assert len(sizes) == 1 and sizes.pop() <= 5
    assert all(len(c.runs) <= c.size for c in plan.chunks)
    assert all(sweep._chunk_memory(p, c.size, devices, plan.backend) <= budget for c in plan.chunks)
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


def test_parse_size():
    assert sweep.parse_size("512M") == 512 * 2 ** 20
    assert sweep.parse_size("1.5GiB") == int(1.5 * 2 ** 30)
    assert sweep.parse_size("2e9") == 2 * 10 ** 9
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError, match="memory size"):
            sweep.parse_size(bad)


def test_example_spec_is_valid():
    spec = sweep.load_spec(Path(__file__).resolve().parents[1] / "experiments" / "example.toml")
    assert spec.zips == (("width", "lr"),)
    plan = sweep.make_plan(spec, max_memory=2 ** 32)
    # trainable x eps_x x zip(width, lr) x 4 seeds
    assert len(plan.runs) == 2 * 2 * 3 * 4
    assert {(r.coords[2], r.coords[3]) for r in plan.runs} == {(64, 0.4), (128, 0.2), (256, 0.1)}


def test_override_spec_replaces_one_line_entries_and_revalidates():
    base = parse(model="width = [4, 8]", train="lr = 0.5   # a comment\nproj_radius = 3.0",
                 sweep_="seeds = 2\npack_widths = \"auto\"")
    sp = sweep.override_spec(base, {"model.width": [4, 8, 16], "train.lr": 0.25,
                                    "task.n_train": 8, "sweep.seeds": 3,
                                    "sweep.pack_widths": True, "train.proj_radius": math.inf})
    assert sp.axis("width").values == (4, 8, 16)
    assert sp.fixed["train"]["lr"] == 0.25 and sp.fixed["train"]["proj_radius"] == math.inf
    assert sp.fixed["task"]["n_train"] == 8 and sp.axis("seed").values == (0, 1, 2)
    assert sp.pack_widths is True
    # everything not overridden is as before, and the base spec is untouched
    for s in ("model", "task", "train"):
        for k, v in base.resolved[s].items():
            if k not in ("width", "lr", "n_train", "proj_radius"):
                assert sp.resolved[s][k] == v, k
    assert base.axis("width").values == (4, 8) and base.fixed["train"]["lr"] == 0.5
    # a key that is not a one-line entry of its table, a bad key, a multi-line entry, a bad value
    with pytest.raises(SpecError, match="'train.momentum'"):
        sweep.override_spec(base, {"train.momentum": 0.5})
    with pytest.raises(SpecError, match="'width'"):
        sweep.override_spec(base, {"width": [4]})
    multi = parse(model="width = [\n  4,\n  8]")
    with pytest.raises(SpecError, match="one line|several lines"):
        sweep.override_spec(multi, {"model.width": [16]})
    with pytest.raises(SpecError, match="model.width"):
        sweep.override_spec(base, {"model.width": [0, 4]})


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
