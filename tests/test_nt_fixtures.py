"""rnn_ntk against reference values computed by neural-tangents 0.6.5 (see oracle/README.md).

The fixtures in tests/fixtures/ were written by oracle/make_fixtures.py in a separate virtualenv
(old JAX); this file only reads them, so it needs neither neural-tangents nor tensorflow.
"""
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_ntk
from rnn_ntk.dynamics import gradient_descent_mse
from rnn_ntk.model import RNNConfig

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def _load(fname):
    with np.load(FIXTURES / fname, allow_pickle=False) as z:
        cases = json.loads(str(z["cases"]))
        arrays = {k: z[k] for k in z.files if k != "cases"}
    return cases, arrays


STAX_CASES, STAX = _load("nt_stax_t1.npz")
EMP_CASES, EMP = _load("nt_empirical_rnn.npz")
PRED_CASES, PRED = _load("nt_predict_mse.npz")


def _ids(cases):
    return [c["name"] for c in cases]


# ------------------------------------------------------------------ nt.predict -------------------
@pytest.mark.parametrize("case", PRED_CASES, ids=_ids(PRED_CASES))
def test_gradient_descent_mse_matches_nt(case):
    a = {k.split("/", 1)[1]: v for k, v in PRED.items() if k.startswith(case["name"] + "/")}
    pred = gradient_descent_mse(a["k_train_train"], a["y_train"], case["learning_rate"],
                                case["diag_reg"], case["diag_reg_absolute_scale"])
    tr, te = pred(a["t"], a["fx_train_0"], a["fx_test_0"], a["k_test_train"])
    np.testing.assert_allclose(tr, a["fx_train_t"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(te, a["fx_test_t"], rtol=1e-10, atol=1e-12)
    tr_inf, te_inf = pred(None, a["fx_train_0"], a["fx_test_0"], a["k_test_train"])
    np.testing.assert_allclose(tr_inf, a["fx_train_inf"], rtol=1e-12)
    np.testing.assert_allclose(te_inf, a["fx_test_inf"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pred(a["t"]), a["fx_train_t_from_zero"], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ empirical NTK of the RNN -----
def _emp(case):
    name = case["name"]
    cfg = RNNConfig(width=case["width"], input_dim=case["input_dim"], output_dim=case["output_dim"],
                    activation=case["activation"], readout=case["readout"],
                    sigma_w=case["sigma_w"], sigma_u=case["sigma_u"], sigma_b=case["sigma_b"],
                    sigma_v=case["sigma_v"], trainable=tuple(case["trainable"]),
                    recurrence=case["recurrence"])
    params = {g: jnp.asarray(EMP[f"{name}/{g}"]) for g in ("W", "U", "b", "v")}
    return cfg, params, EMP[f"{name}/x1"], EMP[f"{name}/x2"], EMP[f"{name}/ntk_12"], EMP[f"{name}/ntk_11"]


def _jacobian(cfg, params, x):
    """d apply / d (trainable groups) by jax.jacrev: outputs shape + (P,)."""
    def f(sub):
        return rnn_ntk.apply(cfg, {**params, **sub}, x)
    j = jax.jacrev(f)({g: params[g] for g in cfg.trainable})
    out_ndim = 3 if cfg.readout == "all" else 2
    return jnp.concatenate([j[g].reshape(j[g].shape[:out_ndim] + (-1,)) for g in cfg.trainable],
                           axis=-1)


def _mean_over_outputs(cfg, J1, J2):
    """(1/k) sum_c J_c(x1) J_c(x2)^T: (n1, n2), or (n1, T1, n2, T2) for 'all'."""
    if cfg.readout == "all":
        return jnp.einsum("atcp,bscp->atbs", J1, J2) / cfg.output_dim
    return jnp.einsum("acp,bcp->ab", J1, J2) / cfg.output_dim


@pytest.mark.parametrize("case", EMP_CASES, ids=_ids(EMP_CASES))
def test_oracle_rnn_is_rnn_ntk_model(case):
    """The oracle's plain-JAX RNN is rnn_ntk's network, and NT's NTK is its J J^T."""
    cfg, params, x1, x2, k12, k11 = _emp(case)
    np.testing.assert_allclose(rnn_ntk.apply(cfg, params, x1), EMP[case["name"] + "/f_x1"],
                               rtol=1e-12, atol=1e-13)
    jac = jax.jit(lambda x: _jacobian(cfg, params, x))
    if x1.shape[1] == x2.shape[1]:                 # one compile for both inputs
        J = jac(np.concatenate([x1, x2]))
        J1, J2 = J[: len(x1)], J[len(x1):]
    else:
        J1, J2 = jac(x1), jac(x2)
    np.testing.assert_allclose(_mean_over_outputs(cfg, J1, J2), k12, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(_mean_over_outputs(cfg, J1, J1), k11, rtol=1e-10, atol=1e-12)
    # NT's three implementations (Jacobian contraction, NTK-vector products, structured
    # derivatives) agreed with each other when the fixture was written
    assert case["impl_disagreement"] < 1e-12


# the structured method on every case; the Jacobian method (checked against the structured one in
# tests/kernels/test_empirical.py) on a few, to keep this file fast
_JACOBIAN_CASES = ("relu_last_WUbv", "tanh_all_WUbv_unequal_T", "tanh_last_WUbv_diagonal")
_EMP_PARAMS = [pytest.param(c, "structured", id=f"{c['name']}-structured") for c in EMP_CASES] + [
    pytest.param(c, "jacobian", id=f"{c['name']}-jacobian") for c in EMP_CASES
    if c["name"] in _JACOBIAN_CASES]


@pytest.mark.parametrize("case,method", _EMP_PARAMS)
def test_empirical_ntk_matches_nt(case, method):
    from rnn_ntk.kernels.empirical import empirical_ntk
    cfg, params, x1, x2, k12, k11 = _emp(case)
    got12 = empirical_ntk(cfg, params, x1, x2, method=method)
    got11 = empirical_ntk(cfg, params, x1, method=method)
    assert got12.shape == k12.shape and got11.shape == k11.shape
    np.testing.assert_allclose(got12, k12, rtol=1e-10, atol=1e-12 * np.abs(k12).max())
    np.testing.assert_allclose(got11, k11, rtol=1e-10, atol=1e-12 * np.abs(k11).max())


# ------------------------------------------------------------------ infinite width, T = 1 --------
@pytest.mark.parametrize("case", STAX_CASES, ids=_ids(STAX_CASES))
def test_infinite_t1_matches_nt_stax(case):
    """A length-1 sequence: g = (s_u/sqrt(d)) U x + s_b b, f = (s_v/sqrt(m)) v^T phi(g), which is
    NT's Dense(W_std=s_u, b_std=s_b) -> phi -> Dense(W_std=s_v) ('ntk' parameterisation)."""
    from rnn_ntk.kernels.infinite import infinite_kernels
    name = case["name"]
    cfg = RNNConfig(width=64, input_dim=case["input_dim"], activation=case["activation"],
                    readout="last", sigma_w=1.0, sigma_u=case["sigma_u"], sigma_b=case["sigma_b"],
                    sigma_v=case["sigma_v"])
    x1, x2 = STAX[f"{name}/x1"][:, None, :], STAX[f"{name}/x2"][:, None, :]
    for xb, tag in ((x2, "12"), (None, "11")):
        nngp, ntk = infinite_kernels(cfg, x1, xb)
        np.testing.assert_allclose(nngp, STAX[f"{name}/nngp_{tag}"], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(ntk, STAX[f"{name}/ntk_{tag}"], rtol=1e-10, atol=1e-12)
