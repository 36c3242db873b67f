"""The `rnn-ntk kernel` spec parser: [model] and the [data] task are checked by the same schema
fields as a sweep spec (same messages), every problem at once; the data it loads equals a direct
draw of the task / the saved file; the spec file is read by the sweep specs' reader."""
import jax
import numpy as np
import pytest

from rnn_ntk import schema
from rnn_ntk.kernels.spec import KernelSpecError, load_kernel_spec, parse_kernel_spec
from rnn_ntk.sweep.spec import SpecError, parse_spec
from rnn_ntk.tasks import TaskConfig, sample_task

TASK = '[data]\nkind = "lag"\nn_train = 4\nn_test = 2\nlength = 3\ninput_dim = 2\n'


def _problems(text):
    with pytest.raises(KernelSpecError) as e:
        parse_kernel_spec(text)
    return e.value.problems


def test_task_data_is_a_direct_draw_of_the_task():
    spec = parse_kernel_spec('[model]\nreadout = "all"\n' + TASK + "seed = 5\nlag = 1\n")
    tcfg = TaskConfig(kind="lag", n_train=4, n_test=2, length=3, input_dim=2, target="all")
    d = sample_task(tcfg, jax.random.key(5), {"lag": 1.0}, dtype=np.float32)
    np.testing.assert_array_equal(spec.x, np.concatenate([d.x_train, d.x_test]))
    np.testing.assert_array_equal(spec.y, np.concatenate([d.y_train, d.y_test]))
    assert spec.n_train == 4 and spec.cfg.input_dim == 2 and spec.cfg.width == 1
    assert (spec.kind, spec.method, spec.dtype, spec.compute) == ("ntk", "infinite", "float32",
                                                                  "float32")


def test_file_data_and_kernel_fields(tmp_path):
    x = np.random.default_rng(1).normal(size=(5, 4, 3))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "k.toml").write_text('[model]\nwidth = 7\n[data]\npath = "x.npy"\n[kernel]\n'
                                     'method = "empirical"\nblock = 2\ndtype = "float64"\n'
                                     'seed = 3\norder = 9\n')
    spec = load_kernel_spec(tmp_path / "k.toml")
    np.testing.assert_array_equal(spec.x, x)
    assert spec.cfg.input_dim == 3 and spec.cfg.width == 7 and spec.name == "k"
    assert (spec.method, spec.block, spec.dtype, spec.compute, spec.seed, spec.order) == (
        "empirical", 2, "float64", "float64", 3, 9)


@pytest.mark.parametrize("model", ["width = 0", 'activation = "rleu"', "sigma_w = -1.0",
                                   'trainable = ["W", "Q"]', "widht = 3"])
def test_model_problems_read_like_the_sweep_spec(model):
    """The same [model] value in a sweep spec gives the same line (the one schema)."""
    got = _problems(f"[model]\n{model}\n" + TASK)
    key = model.split(" ")[0]
    width = "" if key == "width" else "width = 4\n"     # required in a sweep spec
    sweep = (f"[model]\n{width}{model}\n[task]\n" + TASK.split("\n", 1)[1]
             + "[train]\nsteps = 1\n")
    with pytest.raises(SpecError) as e:
        parse_spec(sweep)
    want = [p for p in e.value.problems if p.startswith("model.")]
    assert len(want) == 1 and want[0].startswith(f"model.{key}: "), want
    assert got == want


def test_every_problem_at_once():
    probs = _problems('title = 1\n[model]\nwidth = 0\ninput_dim = 2\n[data]\nkind = "lagg"\n'
                      'n_train = 4\nn_tset = 2\nlength = 3\ninput_dim = 2\nseed = -1\n'
                      '[kernel]\nkind = "ntkk"\nblock = 0\ncompute = "float16"\n')
    fields = schema.section_fields("model")
    for needle in ["title: unknown top-level key",
                   f"model.width: {fields['width'].check_static(0)[1]}",
                   "data.kind: must be one of", "(did you mean 'lag'?)",
                   "data.n_tset: unknown key (did you mean 'n_test'?)", "data.n_test: required",
                   "data.seed: must be an integer >= 0, got -1",
                   "data.input_dim: set in [model] and in [data]; set it once",
                   "kernel.kind: must be one of", "kernel.block: must be a positive integer, got 0",
                   "kernel.compute: must be one of"]:
        assert sum(needle in p for p in probs) == 1, (needle, probs)
    assert len(probs) == 10, probs


def test_task_fields_are_those_of_its_kind():
    """A parameter of another task kind is an unknown key, as in a sweep spec's [task]."""
    probs = _problems(TASK.replace('"lag"', '"random_labels"') + "lag = 1\n")
    assert probs == ["data.lag: unknown key"]


def test_config_dependent_task_problem():
    probs = _problems(TASK + "lag = 5\n")          # lag <= length - 1 once the config is known
    assert len(probs) == 1 and probs[0].startswith("data: ") and "'lag'" in probs[0]


def test_required_fields():
    assert _problems('[data]\nkind = "lag"\nn_train = 4\nlength = 3\n') == [
        "data.n_test: required", "data.input_dim: required (set it in [data] or [model])"]
    assert _problems('[kernel]\nmethod = "empirical"\n[data]\nkind = "lag"\nn_train = 4\n'
                     'n_test = 2\nlength = 3\ninput_dim = 2\n') == [
        "model.width: required for method 'empirical'"]
    assert _problems("[kernel]\n") == ["data: required ([data] with `path`, or a task `kind`)"]


def test_unreadable_file_and_bad_toml(tmp_path):
    with pytest.raises(KernelSpecError) as e:
        load_kernel_spec(tmp_path / "nope.toml")
    assert e.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read spec file "
                                "(No such file or directory)"]
    assert _problems("[data\n")[0].startswith("<spec>: invalid TOML: ")


def test_names_still_importable_from_gram():
    from rnn_ntk.kernels import gram as g       # the function; its module via sys.modules
    from rnn_ntk.kernels.gram import KernelSpecError as E, parse_kernel_spec as p
    assert E is KernelSpecError and p is parse_kernel_spec and callable(g)
