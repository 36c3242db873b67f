"""Sweep specs (rnn_ntk.sweep.spec): parsing, axes and zips, validation messages, overrides.

Nothing here trains (the end-to-end checks through the CLI are in test_cli.py).
"""
import math
import tomllib
from pathlib import Path

import pytest

from rnn_ntk import sweep
from rnn_ntk.sweep import SpecError
from sweep_helpers import parse, spec_text


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


def test_example_spec_is_valid():
    spec = sweep.load_spec(Path(__file__).resolve().parents[2] / "experiments" / "example.toml")
    assert spec.zips == (("width", "lr"),)
    plan = sweep.make_plan(spec, max_memory=2 ** 32)
    # trainable x eps_x x zip(width, lr) x 4 seeds
    assert len(plan.runs) == 2 * 2 * 3 * 4
    assert {(r.coords[2], r.coords[3]) for r in plan.runs} == {(64, 0.4), (128, 0.2), (256, 0.1)}


def test_override_spec_replaces_entries_and_revalidates():
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
    # a key that is not an entry of its table, a bad key, a multi-line entry, a bad value
    with pytest.raises(SpecError, match="'train.momentum'"):
        sweep.override_spec(base, {"train.momentum": 0.5})
    with pytest.raises(SpecError, match="'width'"):
        sweep.override_spec(base, {"width": [4]})
    multi = parse(model="width = [\n  4,\n  8]")    # a multi-line entry is replaced like any other
    assert sweep.override_spec(multi, {"model.width": [16]}).axis("width").values == (16,)
    with pytest.raises(SpecError, match="model.width"):
        sweep.override_spec(base, {"model.width": [0, 4]})


def test_override_writes_toml_that_parses_to_the_values_used():
    # several zip groups, a dotted and a quoted dotted key, a comment: all kept but the comment
    base = parse(model="trainable = [[\"W\"], [\"W\", \"v\"]]  # groups",
                 train="lr = 0.5\nproj_radius = 2.0",
                 sweep_=('seeds = 2\n[[sweep.zip]]\nmodel.width = [4, 8]\n"train.momentum" = [0.1, 0.2]\n'
                         '[[sweep.zip]]\nsigma_w = [1.0, 2.0]\nlabel_noise = [0.0, 0.1]'))
    sp = sweep.override_spec(base, {"model.trainable": (("W",), ("W", "U")),
                                    "train.proj_radius": math.inf,
                                    "sweep.seeds": 1})
    raw = tomllib.loads(sp.text)             # an independent reading of the recorded text
    assert raw["model"]["trainable"] == [["W"], ["W", "U"]] and raw["train"]["proj_radius"] == math.inf
    assert raw["sweep"]["seeds"] == 1 and "# groups" not in sp.text
    assert raw["sweep"]["zip"] == tomllib.loads(base.text)["sweep"]["zip"]
    assert sp.zips == base.zips == (("width", "momentum"), ("sigma_w", "label_noise"))
    assert sp.axis("trainable").values == (("W",), ("W", "U"))
    again = sweep.parse_spec(sp.text, "<stored>")          # what reproduce does with a store
    assert again.resolved == sp.resolved and again.axis_names == sp.axis_names
    for s in ("model", "task", "train"):
        for k, v in base.resolved[s].items():
            if k not in ("trainable", "proj_radius"):
                assert sp.resolved[s][k] == v, k
    with pytest.raises(SpecError, match="not a TOML scalar or list"):
        sweep.override_spec(base, {"train.lr": None})
    with pytest.raises(SpecError, match="'sweep.seed'"):           # seeds is the entry here
        sweep.override_spec(base, {"sweep.seed": [0, 1]})
    assert sweep.override_spec(base, {}).resolved == base.resolved
