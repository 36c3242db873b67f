"""The one schema (rnn_ntk.schema): checks, all-problems validation, parity with the sweep spec
parser's messages, hyper-parameter checks in train_many (bug 2), and the task registry (a new
kind is one TASKS entry).

Nothing here compiles a training program; the toy task kind compiles one small sampler.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk import lanes, schema, sweep, tasks, train
from rnn_ntk.model import ConfigError, RNNConfig
from rnn_ntk.schema import Field

# ----------------------------------------------------------------------------------------------
# checks


def test_one_integer_check_accepts_numpy_integers_and_rejects_bools():
    # no module keeps a private integer check of its own
    assert not any(hasattr(m, "_check_int") for m in (train, tasks))
    for v in (3, np.int64(3), np.int32(3), np.uint8(3)):
        schema.check_int("n", v, 1)
    for v in (True, np.bool_(True), 3.0, "3", None):
        with pytest.raises(ConfigError, match="n: must be an integer"):
            schema.check_int("n", v, 1)
    with pytest.raises(ConfigError, match="n: must be an integer >= 2, got 1"):
        schema.check_int("n", np.int64(1), 2)
    # every config takes numpy integers (tasks used to refuse them, train took them) and stores ints
    t = tasks.TaskConfig("lag", n_train=np.int64(4), n_test=np.int32(3), length=np.int64(5),
                         input_dim=np.int64(2))
    m = RNNConfig(width=np.int64(4), input_dim=np.int64(2))
    c = train.TrainConfig(m, t, steps=np.int64(4), log_every=np.int64(2))
    for v in (t.n_train, t.length, m.width, c.steps, c.log_every):
        assert type(v) is int
    assert c == train.TrainConfig(RNNConfig(width=4, input_dim=2),
                                  tasks.TaskConfig("lag", 4, 3, 5, 2), steps=4, log_every=2)
    with pytest.raises(ConfigError, match="n_train: must be an integer, got True"):
        tasks.TaskConfig("lag", n_train=True, n_test=3, length=5, input_dim=2)


def test_number_check_names_the_first_bad_entry_and_skips_nothing():
    pos = schema.number(schema.between(0.0), ">= 0")
    assert pos(2) == 2.0 and type(pos(2)) is float
    a = np.array([[0.5, 1.0], [2.0, -3.0]])
    f = Field("x", 0.0, pos)
    assert f.check_value(a)[1] == "must be >= 0, got -3.0 (entry (1, 1))"
    assert f.check_value(np.array([1.0, np.nan]))[1] == "must be finite, got nan (entry 1)"
    assert f.check_value(jnp.asarray([1.0, -1.0]))[1] == "must be >= 0, got -1.0 (entry 1)"
    for bad in ("1", None, True, [1.0, "a"], 1j):
        assert f.check_value(bad)[1].startswith("must be a number"), bad
    unit = Field("r", 0.0, schema.number(schema.between(0.0, 1.0, hi_open=True), "in [0, 1)"))
    assert unit.check_value(1.0)[1] == "must be in [0, 1), got 1.0"
    assert unit.check_value(np.nextafter(1.0, 0.0))[1] is None


def test_validate_collects_every_problem_first_problem_stops_at_one():
    fields = [Field("width", check=schema.integer(1)), Field("kind", "a", schema.choice(["alpha", "beta"])),
              Field("flag", False, schema.boolean()), Field("need")]
    probs = schema.validate(fields, {"widht": 3, "width": 0, "kind": "alhpa", "flag": 1}, where="s")
    assert probs == ["s.widht: unknown key (did you mean 'width'?)",
                     "s.width: must be a positive integer, got 0",
                     "s.kind: must be one of ['alpha', 'beta'], got 'alhpa' (did you mean 'alpha'?)",
                     "s.flag: must be true or false, got 1",
                     "s.need: required"]
    assert schema.validate(fields, {"width": 1, "need": None}) == []
    assert schema.validate(fields, {}, required=False) == []
    assert schema.first_problem(fields, {"flag": 2, "width": -1}) == (
        "width", "must be a positive integer, got -1")
    assert schema.first_problem(fields, {"width": 2, "other": 0}) is None
    # a traced field takes arrays of run values, but one number as a static value (a config
    # field, one value of a spec section)
    lr = Field("lr", 0.1, schema.number(schema.between(0.0), ">= 0"), traced=True)
    assert lr.check_value(np.array([0.1, 0.2]))[1] is None
    assert lr.check_static(np.array([0.1, 0.2]))[1] == "must be a number, got array([0.1, 0.2])"
    assert lr.check_static([0.1])[1] == "must be a number, got [0.1]"
    assert lr.check_static(1) == (1.0, None)
    assert schema.validate([lr], {"lr": [0.1, 0.2]}) == ["lr: must be a number, got [0.1, 0.2]"]


def test_config_fields_are_declared_once():
    # the dataclass defaults are the schema defaults, and every field has a check
    for cls in (RNNConfig, tasks.TaskConfig, train.TrainConfig):
        dc = {f.name: f for f in dataclasses.fields(cls)}
        fs = schema.fields_of(cls)
        assert [f.name for f in fs] == list(dc)
        for f in fs:
            assert f.check is not None and f.doc
            want = schema.REQUIRED if dc[f.name].default is dataclasses.MISSING else dc[f.name].default
            assert f.default == want or f.default is want
    traced = {f.name for f in schema.fields_of(RNNConfig) if f.traced}
    assert traced == {"sigma_w", "sigma_u", "sigma_b", "sigma_v"}
    with pytest.raises(ConfigError, match=r"^readout: must be one of \['last', 'all', 'mean'\], "
                                          r"got 'lats' \(did you mean 'last'\?\)$"):
        RNNConfig(width=2, input_dim=1, readout="lats")


# ----------------------------------------------------------------------------------------------
# the spec parser's messages come out of the schema unchanged

GOOD = {"model": {"width": "4"},
        "task": {"kind": '"random_labels"', "n_train": "6", "n_test": "4", "length": "4",
                 "input_dim": "3"},
        "train": {"steps": "4", "log_every": "2"}}


def spec_with(section, key, toml_value):
    secs = {s: dict(v) for s, v in GOOD.items()}
    secs[section][key] = toml_value
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
                   for s, kv in secs.items())
    return text + "[sweep]\nseed = 0\n"


BAD_SPEC_VALUES = [
    ("model", "widht", "4", 4),
    ("model", "width", "0", 0),
    ("model", "width", "2.5", 2.5),
    ("model", "activation", '"tahn"', "tahn"),
    ("model", "readout", '"first"', "first"),
    ("model", "sigma_w", "-1.0", -1.0),
    ("model", "sigma_u", "nan", math.nan),
    ("model", "sigma_b", '"big"', "big"),
    ("model", "trainable", "[]", []),
    ("model", "trainable", '["W", "A"]', ["W", "A"]),
    ("model", "trainable", '["W", "W"]', ["W", "W"]),
    ("model", "recurrence", '"sparse"', "sparse"),
    ("model", "sigma_h", "-0.5", -0.5),
    ("model", "h0_seed", "2147483648", 2147483648),
    ("task", "n_train", '"6"', "6"),
    ("task", "length", "-2", -2),
    ("task", "n_ref", "1", 1),
    ("task", "span", "-1", -1),
    ("task", "link", '"cos"', "cos"),
    ("task", "target", '"first"', "first"),
    ("task", "teacher_activation", '"swish"', "swish"),
    ("task", "eps_x", '"x"', "x"),
    ("task", "label_noise", "inf", math.inf),
    ("task", "rhoo", "0.5", 0.5),
    ("train", "steps", "-1", -1),
    ("train", "log_every", "0", 0),
    ("train", "batch_size", "0", 0),
    ("train", "batch_size", '"half"', "half"),
    ("train", "optimizer", '"sgdd"', "sgdd"),
    ("train", "dtype", '"float16"', "float16"),
    ("train", "save_params", "1", 1),
    ("train", "lr", "0.0", 0.0),
    ("train", "lr", "inf", math.inf),
    ("train", "momentum", "1.0", 1.0),
    ("train", "momentum", "-0.1", -0.1),
    ("train", "proj_radius", "0.0", 0.0),
    ("train", "proj_radius", "nan", math.nan),
    ("train", "position_weights", "[1.0, -1.0, 1.0, 1.0]", [1.0, -1.0, 1.0, 1.0]),
    ("train", "position_weights", '"all"', "all"),
    ("train", "center", "1", 1),
    ("train", "lrr", "0.1", 0.1),
]


@pytest.mark.parametrize("section,key,toml_value,value", BAD_SPEC_VALUES)
def test_schema_reproduces_the_spec_validators_messages(section, key, toml_value, value):
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(spec_with(section, key, toml_value), "<t>")
    spec_msgs = [p for p in e.value.problems if p.startswith(f"{section}.{key}:")]
    mine = schema.validate(schema.section_fields(section), {key: value}, where=section,
                           required=False)
    assert mine and mine == spec_msgs, (mine, e.value.problems)


def test_axis_elements_and_good_values_agree_with_the_spec():
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(spec_with("train", "lr", "[0.5, 0.0]"), "<t>")
    f = schema.section_fields("train")["lr"]
    v, p = f.check_value(0.0)
    assert f"train.lr[1]: {p}" in e.value.problems
    # values the spec accepts, the schema accepts with the same normalised value
    for section, key, toml_value, value, norm in [
            ("train", "batch_size", '"full"', "full", None), ("train", "batch_size", "2", 2, 2),
            ("model", "trainable", '["v", "W"]', ["v", "W"], ("W", "v")),
            ("train", "proj_radius", "inf", math.inf, math.inf), ("task", "delta", "0.2", 0.2, 0.2)]:
        spec = sweep.parse_spec(spec_with(section, key, toml_value), "<t>")
        assert spec.fixed[section][key] == norm
        assert schema.section_fields(section)[key].check_value(value) == (norm, None)


def test_section_fields_per_kind():
    lag = schema.section_fields("task", kind="lag")
    assert {"lag", "eps_x", "label_noise", "link", "n_ref"} <= set(lag)
    assert not {"rho", "delta", "n_terms", "teacher_width"} & set(lag)
    rl = schema.section_fields("task", kind="random_labels")
    assert rl["eps_x"].check_value(1.5)[1] == "must be in [0, 1] (tokens must have norm <= 1), got 1.5"
    assert lag["eps_x"].check_value(1.5)[1] is None
    with pytest.raises(ValueError, match="did you mean 'train'"):
        schema.section_fields("trian")
    with pytest.raises(ValueError, match="did you mean 'lag'"):
        schema.section_fields("task", kind="lga")


# every field a spec section may set, with a valid non-default value written out here (not read
# from the code under test) and what the spec, the configs and the lanes must carry:
# (section, name, TOML value, expected value, other entries the value needs)
SETTABLE = [
    ("model", "width", "5", 5, {}),
    ("model", "input_dim", "4", 4, {"task": {"input_dim": None}}),
    ("model", "output_dim", "2", 2, {}),
    ("model", "activation", '"tanh"', "tanh", {}),
    ("model", "readout", '"mean"', "mean", {}),
    ("model", "sigma_w", "1.5", 1.5, {}),
    ("model", "sigma_u", "0.5", 0.5, {}),
    ("model", "sigma_b", "0.25", 0.25, {}),
    ("model", "sigma_v", "2", 2.0, {}),
    ("model", "trainable", '["v", "W"]', ("W", "v"), {}),
    ("model", "recurrence", '"diagonal"', "diagonal", {}),
    ("model", "sigma_h", "0.5", 0.5, {}),
    ("model", "h0_seed", "7", 7, {}),
    ("task", "kind", '"lag"', "lag", {}),
    ("task", "n_train", "7", 7, {}),
    ("task", "n_test", "5", 5, {}),
    ("task", "length", "6", 6, {}),
    ("task", "input_dim", "4", 4, {}),
    ("task", "output_dim", "2", 2, {}),
    ("task", "target", '"all"', "all", {"model": {"readout": '"all"'}}),
    ("task", "n_terms", "2", 2, {"task": {"kind": '"concept"'}}),
    ("task", "n_vars", "3", 3, {"task": {"kind": '"wang_nvar"', "span": "3"}}),
    ("task", "span", "2", 2, {"task": {"kind": '"wang_nvar"'}}),
    ("task", "link", '"tanh"', "tanh", {"task": {"kind": '"lag"'}}),
    ("task", "state_dim", "4", 4, {"task": {"kind": '"state_space"'}}),
    ("task", "teacher_width", "16", 16, {"task": {"kind": '"teacher"'}}),
    ("task", "teacher_activation", '"relu"', "relu", {"task": {"kind": '"teacher"'}}),
    ("task", "ntk_units", "64", 64, {"task": {"kind": '"ntk_teacher"'}}),
    ("task", "n_ref", "100", 100, {"task": {"kind": '"lag"'}}),
    ("task", "label_noise", "0.1", 0.1, {}),
    ("task", "eps_x", "0.5", 0.5, {}),
    ("task", "delta", "0.2", 0.2, {}),
    ("task", "lag", "1", 1.0, {"task": {"kind": '"lag"'}}),
    ("task", "rho", "0.5", 0.5, {"task": {"kind": '"state_space"'}}),
    ("task", "teacher_sigma_w", "1.5", 1.5, {"task": {"kind": '"teacher"'}}),
    ("train", "steps", "6", 6, {}),
    ("train", "log_every", "1", 1, {}),
    ("train", "batch_size", "2", 2, {}),
    ("train", "optimizer", '"adam"', "adam", {}),
    ("train", "loss", '"sum_from_2"', "sum_from_2",
     {"model": {"readout": '"all"'}, "task": {"target": '"all"'}}),
    ("train", "dtype", '"float64"', "float64", {}),
    ("train", "save_params", "true", True, {}),
    ("train", "init", '"symmetric"', "symmetric", {}),
    ("train", "projection", "true", True, {}),
    ("train", "linearized", "true", True, {}),
    ("train", "kernel_stride", "1", 1, {"train": {"n_probe": "4"}}),
    ("train", "n_probe", "8", 8, {}),
    ("train", "matmul_precision", '"default"', "default", {}),
    ("train", "checkpoint_every", "3", 3, {}),
    ("train", "position_weights", "[0.0, 1.0, 2.5, 0.5]", (0.0, 1.0, 2.5, 0.5),
     {"model": {"readout": '"all"'}, "task": {"target": '"all"'}}),
    ("train", "center", "true", True, {}),
    ("train", "lr", "0.3", 0.3, {}),
    ("train", "momentum", "0.5", 0.5, {}),
    ("train", "proj_radius", "2.0", 2.0, {}),
]


def _spec_setting(section, name, toml_value, extra):
    secs = {s: dict(v) for s, v in GOOD.items()}
    for s, kv in extra.items():
        for k, v in kv.items():
            if v is None:
                del secs[s][k]
            else:
                secs[s][k] = v
    secs[section][name] = toml_value
    text = "".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in kv.items())
                   for s, kv in secs.items())
    return text + "[sweep]\nseed = 0\n"


def test_the_settable_table_covers_every_spec_field():
    for s in ("model", "task", "train"):
        assert {n for sec, n, *_ in SETTABLE if sec == s} == set(schema.section_fields(s)), s
        assert set(sweep.CATALOGUE[s]) == set(schema.section_fields(s)), s


@pytest.mark.parametrize("section,name,toml_value,expected,extra", SETTABLE,
                         ids=[f"{s}.{n}" for s, n, *_ in SETTABLE])
def test_every_field_is_settable_from_a_spec(section, name, toml_value, expected, extra):
    spec = sweep.parse_spec(_spec_setting(section, name, toml_value, extra), "<t>")
    home = "task" if name in sweep.SHARED else section      # input_dim/output_dim live in [task]
    got = spec.fixed[home][name]
    assert got == expected and type(got) is type(expected), (got, expected)
    cfg = sweep.build_config(spec, (), spec.fixed["model"]["width"])
    if schema.section_fields(section)[name].traced:
        assert sweep.fixed_lanes(spec)[name] == expected
        assert train.default_hparams(cfg)[name] is not None      # a lane of that run
    else:
        owner = {"model": cfg.model, "task": cfg.task, "train": cfg}[section]
        assert getattr(owner, name) == expected
    # as a one-element axis (a list of lists for trainable) it is an axis with that value
    axis_toml = f"[{toml_value}]"
    spec = sweep.parse_spec(_spec_setting(section, name, axis_toml, extra), "<t>")
    assert spec.axis(name).values == (expected,)


@pytest.mark.parametrize("section,key,toml_value,message", [
    ("model", "width", "[4, 0]", "model.width[1]: must be a positive integer, got 0"),
    ("model", "sigma_w", "[[1.0, 2.0]]", "model.sigma_w[0]: must be a number, got [1.0, 2.0]"),
    ("model", "trainable", '[["W"], ["W", "X"]]',
     "model.trainable[1]: unknown group(s) ['X']; groups are ['W', 'U', 'b', 'v']"),
    ("train", "batch_size", '[2, "half"]',
     'train.batch_size[1]: must be a positive integer or "full", got \'half\''),
    ("train", "optimizer", '["sgd", "adamw"]',
     "train.optimizer[1]: must be one of ['sgd', 'momentum', 'adam'], got 'adamw' "
     "(did you mean 'adam'?)"),
    ("task", "eps_x", "1.5", "task.eps_x: must be in [0, 1] (tokens must have norm <= 1), got 1.5"),
    ("task", "eps_x", "[0.5, 2.0]",
     "task.eps_x[1]: must be in [0, 1] (tokens must have norm <= 1), got 2.0"),
    ("task", "delta", "[0.1, 1.5]", "task.delta[1]: must be in [0, sqrt(2)], got 1.5"),
    ("task", "label_noise", "-0.5", "task.label_noise: must be >= 0, got -0.5"),
])
def test_spec_messages_for_bad_values_and_axis_elements(section, key, toml_value, message):
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(spec_with(section, key, toml_value), "<t>")
    assert e.value.problems == [message]


def test_task_parameters_are_checked_by_the_spec_kinds():
    # eps_x <= 1 is a rule of random_labels (and concept), not of the wang_* kinds
    ok = sweep.parse_spec(spec_with("task", "kind", '"wang_additive"').replace(
        "[model]", "[model]\n").replace("n_test = 4", "n_test = 4\neps_x = 1.5"), "<t>")
    assert ok.fixed["task"]["eps_x"] == 1.5
    # a kind axis: each kind that has the parameter checks it and the message names the kind
    text = spec_with("task", "kind", '["wang_additive", "random_labels"]').replace(
        "n_test = 4", "n_test = 4\neps_x = 1.5")
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(text, "<t>")
    assert e.value.problems == ["task.eps_x: must be in [0, 1] (tokens must have norm <= 1), "
                                "got 1.5 (task kind 'random_labels')"]
    # zipped kinds count too; lag's bound without a config: an integer >= 0
    text = spec_with("task", "n_test", "4").replace(
        'kind = "random_labels"\n', "").replace(
        "seed = 0", 'seed = 0\n[sweep.zip]\nkind = ["lag", "lag"]\nlag = [1, 1.5]')
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(text, "<t>")
    assert e.value.problems == ["sweep.zip.lag[1]: must be an integer >= 0, got 1.5"]


def test_a_registered_task_kind_is_settable_from_a_spec(toy_kind):
    text = spec_with("task", "kind", '"toy"').replace("n_test = 4", "n_test = 4\nscale = [0.5, 2]")
    spec = sweep.parse_spec(text, "<t>")
    assert spec.axis("scale").values == (0.5, 2.0)
    assert sweep.CATALOGUE["task"]["scale"].traced
    with pytest.raises(sweep.SpecError) as e:
        sweep.parse_spec(text.replace("[0.5, 2]", "-1"), "<t>")
    assert e.value.problems == ["task.scale: must be >= 0, got -1.0"]


# ----------------------------------------------------------------------------------------------
# bug 2: train_many checks hyper-parameter ranges (a spec did, train_many did not)


def _cfg(array_width=8):
    m = RNNConfig(width=4, input_dim=3)
    t = tasks.TaskConfig("random_labels", n_train=4, n_test=4, length=3, input_dim=3)
    return train.TrainConfig(m, t, steps=2, log_every=1, optimizer="momentum",
                             array_width=array_width)


@pytest.fixture
def no_compile(monkeypatch):
    """train_many's program builder replaced: reaching it means the values passed the checks."""
    reached = []

    def fake_many_fn(cfg, layout, key_impl, names, devices, every):
        reached.append(names)
        return lambda kd, hp, *lane: {"hp": hp}
    monkeypatch.setattr(lanes, "_many_fn", fake_many_fn)
    return reached


@pytest.mark.parametrize("hp,fragment", [
    ({"lr": 0.0}, "hparams['lr']: learning rate must be finite and > 0, got 0.0"),
    ({"lr": np.array([0.1, -0.5, 0.2])}, "got -0.5 (entry 1)"),
    ({"momentum": 1.0}, "hparams['momentum']: must be in [0, 1), got 1.0"),
    ({"momentum": -0.5}, "hparams['momentum']: must be in [0, 1)"),
    ({"width": 9.0}, "hparams['width']: must be an integer in [1, 8] (the array width), got 9.0"),
    ({"width": np.array([4.0, 8.0, 16.0])}, "got 16.0 (entry 2)"),
    ({"width": 2.5}, "hparams['width']: must be an integer in [1, 8]"),
    ({"width": 0.0}, "hparams['width']"),
    ({"sigma_w": -1.0}, "hparams['sigma_w']: must be >= 0"),
    ({"proj_radius": 0.0}, "hparams['proj_radius']: must be > 0"),
    ({"delta": 2.0}, "hparams['delta']: must be in [0, sqrt(2)], got 2.0"),
    ({"label_noise": np.array([0.0, 0.1, -0.1])}, "hparams['label_noise']: must be >= 0"),
])
def test_train_many_rejects_bad_hparams_before_compiling(no_compile, hp, fragment):
    keys = train.run_keys(0, np.arange(3)[:, None])
    with pytest.raises(ValueError) as e:
        train.train_many(_cfg(), keys, hp)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg, msg
    assert no_compile == []


def test_train_many_accepts_the_edges_of_the_ranges(no_compile):
    keys = train.run_keys(0, np.arange(3)[:, None])
    hp = {"lr": 1e-12, "momentum": np.array([0.0, 0.5, 0.999]), "width": np.array([1.0, 4.0, 8.0]),
          "proj_radius": math.inf, "delta": math.sqrt(2.0), "eps_x": 1.0, "sigma_b": 0.0,
          "sigma_w": np.array([0.0, 1.4, 2.0]), "sigma_v": jnp.asarray([1.0, 0.5, 2.0])}
    out = train.train_many(_cfg(), keys, hp)
    assert len(no_compile) == 1
    np.testing.assert_array_equal(out["hp"]["width"], [1.0, 4.0, 8.0])
    np.testing.assert_array_equal(out["hp"]["sigma_w"], np.array([0.0, 1.4, 2.0], np.float32))
    np.testing.assert_array_equal(out["hp"]["lr"], np.full(3, 1e-12, np.float32))
    # without array_width the array width is the model width
    with pytest.raises(ValueError, match=r"integer in \[1, 4\]"):
        train.train_many(_cfg(None), keys, {"width": 8.0})


def test_single_run_and_traced_hparams(no_compile):
    cfg = _cfg()
    run = train.make_train(cfg)
    with pytest.raises(ValueError, match="hparams\\['momentum'\\]"):
        run(jax.random.key(0), {"momentum": 1.0})
    with pytest.raises(ValueError, match="hparams\\['lr'\\]"):
        train.setup_run(cfg, jax.random.key(0), {"lr": -1.0})
    # traced values cannot be checked and pass through (the engine is traced with them)
    seen = []
    jax.jit(lambda lr: seen.append(train.check_hparams(cfg, {"lr": lr})) or lr)(0.0)
    assert seen == [None]
    # check_hparams accepts the defaults of every config (they satisfy their own checks)
    for kind in tasks.TASK_KINDS:
        for target, readout in (("last", "last"), ("all", "all")):
            t = tasks.TaskConfig(kind, 4, 4, 5, 4, target=target)
            c = train.TrainConfig(RNNConfig(width=4, input_dim=4, readout=readout), t, steps=0)
            train.check_hparams(c, train.default_hparams(c))


def test_hparam_fields_declare_each_hparam_once():
    cfg = _cfg()
    fs = train.hparam_fields(cfg)
    names = [f.name for f in fs]
    assert len(names) == len(set(names)) and all(f.traced for f in fs)
    assert names == list(train.default_hparams(cfg))
    assert names[:8] == list(train.MODEL_HPARAMS)
    assert train.default_hparams(cfg)["width"] == 4.0
    lag = tasks.TaskConfig("lag", 4, 4, 5, 2, target="all")
    (f,) = [f for f in tasks.hparam_fields(lag) if f.name == "lag"]
    assert f.check_value(5.0)[1] is None          # target 'all': lags up to T
    assert f.check_value(4.5)[1] == "must be an integer in [0, 5], got 4.5"
    (g,) = [f for f in tasks.hparam_fields(lag.replace(target="last")) if f.name == "lag"]
    assert g.check_value(5.0)[1] == "must be an integer in [0, 4], got 5.0"


# ----------------------------------------------------------------------------------------------
# the task registry: a new kind is one entry


def _toy_shapes(tcfg):
    return {"beta": (tcfg.input_dim, tcfg.output_dim)}


def _toy_params(tcfg, kt, g, hp, dtype):
    return {"beta": jnp.asarray(hp["scale"], dtype) * g["beta"]}


def _toy_values(tcfg, tp, x_NTD):
    y = jnp.einsum("ntd,dk->ntk", x_NTD, tp["beta"])
    return y[:, -1, :] if tcfg.target == "last" else y


@pytest.fixture
def toy_kind():
    entry = tasks.TaskKind(
        hparams=(Field("scale", 1.0, schema.number(schema.between(0.0), ">= 0"), "weight scale",
                       traced=True),),
        options=("link",), target_shapes=_toy_shapes, target_params=_toy_params,
        target_values=_toy_values,
        check=lambda t: None if t.length >= 2 else f"length must be >= 2 for kind 'toy', got {t.length}")
    tasks.TASKS["toy"] = entry
    yield entry
    del tasks.TASKS["toy"]


def test_a_new_task_kind_is_one_registry_entry(toy_kind):
    t = tasks.TaskConfig("toy", n_train=5, n_test=3, length=4, input_dim=3, output_dim=2,
                         link="tanh")
    with pytest.raises(ConfigError, match="n_terms only applies to kind"):
        t.replace(n_terms=4)
    with pytest.raises(ConfigError, match="length must be >= 2 for kind 'toy'"):
        t.replace(length=1)
    assert tasks.default_task_hparams(t) == {"label_noise": 0.0, "eps_x": 1.0, "scale": 1.0}
    assert "scale" in schema.section_fields("task", kind="toy")
    key = jax.random.key(11)
    d = tasks.sample_task(t, key, {"scale": 3.0, "label_noise": 0.0})
    # independent reconstruction from the documented key contract: target weights from
    # fold_in(fold_in(key, 2), 1), tokens of norm eps_x = 1 from fold_in(key, 1) for the test set
    beta = 3.0 * np.asarray(jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, 2), 1),
                                              (6,), jnp.float32)).reshape(3, 2)
    x_te = np.asarray(d.x_test, np.float64)
    np.testing.assert_allclose(np.linalg.norm(x_te, axis=-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(d.y_test), x_te[:, -1, :] @ beta, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(d.y_train),
                               np.asarray(d.x_train, np.float64)[:, -1, :] @ beta, rtol=1e-5, atol=1e-6)
    assert d.x_train.shape == (5, 4, 3) and d.y_train.shape == (5, 2)
    with pytest.raises(ConfigError, match="task hparam 'scale' must be >= 0, got -1.0"):
        tasks.sample_task(t, key, {"scale": -1.0})
    # the kind flows into training configs and their hyper-parameters
    c = train.TrainConfig(RNNConfig(width=4, input_dim=3, output_dim=2), t, steps=0)
    assert train.default_hparams(c)["scale"] == 1.0
    with pytest.raises(ValueError, match="hparams\\['scale'\\]"):
        train.check_hparams(c, {"scale": np.array([1.0, -2.0])})
    assert "toy" not in tasks.TASK_KINDS


def test_registry_entries_are_checked():
    with pytest.raises(ConfigError, match="not options of TaskConfig"):
        tasks.TaskKind(options=("n_trms",))
    with pytest.raises(ConfigError, match="together"):
        tasks.TaskKind(target_shapes=_toy_shapes)
    with pytest.raises(ConfigError, match="kind: must be one of .* \\(did you mean 'lag'\\?\\)"):
        tasks.TaskConfig("lga", 4, 4, 5, 2)
