"""UCR: the recurrent NTK on real time series (Alemohammad, Wang, Balestriero & Baraniuk, "The
Recurrent Neural Tangent Kernel", ICLR 2021).

Claim of the paper: a C-SVM with the infinite-width RNTK (ReLU Elman RNN, random initial state
h_0 ~ N(0, sigma_h^2 I), output at the last step) classifies UCR time series better than standard
kernels, 1-NN and trained RNNs, with hyper-parameters chosen by cross-validation on the training
split: sigma_w in [1.34, 1.47] (around sqrt 2), sigma_u = 1, sigma_b in [0, 2],
sigma_h in {0, 0.01, 0.1, 0.5, 1}, C in {0.01, 0.1, 1, 10, 100}.

Setup (what this module measures)
---------------------------------
* Data (``rnn_ntk.data.load_ucr``): the univariate UCR sets sktime bundles, standard train/test
  splits, each series z-normalised, (n, T, 1): GunPoint (50/150, T 150), ItalyPowerDemand
  (67/1029, T 24), ArrowHead (36/175, T 251), OSULeaf (200/242, T 427). Nothing is downloaded.
* Kernels (float64, ``infinite_kernels``): ReLU, s_u = 1, s_v = 1, all groups trainable, readout
  'last' (the paper's) and 'mean', on the grid sigma_w x sigma_b x sigma_h of the scale (the full
  grid: 6 x 6 x 5 = 180 kernels, x 5 values of C = 900 points per kernel and readout); each call
  gives both the NTK and the NNGP. The white-noise h_0 term (sigma_h^2 1[x = x']) is on the Gram
  diagonal (and between exact duplicates across the split).
* Selection: C-SVM (``sklearn.svm.SVC(kernel="precomputed")``; one-vs-one for > 2 classes) with
  stratified k-fold cross-validation on the training split, k = min(10, smallest class size)
  (shuffled, fixed seed; the same folds for every method of a data set); the point of the grid
  (sigmas, C) with the highest mean CV accuracy is refitted on the whole training split and
  scored on the test split. Ties are common (on these small training splits tens to hundreds of
  the 900 points share the best CV accuracy): the selected test accuracy is the mean over all
  tied points (the expected accuracy of a random tie-break), and the summary reports the
  number of ties and the range of their test accuracies. (The trained-RNN arm takes the first
  tied point in grid order: sigmas ascending, then C.) Every
  grid point's CV fold accuracies and test correctness are stored, so the claims can compare
  selections (e.g. sigma_h free vs sigma_h = 0) and show how far CV accuracy is from test
  accuracy.
* Baselines on the same folds: RBF-SVM (C in the same grid x gamma in {0.1, 0.3, 1, 3, 10} /
  (T Var x)), 1-NN with the Euclidean distance.
* Trained RNNs: the finite network (ReLU, readout 'last', float32) at the NTK-'last' CV-selected
  sigmas of the data set, trained by the engine (``train.make_train(cfg, data=...)``, seeds as a
  vmap) from the 'symmetric' init (paired units, f_0 = 0 exactly, as in kernel regression; with
  the full recurrence paired units have equal rows of W, so their states agree from t = 1 on
  for any h_0 and the output stays 0), full-batch Adam (lr RNN_LR = 1e-3, the usual default) on
  the 'mean' squared loss against centred one-hot targets (e_c - 1/C), at several widths;
  prediction = argmax of the outputs. (Full-batch GD at half the NTK linearisation's stability
  limit, 0.5 n C / lambda_max(K), was tried first: on GunPoint it left the training loss at
  0.21-0.25 of its initial 0.25 after 400 steps, test accuracy ~0.5 (likely because the step is
  limited by the kernel's largest eigenvalue and 400 steps do not reach the smaller ones); Adam at 1e-2 and 1e-3 both reached ~0.95 test
  accuracy on ItalyPowerDemand, and the default 1e-3 is used everywhere.)

Agreement criteria (fixed before any run; never tuned)
------------------------------------------------------
Test-accuracy differences are paired over the test examples: 95% intervals from a bootstrap that
resamples test examples (``diff_ci``: :func:`rnn_ntk.stats.bootstrap_seeds` over the test
examples of each data set; RNN correctness averaged over seeds first). CV intervals: mean over
the folds +- 1.96 standard errors (:func:`rnn_ntk.stats.mean_sem`). Verdicts are symmetric in
the interval (:func:`rnn_ntk.stats.verdict`): a ">= 0" row agrees only when the whole interval
is at or above 0 (``stats.at_least``), disagrees when it is wholly below.
U1  (claim) per data set: RNTK ('last', CV-selected) test accuracy minus the better of RBF-SVM
    and 1-NN (each CV-selected / as is): agrees if >= 0, one-sided (the paper: the RNTK is
    better).
U2  (claim) per data set: RNTK minus the widest trained RNN (mean over seeds): >= 0, one-sided.
U3  (extra: the paper introduces and searches sigma_h; its claim as stated above does not say
    that a random h_0 helps) sigma_h > 0 helps: test accuracy with sigma_h in the CV search minus with sigma_h = 0 fixed, averaged
    over the data sets: agrees if > 0 (one-sided, strictly: an interval [0, 0], identical
    selections, does not agree).
U4  (claim: the NNGP of the same RNN is one of the "other kernels" the paper says the RNTK
    beats) NTK vs NNGP ('last', both CV-selected), averaged over the data sets: >= 0, one-sided.
U5  (extra) CV is a fair estimate: CV minus test accuracy of the selected RNTK, averaged over the
    data sets: agrees if within [-0.05, 0.05] (two-sided: a small training split and a
    900-point grid can make CV optimistic: this row measures by how much).
U6  (extra: [1.34, 1.47] is the paper's search range, not a robustness claim) robustness of
    sigma_w over [1.34, 1.47]: the range (max - min) over sigma_w values of the test accuracy
    when the other hyper-parameters are CV-selected at each sigma_w, averaged over the data sets:
    agrees if <= 0.05, one-sided (interval: bootstrap over test examples).
Issue 15 (after the 2026-11-22 run): the one-sided rows use ``stats.at_least`` /
``stats.at_most`` (before, a two-sided band [0, 1] / [0, 0.05], the same bounds), the rows carry
their role, and the intervals come from ``stats.bootstrap_seeds`` instead of this module's own
bootstrap (the same estimator; the random draws differ, so intervals move in the third decimal).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnn_ntk import plots, stats, tasks, train
from rnn_ntk.data import load_ucr
from rnn_ntk.kernels.infinite import infinite_kernels
from rnn_ntk.model import RNNConfig, apply
from rnn_ntk.experiments.protocol import is_done, load_piece, save_piece, settings
from rnn_ntk.reproduce import Claim, check_scale

NAME = "ucr_rntk"
TITLE = ("The RNTK on UCR time series (Alemohammad et al. 2021): C-SVM with CV over sigma_w, "
         "sigma_b, sigma_h, C vs NNGP, RBF-SVM, 1-NN and trained RNNs; CV vs test accuracy")

C_VALUES = (0.01, 0.1, 1.0, 10.0, 100.0)
GAMMA_FACTORS = (0.1, 0.3, 1.0, 3.0, 10.0)
SIGMA_W = tuple(float(v) for v in np.round(np.linspace(1.34, 1.47, 6), 3))
SIGMA_B = (0.0, 0.4, 0.8, 1.2, 1.6, 2.0)
SIGMA_H = (0.0, 0.01, 0.1, 0.5, 1.0)
FOLD_SEED = 0
RNN_LR = 1e-3
N_BOOT = 1000


class Grid(NamedTuple):
    sigma_w: tuple[float, ...]
    sigma_b: tuple[float, ...]
    sigma_h: tuple[float, ...]

    def points(self) -> list[tuple[float, float, float]]:
        return list(itertools.product(self.sigma_w, self.sigma_b, self.sigma_h))


FULL = Grid(SIGMA_W, SIGMA_B, SIGMA_H)
COARSE = Grid((1.34, 1.418, 1.47), (0.0, 0.8, 2.0), SIGMA_H)


class Setting(NamedTuple):
    datasets: tuple[str, ...]
    grids: dict                       # readout -> {dataset -> Grid} (missing: not run)
    max_train: int | None             # subsample (stratified) for the ci scale
    max_test: int | None
    widths: tuple[int, ...]
    seeds: int
    steps: int
    rnn_datasets: tuple[str, ...]


_CI_GRID = Grid((1.34, 1.47), (0.5,), (0.0, 0.5))
SETTINGS = {
    "ci": Setting(("ItalyPowerDemand",), {"last": {"ItalyPowerDemand": _CI_GRID},
                                          "mean": {"ItalyPowerDemand": _CI_GRID}},
                  max_train=30, max_test=40, widths=(8,), seeds=2, steps=10,
                  rnn_datasets=("ItalyPowerDemand",)),
    "default": Setting(("GunPoint", "ItalyPowerDemand", "ArrowHead"),
                       {"last": {"GunPoint": FULL, "ItalyPowerDemand": FULL, "ArrowHead": FULL},
                        "mean": {"GunPoint": COARSE, "ItalyPowerDemand": COARSE}},
                       max_train=None, max_test=None, widths=(32, 128), seeds=2, steps=400,
                       rnn_datasets=("GunPoint", "ItalyPowerDemand")),
    "large": Setting(("GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf"),
                     {"last": {d: FULL for d in ("GunPoint", "ItalyPowerDemand", "ArrowHead",
                                                 "OSULeaf")},
                      "mean": {"GunPoint": FULL, "ItalyPowerDemand": FULL, "ArrowHead": FULL,
                               "OSULeaf": COARSE}},
                     max_train=None, max_test=None, widths=(64, 256, 1024), seeds=4, steps=4000,
                     rnn_datasets=("GunPoint", "ItalyPowerDemand", "ArrowHead", "OSULeaf")),
}


# ----------------------------------------------------------------------------------------------
# pieces (public: tested in tests/experiments/test_ucr_rntk.py)

def _subsample(y: np.ndarray, n_max: int | None, seed: int) -> np.ndarray:
    """Indices of a class-stratified subsample of at most n_max examples (all when None)."""
    if n_max is None or n_max >= y.size:
        return np.arange(y.size)
    from sklearn.model_selection import train_test_split
    idx, _ = train_test_split(np.arange(y.size), train_size=n_max, stratify=y, random_state=seed)
    return np.sort(idx)


def load(name: str, st: Setting):
    """The data set at the scale: (x_train, y_train, x_test, y_test, n_classes)."""
    ds = load_ucr(name)
    itr = _subsample(ds.y_train, st.max_train, 0)
    ite = _subsample(ds.y_test, st.max_test, 1)
    return ds.x_train[itr], ds.y_train[itr], ds.x_test[ite], ds.y_test[ite], ds.n_classes


def folds(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold splits of the training labels, k = min(10, smallest class size)."""
    from sklearn.model_selection import StratifiedKFold
    k = int(min(10, np.bincount(y).min()))
    if k < 2:
        raise ValueError(f"a class has {np.bincount(y).min()} training example(s); CV needs >= 2")
    return list(StratifiedKFold(k, shuffle=True, random_state=FOLD_SEED).split(np.zeros(y.size), y))


def svm_scores(K_tr: np.ndarray, y_tr: np.ndarray, K_te: np.ndarray, y_te: np.ndarray,
               splits, Cs=C_VALUES) -> tuple[np.ndarray, np.ndarray]:
    """C-SVM on a precomputed kernel: CV fold accuracies (len(Cs), folds) and test correctness
    (len(Cs), n_test) of the SVM refitted on the whole training split."""
    from sklearn.svm import SVC
    cv = np.zeros((len(Cs), len(splits)))
    correct = np.zeros((len(Cs), y_te.size), bool)
    for i, C in enumerate(Cs):
        for f, (a, b) in enumerate(splits):
            clf = SVC(C=C, kernel="precomputed").fit(K_tr[np.ix_(a, a)], y_tr[a])
            cv[i, f] = np.mean(clf.predict(K_tr[np.ix_(b, a)]) == y_tr[b])
        clf = SVC(C=C, kernel="precomputed").fit(K_tr, y_tr)
        correct[i] = clf.predict(K_te) == y_te
    return cv, correct


def kernel_config(readout: str, sigma_w: float, sigma_b: float, sigma_h: float) -> RNNConfig:
    return RNNConfig(width=1, input_dim=1, activation="relu", readout=readout, sigma_w=sigma_w,
                     sigma_u=1.0, sigma_b=sigma_b, sigma_v=1.0, sigma_h=sigma_h)


def kernel_piece(x_tr, y_tr, x_te, y_te, readout: str, grid: Grid) -> dict[str, np.ndarray]:
    """CV fold accuracies (P, C, F) and test correctness (P, C, n_test) of the NTK and NNGP
    C-SVMs at every grid point P (Grid.points order)."""
    splits = folds(y_tr)
    pts = grid.points()
    out = {k: [] for k in ("ntk_cv", "ntk_correct", "nngp_cv", "nngp_correct")}
    with jax.enable_x64(True):
        for sw, sb, sh in pts:
            cfg = kernel_config(readout, sw, sb, sh)
            Ktr = infinite_kernels(cfg, x_tr)
            Kte = infinite_kernels(cfg, x_te, x_tr)
            for j, kind in enumerate(("nngp", "ntk")):
                cv, corr = svm_scores(np.asarray(Ktr[j]), y_tr, np.asarray(Kte[j]), y_te, splits)
                out[f"{kind}_cv"].append(cv)
                out[f"{kind}_correct"].append(corr)
    arr = {k: np.asarray(v) for k, v in out.items()}
    p = np.asarray(pts)
    return {**arr, "sigma_w": p[:, 0], "sigma_b": p[:, 1], "sigma_h": p[:, 2],
            "C": np.asarray(C_VALUES)}


def baseline_piece(x_tr, y_tr, x_te, y_te) -> dict[str, np.ndarray]:
    """RBF-SVM (CV over C x gamma) and 1-NN Euclidean on the same folds."""
    splits = folds(y_tr)
    a_tr, a_te = x_tr[..., 0], x_te[..., 0]
    D_tr = ((a_tr[:, None] - a_tr[None]) ** 2).sum(-1)
    D_te = ((a_te[:, None] - a_tr[None]) ** 2).sum(-1)
    g0 = 1.0 / (a_tr.shape[1] * a_tr.var())
    cv, corr = [], []
    for gf in GAMMA_FACTORS:
        c, k = svm_scores(np.exp(-gf * g0 * D_tr), y_tr, np.exp(-gf * g0 * D_te), y_te, splits)
        cv.append(c)
        corr.append(k)
    nn_cv = np.array([np.mean(y_tr[a][np.argmin(D_tr[np.ix_(b, a)], axis=1)] == y_tr[b])
                      for a, b in splits])
    nn_corr = y_tr[np.argmin(D_te, axis=1)] == y_te
    return {"rbf_cv": np.asarray(cv), "rbf_correct": np.asarray(corr),
            "gamma": np.asarray(GAMMA_FACTORS) * g0, "nn1_cv": nn_cv, "nn1_correct": nn_corr}


def select(cv: np.ndarray, mask: np.ndarray | None = None) -> tuple[int, ...]:
    """Index (into cv's leading axes) of the highest mean CV accuracy; first in order on ties.
    ``mask`` (cv's leading shape) restricts the search."""
    m = cv.mean(-1)
    if mask is not None:
        m = np.where(mask, m, -np.inf)
    return np.unravel_index(int(np.argmax(m)), m.shape)


def selected(cv: np.ndarray, correct: np.ndarray, mask: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, int]:
    """The CV-selected configuration with ties shared: every point whose mean CV accuracy equals
    the best (within ``mask``) counts equally. Returns (CV fold accuracies (F,) averaged over the
    tied points, test correctness (n_test,) averaged over them (the expected correctness of a
    random tie-break), number of tied points). cv: (..., F); correct: (..., n_test)."""
    m = cv.mean(-1)
    if mask is not None:
        m = np.where(mask, m, -np.inf)
    ties = m >= m.max() - 1e-12
    return cv[ties].mean(0), correct[ties].astype(float).mean(0), int(ties.sum())


def one_hot_targets(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Centred one-hot targets e_c - 1/C, (n, C)."""
    return np.eye(n_classes)[y] - 1.0 / n_classes


def rnn_piece(x_tr, y_tr, x_te, y_te, n_classes, sigmas, st: Setting) -> dict[str, np.ndarray]:
    """Trained RNNs at the given (sigma_w, sigma_b, sigma_h): test correctness (W, S, n_test),
    train accuracy (W, S) and final train loss (W, S), per width W and seed S."""
    sw, sb, sh = sigmas
    n, T = x_tr.shape[:2]
    lr = RNN_LR
    data = tasks.Data(x_tr, one_hot_targets(y_tr, n_classes), x_te,
                      one_hot_targets(y_te, n_classes))
    tcfg = tasks.TaskConfig(kind="wang_additive", n_train=n, n_test=x_te.shape[0], length=T,
                            input_dim=1, output_dim=n_classes)
    correct, tr_acc, loss = [], [], []
    for w in st.widths:
        mcfg = kernel_config("last", sw, sb, sh).replace(width=w, output_dim=n_classes)
        cfg = train.TrainConfig(model=mcfg, task=tcfg, steps=st.steps, log_every=st.steps,
                                save_params=True, init="symmetric", optimizer="adam")
        fn = jax.jit(jax.vmap(train.make_train(cfg, data=data), in_axes=(0, None)))
        keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(2021), s))(
            jnp.arange(st.seeds))
        rec = fn(keys, train.default_hparams(cfg) | {"lr": lr})
        fin = rec["final_params"]
        c_w, a_w = [], []
        for s in range(st.seeds):
            p = {g: a[s] for g, a in fin.items()}
            pte = np.asarray(apply(mcfg, p, jnp.asarray(x_te, jnp.float32)))
            ptr = np.asarray(apply(mcfg, p, jnp.asarray(x_tr, jnp.float32)))
            c_w.append(np.argmax(pte, 1) == y_te)
            a_w.append(np.mean(np.argmax(ptr, 1) == y_tr))
        correct.append(c_w)
        tr_acc.append(a_w)
        loss.append(np.asarray(rec["train_loss"])[:, -1])
    return {"correct": np.asarray(correct), "train_acc": np.asarray(tr_acc),
            "train_loss": np.asarray(loss), "widths": np.asarray(st.widths), "lr": np.asarray(lr),
            "sigmas": np.asarray(sigmas)}


# ----------------------------------------------------------------------------------------------
# run

def _pieces(st: Setting) -> list[str]:
    """The stems of the pieces a scale stores, in the order run() makes them."""
    stems = []
    for name in st.datasets:
        stems += [f"kernel_{name}_{readout}" for readout, grids in st.grids.items()
                  if name in grids]
        stems.append(f"baseline_{name}")
        if name in st.rnn_datasets:
            stems.append(f"rnn_{name}")
    return stems


def run(results_dir, scale: str = "default") -> None:
    """Every piece of the scale, each reused only when stored with the same settings (the
    protocol's resume rule); ``index.npz`` lists the scale's pieces for the summaries."""
    st = SETTINGS[check_scale(scale)]
    out = Path(results_dir) / NAME
    want = settings(scale, st)
    data: dict = {}

    def get(name):
        if name not in data:
            data[name] = load(name, st)
        return data[name]

    for stem in _pieces(st):
        path = out / f"{stem}.npz"
        if is_done(path, want):
            continue
        kind, rest = stem.split("_", 1)
        name, _, readout = rest.partition("_")
        if kind == "kernel":
            piece = kernel_piece(*get(name)[:4], readout, st.grids[readout][name])
        elif kind == "baseline":
            piece = baseline_piece(*get(name)[:4])
        else:
            k, _ = load_piece(out / f"kernel_{name}_last.npz", want)
            p, _ = select(k["ntk_cv"])
            sig = (float(k["sigma_w"][p]), float(k["sigma_b"][p]), float(k["sigma_h"][p]))
            piece = rnn_piece(*get(name), sig, st)
        save_piece(path, want, **piece)
    if not is_done(out / "index.npz", want):
        save_piece(out / "index.npz", want, stems=np.asarray(_pieces(st)))


def _load(results_dir) -> dict:
    """The pieces of the last run (``index.npz``), each made with the index's settings."""
    out = Path(results_dir) / NAME
    index, meta = load_piece(out / "index.npz")
    want = meta.get("settings")
    R: dict = {}
    for stem in index["stems"]:
        kind, rest = str(stem).split("_", 1)
        name, _, readout = rest.partition("_")
        R.setdefault(name, {})[kind + (f"_{readout}" if readout else "")] = load_piece(
            out / f"{stem}.npz", want)[0]
    return R


# ----------------------------------------------------------------------------------------------
# summaries (from stored results only)

def _fold_ci(f: np.ndarray) -> tuple[float, float, float]:
    """Mean fold accuracy and its 95% interval, mean +- 1.96 standard errors
    (:func:`rnn_ntk.stats.mean_sem`), clipped to [0, 1]."""
    m, se = (float(v) for v in stats.mean_sem(np.asarray(f, np.float64)))
    return m, max(m - 1.96 * se, 0.0), min(m + 1.96 * se, 1.0)


def methods(D: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per method of a data set: (CV fold accuracies (F,), test correctness (n_test,)) of its
    CV-selected configuration; RNNs: (NaN CV, correctness averaged over seeds) per width."""
    out = {}
    for readout in ("last", "mean"):
        k = D.get(f"kernel_{readout}")
        if k is None:
            continue
        for kind in ("ntk", "nngp"):
            out[f"{kind.upper()} {readout}"] = selected(k[f"{kind}_cv"],
                                                        k[f"{kind}_correct"])[:2]
        if readout == "last":
            h0 = np.broadcast_to((k["sigma_h"] == 0)[:, None], k["ntk_cv"].shape[:2])
            out["NTK last, sigma_h=0"] = selected(k["ntk_cv"], k["ntk_correct"], h0)[:2]
            out["NTK last, sigma_h>0"] = selected(k["ntk_cv"], k["ntk_correct"], ~h0)[:2]
    b = D["baseline"]
    out["RBF-SVM"] = selected(b["rbf_cv"], b["rbf_correct"])[:2]
    out["1-NN"] = (b["nn1_cv"], b["nn1_correct"].astype(float))
    r = D.get("rnn")
    if r is not None:
        for i, w in enumerate(r["widths"]):
            out[f"RNN m={int(w)}"] = (np.full(2, np.nan), r["correct"][i].mean(0))
    return out


def diff_ci(diffs: list[np.ndarray]) -> tuple[float, tuple[float, float]]:
    """Mean over data sets of the per-data-set mean of paired per-test-example differences
    (one array (n_test,) per data set), and its 95% interval from :func:`rnn_ntk.stats.
    bootstrap_seeds` resampling the test examples of each data set independently (N_BOOT draws).
    One data set: its mean difference with a paired bootstrap over its test examples."""
    return stats.bootstrap_seeds(lambda *m: float(np.mean(m)),
                                 [np.asarray(d, np.float64) for d in diffs], N_BOOT)


def sigma_w_profile(k: dict, kind: str = "ntk") -> tuple[np.ndarray, np.ndarray]:
    """(sigma_w values, test correctness (len, n_test)) with the other hyper-parameters
    CV-selected at each sigma_w."""
    sws = np.unique(k["sigma_w"])
    rows = []
    for sw in sws:
        mask = np.broadcast_to((k["sigma_w"] == sw)[:, None], k[f"{kind}_cv"].shape[:2])
        rows.append(selected(k[f"{kind}_cv"], k[f"{kind}_correct"], mask)[1])
    return sws, np.asarray(rows, float)


# ----------------------------------------------------------------------------------------------
# figures and claims

def figures(results_dir, fig_dir) -> list[Path]:
    R = _load(results_dir)
    names = list(R)
    fig, ax = plots.new_figure(3, width=4.2, height=3.2)
    # (1) CV vs test accuracy of every method, per data set
    a = ax[0, 0]
    Ms = {name: methods(R[name]) for name in names}
    order = list(dict.fromkeys(m for M in Ms.values() for m in M))     # one colour per method
    cols = plots.width_colors(len(order))
    labelled = set()
    for i, name in enumerate(names):
        for j, mname in enumerate(order):
            if mname not in Ms[name]:
                continue
            cv, corr = Ms[name][mname]
            x = i + (j - len(order) / 2) * 0.8 / len(order)
            a.bar(x, corr.mean(), width=0.8 / len(order), color=cols[j],
                  label=None if mname in labelled else mname)
            labelled.add(mname)
            if np.isfinite(cv).all():
                a.plot([x], [cv.mean()], "k_", markersize=6)
    a.set_xticks(range(len(names)), names, fontsize=7)
    a.set_ylim(0.4, 1.02)
    a.set_ylabel("test accuracy (bars); CV accuracy (black ticks)")
    a.legend(fontsize=5.5, ncol=2, loc="lower left")
    a.set_title("CV-selected test accuracy per method")
    # (2) CV vs test accuracy over all grid points of the NTK 'last' (the overfitting picture)
    a = ax[0, 1]
    for i, name in enumerate(names):
        k = R[name].get("kernel_last")
        if k is None:
            continue
        cvm = k["ntk_cv"].mean(-1).ravel()
        te = k["ntk_correct"].mean(-1).ravel()
        col = plots.width_colors(len(names))[i]
        a.scatter(cvm, te, s=4, alpha=0.35, color=col, label=name)
        cv_s, corr_s, _ = selected(k["ntk_cv"], k["ntk_correct"])
        a.scatter([cv_s.mean()], [corr_s.mean()], marker="*", s=90, color=col, edgecolor="k")
    lim = [0.4, 1.0]
    a.plot(lim, lim, "k--", lw=0.8)
    a.set_xlabel("mean 10-fold CV accuracy (train split)")
    a.set_ylabel("test accuracy")
    a.set_title("NTK 'last': every grid point (* = selected)")
    a.legend(fontsize=6)
    # (3) test accuracy vs sigma_h (others CV-selected) and vs sigma_w
    a = ax[0, 2]
    for i, name in enumerate(names):
        k = R[name].get("kernel_last")
        if k is None:
            continue
        col = plots.width_colors(len(names))[i]
        shs = np.unique(k["sigma_h"])
        te, cvs = [], []
        for sh in shs:
            mask = np.broadcast_to((k["sigma_h"] == sh)[:, None], k["ntk_cv"].shape[:2])
            cv_s, corr_s, _ = selected(k["ntk_cv"], k["ntk_correct"], mask)
            te.append(corr_s.mean())
            cvs.append(cv_s.mean())
        xs = np.arange(len(shs))
        a.plot(xs, te, "o-", color=col, label=f"{name} test")
        a.plot(xs, cvs, "s:", color=col, alpha=0.7, label=f"{name} CV")
        a.set_xticks(xs, [f"{s:g}" for s in shs])
    a.set_xlabel("sigma_h (other hyper-parameters CV-selected)")
    a.set_ylabel("accuracy")
    a.set_title("NTK 'last': effect of sigma_h")
    a.legend(fontsize=5.5, ncol=2)
    return plots.save(fig, Path(fig_dir) / NAME)


def claims(results_dir) -> list[Claim]:
    R = _load(results_dir)
    out = []
    fmt = "{:+.3f} [{:+.3f}, {:+.3f}]"
    for name, D in R.items():
        M = methods(D)
        rn = M["NTK last"][1]
        cv_m, lo, hi = _fold_ci(M["NTK last"][0])
        base = max(("RBF-SVM", "1-NN"), key=lambda b: M[b][1].mean())
        est, ci = diff_ci([rn - M[base][1]])
        out.append(Claim(NAME, f"{name}: the RNTK C-SVM beats standard baselines",
                         f"test acc RNTK ('last', CV-selected) {rn.mean():.3f} (CV {cv_m:.3f} "
                         f"[{lo:.3f}, {hi:.3f}]) minus best of RBF-SVM "
                         f"{M['RBF-SVM'][1].mean():.3f} / 1-NN {M['1-NN'][1].mean():.3f}",
                         fmt.format(est, *ci), ">= 0 (one-sided)", stats.at_least(est, ci, 0.0)))
        rnns = [m for m in M if m.startswith("RNN")]
        if rnns:
            est, ci = diff_ci([rn - M[rnns[-1]][1]])
            accs = ", ".join(f"{m} {M[m][1].mean():.3f}" for m in rnns)
            out.append(Claim(NAME, f"{name}: the RNTK beats trained RNNs",
                             f"test acc RNTK minus {rnns[-1]} (seed mean; {accs})",
                             fmt.format(est, *ci), ">= 0 (one-sided)",
                             stats.at_least(est, ci, 0.0)))
    names = list(R)
    Ms = {n: methods(R[n]) for n in names}
    d = [Ms[n]["NTK last"][1] - Ms[n]["NTK last, sigma_h=0"][1] for n in names]
    est, ci = diff_ci(d)
    per = "; ".join(f"{n} {x.mean():+.3f}" for n, x in zip(names, d))
    out.append(Claim(NAME, "a random initial state (sigma_h > 0 in the CV search) helps",
                     "test acc with sigma_h searched minus sigma_h = 0, mean over data sets "
                     f"({per})", fmt.format(est, *ci), "> 0 (one-sided; strictly above 0)",
                     stats.at_least(est, ci, 1e-12), role="extra"))
    d = [Ms[n]["NTK last"][1] - Ms[n]["NNGP last"][1] for n in names]
    est, ci = diff_ci(d)
    per = "; ".join(f"{n} {x.mean():+.3f}" for n, x in zip(names, d))
    out.append(Claim(NAME, "the NTK is at least as good as the NNGP (readout 'last'; the RNN's "
                     "own NNGP is one of the 'other kernels')",
                     f"test acc NTK minus NNGP, mean over data sets ({per})",
                     fmt.format(est, *ci), ">= 0 (one-sided)", stats.at_least(est, ci, 0.0)))
    # CV minus test accuracy: the folds and the test examples resampled independently
    arrays, gaps = [], []
    for n in names:
        cv, corr = Ms[n]["NTK last"]
        arrays += [np.asarray(cv, np.float64), np.asarray(corr, np.float64)]
        gaps.append(cv.mean() - corr.mean())
    est, (lo, hi) = stats.bootstrap_seeds(
        lambda *m: float(np.mean(np.asarray(m[0::2]) - np.asarray(m[1::2]))), arrays, N_BOOT)
    per = "; ".join(f"{n} {g:+.3f}" for n, g in zip(names, gaps))
    out.append(Claim(NAME, "10-fold CV accuracy of the selected RNTK estimates its test accuracy",
                     f"CV minus test accuracy, mean over data sets ({per}); interval: bootstrap "
                     "over folds and test examples", fmt.format(est, lo, hi), "in [-0.05, 0.05]",
                     stats.verdict(est, (lo, hi), -0.05, 0.05), role="extra"))
    # range over sigma_w of the test accuracy: the test examples resampled jointly over sigma_w
    rows_per, ranges, used = [], [], []
    for n in names:
        k = R[n].get("kernel_last")
        if k is None or np.unique(k["sigma_w"]).size < 2:
            continue
        _, rows = sigma_w_profile(k)
        rows_per.append(rows.T)                           # (n_test, sigma_w): examples leading
        ranges.append(float(np.ptp(rows.mean(1))))
        used.append(n)
    if rows_per:
        est, (lo, hi) = stats.bootstrap_seeds(
            lambda *m: float(np.mean([np.ptp(r) for r in m])), rows_per, N_BOOT)
        per = "; ".join(f"{n} {r:.3f}" for n, r in zip(used, ranges))
        out.append(Claim(NAME, "sigma_w anywhere in [1.34, 1.47] is as good (a robust choice)",
                         f"range of test acc over sigma_w (others CV-selected), mean over data "
                         f"sets ({per})", f"{est:.3f} [{lo:.3f}, {hi:.3f}]",
                         "<= 0.05 (one-sided)", stats.at_most(est, (lo, hi), 0.05),
                         role="extra"))
    return out


def summary_table(results_dir) -> str:
    """Markdown: CV and test accuracy of every method per data set (side by side)."""
    R = _load(results_dir)
    lines = ["| data set | method | CV acc [95%] | test acc | CV ties: n (test range) |",
             "|---|---|---|---|---|"]
    for name, D in R.items():
        ties = {}
        for readout in ("last", "mean"):
            k = D.get(f"kernel_{readout}")
            for kind in ("ntk", "nngp") if k is not None else ():
                m = k[f"{kind}_cv"].mean(-1)
                te = k[f"{kind}_correct"].mean(-1)[m >= m.max() - 1e-12]
                ties[f"{kind.upper()} {readout}"] = f"{te.size} ({te.min():.3f}-{te.max():.3f})"
        for m, (cv, corr) in methods(D).items():
            cvs = ("-" if not np.isfinite(cv).all()
                   else "{:.3f} [{:.3f}, {:.3f}]".format(*_fold_ci(cv)))
            lines.append(f"| {name} | {m} | {cvs} | {corr.mean():.3f} | {ties.get(m, '')} |")
    return "\n".join(lines)

