"""rnn_ntk.data: the .ts parser on hand-made files, z-normalisation, and the bundled UCR sets."""
import importlib.util

import numpy as np
import pytest

from rnn_ntk.data import UCR_DATASETS, DataError, load_ucr, read_ts, znormalize

TINY = """# a comment line
#another
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true a b c

@data
1.0,2.0,3.0,4.0:b
-1,0.5,0.5,-1:a

2,2,2,2:c
"""


def _write(tmp_path, name, train, test=None):
    d = tmp_path / name
    d.mkdir()
    (d / f"{name}_TRAIN.ts").write_text(train)
    (d / f"{name}_TEST.ts").write_text(train if test is None else test)
    return tmp_path


def test_read_ts_hand_made_file(tmp_path):
    p = tmp_path / "x.ts"
    p.write_text(TINY.replace("\n", "\r\n"))          # Windows line ends too
    f = read_ts(p)
    np.testing.assert_array_equal(f.series, [[1, 2, 3, 4], [-1, 0.5, 0.5, -1], [2, 2, 2, 2]])
    assert list(f.labels) == ["b", "a", "c"]
    assert f.class_labels == ("a", "b", "c")
    assert f.header["problemname"] == "Tiny"


def test_znormalize_against_hand_computation():
    s = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    z = znormalize(s)
    sd = np.sqrt(((np.array([1, 2, 3, 4]) - 2.5) ** 2).mean())   # population std, 1.118...
    np.testing.assert_allclose(z[0], (np.array([1, 2, 3, 4]) - 2.5) / sd)
    np.testing.assert_array_equal(z[1], 0.0)


def test_load_ucr_from_a_folder(tmp_path):
    root = _write(tmp_path, "Tiny", TINY, TINY.replace("1.0,2.0,3.0,4.0:b", "4,3,2,1:a"))
    ds = load_ucr("Tiny", data_dir=root)
    assert ds.x_train.shape == (3, 4, 1) and ds.x_test.shape == (3, 4, 1)
    assert ds.classes == ("a", "b", "c") and ds.n_classes == 3 and ds.length == 4
    np.testing.assert_array_equal(ds.y_train, [1, 0, 2])
    np.testing.assert_array_equal(ds.y_test, [0, 0, 2])
    np.testing.assert_allclose(ds.x_test[0, :, 0], -ds.x_train[0, :, 0])


@pytest.mark.parametrize("text,msg", [
    (TINY.replace("1.0,2.0,3.0,4.0:b", "1.0,?,3.0,4.0:b"), "numbers"),
    (TINY.replace("1.0,2.0,3.0,4.0:b", "1.0,nan,3.0,4.0:b"), "non-finite"),
    (TINY.replace("1.0,2.0,3.0,4.0:b", "1,2,3:4:b"), "dimension"),
    (TINY.replace("1.0,2.0,3.0,4.0:b", "1,2,3:b"), "unequal"),
    (TINY.replace("@classLabel true a b c", "@classLabel false"), "unlabelled"),
    (TINY.replace("1.0,2.0,3.0,4.0:b", "1,2,3,4:z"), "not among"),
    (TINY.replace("@seriesLength 4", "@seriesLength 5"), "seriesLength"),
    (TINY.replace("@data\n", ""), "header"),
    (TINY.split("@data")[0] + "@data\n", "no series"),
])
def test_malformed_files_raise_one_line_errors(tmp_path, text, msg):
    p = tmp_path / "bad.ts"
    p.write_text(text)
    with pytest.raises(DataError) as e:
        read_ts(p)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_unknown_names_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="unknown UCR data set"):
        load_ucr("NoSuchSet")
    with pytest.raises(DataError, match="no such .ts file"):
        load_ucr("Tiny", data_dir=tmp_path)


needs_sktime = pytest.mark.skipif(importlib.util.find_spec("sktime") is None,
                                  reason="sktime (the 'ucr' extra) is not installed")


@needs_sktime
@pytest.mark.parametrize("name,sizes", [("GunPoint", (50, 150, 150, 2)),
                                        ("ItalyPowerDemand", (67, 1029, 24, 2)),
                                        ("ArrowHead", (36, 175, 251, 3)),
                                        ("OSULeaf", (200, 242, 427, 6))])
def test_bundled_ucr_sets_have_the_standard_splits(name, sizes):
    n_tr, n_te, T, C = sizes
    ds = load_ucr(name)
    assert UCR_DATASETS[name] == (n_tr, n_te, T)
    assert ds.x_train.shape == (n_tr, T, 1) and ds.x_test.shape == (n_te, T, 1)
    assert ds.n_classes == C
    assert set(np.unique(ds.y_train)) == set(range(C)) == set(np.unique(ds.y_test))
    for x in (ds.x_train, ds.x_test):
        np.testing.assert_allclose(x[..., 0].mean(1), 0.0, atol=1e-9)
        np.testing.assert_allclose(x[..., 0].std(1), 1.0, atol=1e-9)


def test_training_on_fixed_arrays_uses_them():
    """train.make_train(cfg, data=...): every run trains on the given arrays (real data sets)."""
    import jax
    import jax.numpy as jnp

    from rnn_ntk import tasks, train
    from rnn_ntk.model import ConfigError, RNNConfig, apply

    rng = np.random.default_rng(0)
    data = tasks.Data(rng.normal(size=(6, 4, 1)), rng.normal(size=(6, 2)),
                      rng.normal(size=(5, 4, 1)), rng.normal(size=(5, 2)))
    mcfg = RNNConfig(width=8, input_dim=1, output_dim=2, sigma_w=1.3)
    tcfg = tasks.TaskConfig(kind="wang_additive", n_train=6, n_test=5, length=4, input_dim=1,
                            output_dim=2)
    cfg = train.TrainConfig(model=mcfg, task=tcfg, steps=3, log_every=3, dtype="float64",
                            save_params=True)
    key = jax.random.key(3)
    rec = jax.jit(train.make_train(cfg, data=data))(key, train.default_hparams(cfg))
    p0 = train.setup_run(cfg, key, {}).params0
    for name, x, y, p in (("train_loss", data.x_train, data.y_train, p0),
                          ("test_loss", data.x_test, data.y_test, rec["final_params"])):
        f = apply(mcfg, p, jnp.asarray(x))
        step = 0 if name == "train_loss" else -1
        assert float(rec[name][step]) == pytest.approx(float(jnp.mean((f - y) ** 2)), rel=1e-10)
    bad = data._replace(x_test=data.x_test[:, :3])
    with pytest.raises(ConfigError, match="data.x_test must have shape"):
        train.make_train(cfg, data=bad)
