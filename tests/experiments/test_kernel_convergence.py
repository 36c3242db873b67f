"""K1 (kernel convergence): the error formula, one stored error against an independent computation
of the same draw, and the experiment end to end at scale 'ci' (resume, figures, claims, an
interrupted run, another scale's leftover pieces)."""
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnn_ntk.kernels.empirical import empirical_ntk
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.model import init_params
from rnn_ntk.reproduce import VERDICTS, load_arrays, load_experiment

k1 = load_experiment("kernel_convergence")
CI = k1.SETTINGS["ci"]


def test_relative_errors_are_frobenius_ratios():
    rng = np.random.default_rng(0)
    K_inf = rng.normal(size=(3, 3))
    K_S = rng.normal(size=(4, 3, 3))
    want = [np.sqrt(np.sum((K - K_inf) ** 2) / np.sum(K_inf ** 2)) for K in K_S]
    np.testing.assert_allclose(k1.relative_errors(K_S, K_inf), want, rtol=1e-14)


@pytest.fixture(scope="module")
def k1_results(tmp_path_factory):
    res = tmp_path_factory.mktemp("k1")
    k1.run(res, "ci")
    return res


def test_ci_end_to_end(k1_results, tmp_path, rerun_changes_nothing):
    files = rerun_changes_nothing(k1, k1_results)            # resumable: nothing recomputed
    assert len(files) == len(k1.SERIES) * len(CI.widths)
    paths = k1.figures(k1_results, tmp_path / "fig")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = k1.claims(k1_results)
    assert len(cl) == 2 * len(k1.SERIES)                     # NTK and NNGP per series
    assert all(c.verdict in VERDICTS and c.role == "control" and c.experiment == k1.NAME
               for c in cl)


def test_stored_ntk_error_is_the_draws_error(k1_results):
    # seed 0 of the relu 'last' series at the smallest width, recomputed here: the same key, an
    # unpadded net of that width, and the infinite-width NTK
    m = CI.widths[0]
    arrays, _ = load_arrays(k1_results / k1.NAME / f"relu_last_m{m}.npz")
    cfg = k1.model_config("relu", "last", m)
    key = jax.random.split(jax.random.fold_in(jax.random.key(k1.BASE_SEED), m), CI.seeds)[0]
    x = k1.inputs(CI)
    K = np.asarray(empirical_ntk(cfg, init_params(cfg, key, jnp.float64), x))
    K_inf = np.asarray(infinite_kernels(cfg, x)[1])
    err = np.linalg.norm(K - K_inf) / np.linalg.norm(K_inf)
    np.testing.assert_allclose(arrays["err_ntk"][0], err, rtol=1e-9)
    assert 0.0 < err < 1.0


def test_an_interrupted_run_reads_as_not_finished(k1_results, tmp_path):
    part = tmp_path / "partial"
    shutil.copytree(k1_results / k1.NAME, part / k1.NAME)
    (part / k1.NAME / f"erf_last_m{CI.widths[-1]}.npz").unlink()
    for f in (k1.claims, lambda r: k1.figures(r, tmp_path / "fig")):
        with pytest.raises(FileNotFoundError, match="1 pieces of the ci run .* not stored yet"):
            f(part)


def test_another_scales_leftover_pieces_are_ignored(k1_results, tmp_path):
    res = tmp_path / "mixed"
    shutil.copytree(k1_results / k1.NAME, res / k1.NAME)
    old = res / k1.NAME / "relu_last_m8.npz"       # an older run's piece, other settings
    arrays, meta = load_arrays(res / k1.NAME / f"relu_last_m{CI.widths[0]}.npz")
    from rnn_ntk.experiments.protocol import save_piece
    save_piece(old, {**meta["settings"], "scale": "older", "widths": [8]},
               {"activation": "relu", "readout": "last", "width": 8}, **arrays)
    os.utime(old, ns=(1, 1))
    assert 8 not in k1._load(res)[("relu", "last")]["widths"]
    assert k1.claims(res) == k1.claims(k1_results)
