"""`rnn-ntk kernel`: a spec's store equals the Gram computed through the Python API on the same
data; bad specs exit 2 listing every problem with nothing written; refusals exit 1; --resume."""
import jax
import numpy as np
import pytest

from rnn_ntk.cli import main
from rnn_ntk.kernels import gram, load_gram
from rnn_ntk.model import RNNConfig
from rnn_ntk.tasks import TaskConfig, sample_task

TASK_SPEC = """
name = "rl"
[model]
activation = "relu"
sigma_w = 1.4
sigma_b = 0.1
trainable = ["W", "v"]
[data]
kind = "random_labels"
n_train = 30
n_test = 10
length = 5
input_dim = 4
seed = 3
delta = 0.2
[kernel]
kind = "both"
block = 16
"""


def _write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_task_spec_store_equals_the_api(tmp_path, capsys):
    spec = _write(tmp_path, TASK_SPEC)
    assert main(["kernel", str(spec), "--out", str(tmp_path / "out")]) == 0
    assert "nngp/ntk 40x40 float32" in capsys.readouterr().out
    tcfg = TaskConfig("random_labels", n_train=30, n_test=10, length=5, input_dim=4)
    d = sample_task(tcfg, jax.random.key(3), {"delta": 0.2}, dtype=np.float32)
    x = np.concatenate([np.asarray(d.x_train), np.asarray(d.x_test)])
    y = np.concatenate([np.asarray(d.y_train), np.asarray(d.y_test)])
    cfg = RNNConfig(width=1, input_dim=4, sigma_w=1.4, sigma_b=0.1, trainable=("W", "v"))
    nngp, ntk = gram(cfg, x, kind="both", block=16, dtype="float32")
    s_nngp, s_ntk = load_gram(tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(s_ntk), ntk)
    np.testing.assert_array_equal(np.asarray(s_nngp), nngp)
    with np.load(tmp_path / "out" / "data.npz") as z:
        np.testing.assert_array_equal(z["x"], x)
        np.testing.assert_array_equal(z["y"], y)
        assert int(z["n_train"]) == 30
    assert s_ntk.info["extra"]["n_train"] == 30


def test_npz_data_with_lengths_and_resume(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 6, 3))
    lens = rng.integers(1, 7, size=24)
    np.savez(tmp_path / "d.npz", x=x, lengths=lens)
    spec = _write(tmp_path, '[model]\nreadout = "mean"\nactivation = "erf"\n'
                            '[data]\npath = "d.npz"\n[kernel]\nblock = 8\ncompute = "float64"\n'
                            'dtype = "float64"\n')
    cfg = RNNConfig(width=1, input_dim=3, readout="mean", activation="erf")

    class Crash(Exception):
        pass

    def crash(done, total):
        if done == 2:
            raise Crash

    with pytest.raises(Crash):      # an interrupted run of the same Gram (6 blocks)
        gram(cfg, x, lengths=lens, block=8, dtype="float64", out=tmp_path / "out",
             on_block=crash)
    assert main(["kernel", str(spec), "--out", str(tmp_path / "out")]) == 1
    assert "not empty; pass resume=True (--resume)" in capsys.readouterr().err
    assert main(["kernel", str(spec), "--out", str(tmp_path / "out"), "--resume"]) == 0
    np.testing.assert_array_equal(np.asarray(load_gram(tmp_path / "out")),
                                  gram(cfg, x, lengths=lens, block=8))
    changed = _write(tmp_path, spec.read_text().replace('"erf"', '"relu"'), "changed.toml")
    assert main(["kernel", str(changed), "--out", str(tmp_path / "out"), "--resume"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs: cfg.activation" in err[0]


def test_bad_spec_exits_2_listing_every_problem(tmp_path, capsys):
    spec = _write(tmp_path, """
[model]
activaton = "relu"
[data]
kind = "random_labels"
n_train = 30
n_tst = 10
length = 5
input_dim = 4
[kernel]
kind = "ntkk"
dtype = "float16"
blok = 3
[extra]
""")
    assert main(["kernel", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    for needle in ["extra: unknown top-level key", "model.activaton: unknown key (did you mean "
                   "'activation'?)", "data.n_test: required", "data.n_tst: unknown key (did you "
                   "mean 'n_test'?)", "kernel.kind: must be one of", "kernel.dtype: must be one "
                   "of", "kernel.blok: unknown key (did you mean 'block'?)"]:
        assert sum(needle in line for line in err) == 1, (needle, err)
    assert len(err) == 7
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data, needle", [
    ('path = "missing.npz"', "data.path: cannot read"),
    ('path = "x.npz"\nseed = 1', "data.seed: unknown key with `path`"),
    ('kind = "random_labels"\nn_train = 4\nn_test = 2\nlength = 3\ninput_dim = 4\neps_x = 3.0',
     "data.eps_x: must be in [0, 1]"),
])
def test_bad_data_exits_2(tmp_path, capsys, data, needle):
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 3, 2)))
    spec = _write(tmp_path, f"[model]\nactivation = \"relu\"\n[data]\n{data}\n")
    assert main(["kernel", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_lists_kernel(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "kernel" in capsys.readouterr().out
