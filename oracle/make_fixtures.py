"""Reference values from neural-tangents 0.6.5 for rnn_ntk's tests (runs in oracle/.venv only).

Self-contained on purpose: rnn_ntk needs a current JAX, neural-tangents 0.6.5 an old one, so the
Elman RNN is written here again in plain JAX from shared/spec/rnn-kernels.md section 1.

    oracle/.venv/bin/python oracle/make_fixtures.py            # writes tests/fixtures/nt_*.npz

Fixtures (float64; every case's inputs and parameters are stored next to its outputs):
  nt_stax_t1.npz        nt.stax Dense(W_std=s_u, b_std=s_b) -> phi -> Dense(W_std=s_v) NNGP/NTK
                        ('ntk' parameterisation): the T = 1 infinite-width RNN kernels.
  nt_empirical_rnn.npz  nt.empirical_ntk_fn (trace_axes=(-1,), i.e. the mean over outputs) of the
                        Elman RNN, trainable subset = NT's params; values of implementation 1, and
                        per case the largest relative gap of implementations 2 and 3 from it
                        ('impl_disagreement'); the script fails if any gap exceeds 1e-10.
                        'f_x1' is the network output, to pin the model conventions.
  nt_predict_mse.npz    nt.predict.gradient_descent_mse train/test outputs at several t and t=None.
Each file holds a JSON string 'cases' (list of dicts: name and settings); arrays are keyed
'<case>/<name>'.
"""
from __future__ import annotations

import json
import math
import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import neural_tangents as nt  # noqa: E402
from neural_tangents import stax  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "tests", "fixtures")
IMPLEMENTATIONS = (1, 2, 3)   # jacobian contraction, NTK-vector products, structured derivatives


def _save(fname: str, cases: list[dict], arrays: dict[str, np.ndarray]) -> None:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, fname)
    np.savez_compressed(path, cases=np.array(json.dumps(cases)),
                        **{k: np.asarray(v, np.float64) for k, v in arrays.items()})
    print(f"wrote {os.path.normpath(path)} ({os.path.getsize(path)} bytes, {len(cases)} cases)")


# ---------------------------------------------------------------- (a) stax, T = 1 ----------------
def stax_fixtures(rng: np.random.Generator) -> None:
    acts = {"relu": stax.Relu(), "erf": stax.Erf()}
    settings = [dict(sigma_u=1.0, sigma_b=0.0, sigma_v=1.0),
                dict(sigma_u=1.5, sigma_b=0.5, sigma_v=0.8)]
    d = 3
    x1 = rng.normal(size=(4, d))
    x2 = rng.normal(size=(3, d))
    # (rho = 1 is covered by the diagonal of the (x1, x1) kernels. Distinct but parallel inputs
    # are left out on purpose: NT's arccos loses ~sqrt(eps) = 1e-8 relative there.)
    cases, arrays = [], {}
    for act, layer in acts.items():
        for i, s in enumerate(settings):
            name = f"{act}_{i}"
            b_std = s["sigma_b"] if s["sigma_b"] > 0 else None
            _, _, kernel_fn = stax.serial(
                stax.Dense(512, W_std=s["sigma_u"], b_std=b_std, parameterization="ntk"),
                layer,
                stax.Dense(1, W_std=s["sigma_v"], b_std=None, parameterization="ntk"))
            k12 = kernel_fn(x1, x2, ("nngp", "ntk"))
            k11 = kernel_fn(x1, None, ("nngp", "ntk"))
            cases.append(dict(name=name, activation=act, input_dim=d, **s))
            arrays.update({f"{name}/x1": x1, f"{name}/x2": x2,
                           f"{name}/nngp_12": k12.nngp, f"{name}/ntk_12": k12.ntk,
                           f"{name}/nngp_11": k11.nngp, f"{name}/ntk_11": k11.ntk})
    _save("nt_stax_t1.npz", cases, arrays)


# ---------------------------------------------------------------- (b) empirical NTK of the RNN ---
PHI = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def rnn_apply(params: dict, x_NTD: jnp.ndarray, c: dict) -> jnp.ndarray:
    """Elman RNN, NTK parameterisation, h_0 = 0 (spec section 1). (n, k) or (n, T, k) for 'all'."""
    n, T, d = x_NTD.shape
    m = params["b"].shape[0]
    phi = PHI[c["activation"]]

    def step(h, x_t):
        if c["recurrence"] == "diagonal":
            rec = c["sigma_w"] * (h * params["W"][None, :])
        else:
            rec = (c["sigma_w"] / math.sqrt(m)) * (h @ params["W"].T)
        g = rec + (c["sigma_u"] / math.sqrt(d)) * (x_t @ params["U"].T) + c["sigma_b"] * params["b"][None, :]
        h = phi(g)
        return h, h

    _, h_TNM = jax.lax.scan(step, jnp.zeros((n, m), x_NTD.dtype), jnp.swapaxes(x_NTD, 0, 1))
    f_NTK = (c["sigma_v"] / math.sqrt(m)) * jnp.einsum("tnm,mk->ntk", h_TNM, params["v"])
    if c["readout"] == "last":
        return f_NTK[:, -1]
    if c["readout"] == "mean":
        return jnp.mean(f_NTK, axis=1)
    return f_NTK


def empirical_fixtures(rng: np.random.Generator) -> float:
    base = dict(width=5, input_dim=2, output_dim=2, sigma_w=1.3, sigma_u=0.9, sigma_b=0.4,
                sigma_v=1.1, recurrence="full", T1=3, T2=3)
    # every readout with both activations and both trainable subsets, in 6 cases
    cases_in = [dict(base, activation=act, readout=readout, trainable=trainable)
                for act, readout, trainable in (
                    ("relu", "last", ["W", "U", "b", "v"]), ("tanh", "last", ["W"]),
                    ("relu", "all", ["W"]), ("tanh", "all", ["W", "U", "b", "v"]),
                    ("relu", "mean", ["W", "U", "b", "v"]), ("tanh", "mean", ["W"]))]
    cases_in.append(dict(base, activation="tanh", readout="all", trainable=["W", "U", "b", "v"],
                         T2=4, tag="unequal_T"))
    cases_in.append(dict(base, activation="tanh", readout="last", trainable=["W", "U", "b", "v"],
                         recurrence="diagonal", tag="diagonal"))
    cases, arrays, worst = [], {}, 0.0
    for c in cases_in:
        name = "_".join([c["activation"], c["readout"], "".join(c["trainable"])] +
                        ([c["tag"]] if "tag" in c else []))
        m, d, k = c["width"], c["input_dim"], c["output_dim"]
        params = {"W": rng.normal(size=(m,) if c["recurrence"] == "diagonal" else (m, m)),
                  "U": rng.normal(size=(m, d)), "b": rng.normal(size=(m,)),
                  "v": rng.normal(size=(m, k))}
        x1 = rng.normal(size=(3, c["T1"], d))
        x2 = rng.normal(size=(2, c["T2"], d))
        frozen = {g: jnp.asarray(a) for g, a in params.items() if g not in c["trainable"]}
        trained = {g: jnp.asarray(params[g]) for g in c["trainable"]}

        def f(p, x, frozen=frozen, c=c):
            return rnn_apply({**frozen, **p}, x, c)

        out = {}
        for impl in IMPLEMENTATIONS:
            kfn = jax.jit(nt.empirical_ntk_fn(f, implementation=impl))
            k12 = np.asarray(kfn(x1, x2, trained))
            k11 = np.asarray(kfn(x1, None, trained))
            if c["readout"] == "all":     # NT zips axes: (n1, n2, T1, T2) -> ours (n1, T1, n2, T2)
                k12, k11 = k12.transpose(0, 2, 1, 3), k11.transpose(0, 2, 1, 3)
            out[impl] = (k12, k11)
        gap = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
                  for impl in IMPLEMENTATIONS[1:] for a, b in zip(out[impl], out[1]))
        worst = max(worst, gap)
        cases.append(dict(name=name, impl_disagreement=gap,
                          **{k_: v for k_, v in c.items() if k_ != "tag"}))
        arrays.update({f"{name}/{g}": a for g, a in params.items()})
        arrays.update({f"{name}/x1": x1, f"{name}/x2": x2, f"{name}/f_x1": f(trained, x1),
                       f"{name}/ntk_12": out[1][0], f"{name}/ntk_11": out[1][1]})
    _save("nt_empirical_rnn.npz", cases, arrays)
    return worst


# ---------------------------------------------------------------- (c) predict --------------------
def predict_fixtures(rng: np.random.Generator) -> None:
    n, n_test, k, P = 5, 3, 2, 8
    J = rng.normal(size=(n + n_test, P)) / math.sqrt(P)
    K, Kx = J[:n] @ J[:n].T, J[n:] @ J[:n].T
    y = rng.normal(size=(n, k))
    f0, fs0 = 0.3 * rng.normal(size=(n, k)), 0.3 * rng.normal(size=(n_test, k))
    ts = np.array([0.0, 0.5, 3.0, 40.0, 1e3])
    lr = 0.7
    cases, arrays = [], {}
    for name, reg, absolute in (("noreg", 0.0, False), ("reg_rel", 0.1, False),
                                ("reg_abs", 0.05, True)):
        pred = nt.predict.gradient_descent_mse(jnp.asarray(K), jnp.asarray(y), lr, reg, absolute)
        tr, te = pred(ts, f0, fs0, Kx)
        tr_inf, te_inf = pred(None, f0, fs0, Kx)
        only_train = pred(ts)                        # default fx_train_0 = 0
        cases.append(dict(name=name, learning_rate=lr, diag_reg=reg, diag_reg_absolute_scale=absolute))
        arrays.update({f"{name}/k_train_train": K, f"{name}/k_test_train": Kx, f"{name}/y_train": y,
                       f"{name}/fx_train_0": f0, f"{name}/fx_test_0": fs0, f"{name}/t": ts,
                       f"{name}/fx_train_t": tr, f"{name}/fx_test_t": te,
                       f"{name}/fx_train_inf": tr_inf, f"{name}/fx_test_inf": te_inf,
                       f"{name}/fx_train_t_from_zero": only_train})
    _save("nt_predict_mse.npz", cases, arrays)


def main() -> int:
    rng = np.random.default_rng(20240601)
    stax_fixtures(rng)
    worst = empirical_fixtures(rng)
    print(f"empirical NTK: max relative disagreement of implementations 2, 3 vs 1: {worst:.2e}")
    predict_fixtures(rng)
    if worst > 1e-10:
        print("implementations disagree beyond 1e-10", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
