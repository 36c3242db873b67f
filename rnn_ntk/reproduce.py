"""The experiment protocol behind ``rnn-ntk reproduce`` and ``rnn-ntk figures``.

Each experiment is a module ``rnn_ntk.experiments.<name>`` (the repository's
``experiments/<name>.py``; shared pieces in ``rnn_ntk.experiments.protocol``) that defines

    NAME: str                                   short id, e.g. "b2_no_explosion"
    TITLE: str                                  one line for the gallery
    def run(results_dir, scale="default")       compute and store results under results_dir/NAME;
                                                resumable: a stored piece is reused only when the
                                                settings that made it are equal (protocol.is_done)
    def figures(results_dir, fig_dir) -> list   draw from stored results only (PNG + PDF)
    def claims(results_dir) -> list[Claim]      the measured statistics and verdicts for RESULTS.md

``scale`` is 'ci' (seconds: the test suite runs every experiment end to end at this size),
'default' (a few minutes on 2 CPU cores; what the committed figures use) or 'large' (GPU-sized:
more widths, seeds and longer sequences).

Analysis results are small arrays: :func:`save_arrays` writes them atomically (temporary file,
then rename), so an interrupted experiment never leaves a file that reads as finished.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import numpy as np

__all__ = ["SCALES", "VERDICTS", "ROLES", "Claim", "check_scale", "save_arrays", "load_arrays",
           "write_text", "EXPERIMENTS_PACKAGE", "SHARED_MODULES", "PROTOCOL", "experiments_dir",
           "load_experiment", "discover", "results_markdown", "relative_error",
           "store_position_errors"]

SCALES = ("ci", "default", "large")
VERDICTS = ("agrees", "disagrees", "inconclusive")
ROLES = ("claim", "control", "extra")


@dataclasses.dataclass(frozen=True)
class Claim:
    """One row of RESULTS.md: what a paper claims, what was measured, and whether they agree.

    ``role`` tells a paper's claim ('claim') from a control that checks the set-up ('control',
    e.g. tanh instead of ReLU, a kernel-convergence check) and from a measurement the papers do not
    make ('extra')."""

    experiment: str
    claim: str
    statistic: str
    value: str          # the measured value with its uncertainty, formatted
    criterion: str      # the agreement criterion, fixed before looking at the data
    verdict: str        # one of VERDICTS
    role: str = "claim"  # one of ROLES

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {list(SCALES)}, got {scale!r}")
    return scale


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_arrays(path: str | Path, meta: dict[str, Any] | None = None, **arrays: Any) -> Path:
    """Atomically write ``arrays`` (and a JSON ``meta`` dict) to ``path`` (.npz)."""
    path = Path(path)
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.asarray(json.dumps(meta or {}, sort_keys=True))
    _atomic_write(path, lambda f: np.savez(f, **payload))
    return path


def load_arrays(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`save_arrays`: (arrays, meta)."""
    with np.load(Path(path)) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
    return arrays, meta


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""
    path = Path(path)
    _atomic_write(path, lambda f: f.write(text.encode()))
    return path


EXPERIMENTS_PACKAGE = "rnn_ntk.experiments"
SHARED_MODULES = ("protocol",)          # modules of the package that are not experiments
PROTOCOL = ("NAME", "TITLE", "run", "figures", "claims")


def experiments_dir() -> Path:
    """The folder of the experiments package (the repository's experiments/ in a checkout)."""
    import rnn_ntk.experiments
    return Path(rnn_ntk.experiments.__file__).resolve().parent


def _available() -> list[str]:
    """Names of the experiment modules of the package, sorted."""
    import pkgutil

    import rnn_ntk.experiments
    return sorted(m.name for m in pkgutil.iter_modules(rnn_ntk.experiments.__path__)
                  if not m.ispkg and not m.name.startswith("_") and m.name not in SHARED_MODULES)


def load_experiment(name: str) -> ModuleType:
    """The experiment module ``rnn_ntk.experiments.NAME`` (an ordinary import: one module object
    per process). Raises ValueError for an unknown name or a module that does not follow the
    protocol."""
    available = _available()
    if name not in available:
        raise ValueError(f"unknown experiment {name!r}; known: {available}")
    module = importlib.import_module(f"{EXPERIMENTS_PACKAGE}.{name}")
    missing = [a for a in PROTOCOL if not hasattr(module, a)]
    if missing or module.NAME != name:
        raise ValueError(f"experiment module {module.__name__} does not follow the experiment "
                         f"protocol (missing {missing}, NAME {getattr(module, 'NAME', None)!r})")
    return module


def discover(names: Iterable[str] | None = None) -> list[ModuleType]:
    """The experiment modules: all of the package's in name order, or the ones named (in the
    order given); unknown names raise ValueError naming them."""
    available = _available()
    if names is None:
        return [load_experiment(n) for n in available]
    names = list(names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown experiment(s) {unknown}; known: {available}")
    return [load_experiment(n) for n in names]


def results_markdown(claims: list[Claim], *, header: str = "") -> str:
    """RESULTS.md: one table per experiment, generated from the claims."""
    lines = ["# Results: the papers' claims measured", "",
             "Generated by `rnn-ntk reproduce` / `rnn-ntk figures` from stored results; do not edit by "
             "hand. Verdicts: *agrees* (the whole 95% interval of the measured statistic meets the "
             "criterion), *disagrees* (the whole interval misses it), *inconclusive* (the interval "
             "straddles a bound, or the statistic is not measurable at these widths). One-sided "
             "criteria (upper bounds: \"at most\", \"does not grow\") are tested one-sided. Kind: "
             "*claim* (a paper's claim), *control* (checks the set-up), *extra* (a measurement the "
             "papers do not make). Criteria were fixed before the runs and are never tuned to pass.",
             ""]
    if header:
        lines += [header, ""]
    by_exp: dict[str, list[Claim]] = {}
    for c in claims:
        by_exp.setdefault(c.experiment, []).append(c)
    for exp, rows in by_exp.items():
        lines += [f"## {exp}", "", "| kind | claim | statistic | measured | criterion | verdict |",
                  "|---|---|---|---|---|---|"]
        for c in rows:
            cells = [c.role, c.claim, c.statistic, c.value, c.criterion, f"**{c.verdict}**"]
            lines.append("| " + " | ".join(s.replace("|", "\\|") for s in cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# per-position test errors of trained sequence-to-sequence runs (A1, A2)


def relative_error(pred_NT: Any, y_NT: Any) -> np.ndarray:
    """Per-position relative test error for positions t >= 2: mean_i (p_it - y_it)^2 / Var_i y_t,
    (T-1,) from predictions and targets (n, T); position 1 (no target in the papers' loss) is
    ignored. float64."""
    p, y = np.asarray(pred_NT, np.float64)[:, 1:], np.asarray(y_NT, np.float64)[:, 1:]
    return np.mean((p - y) ** 2, axis=0) / np.var(y, axis=0)


def store_position_errors(store_dir: str | Path) -> dict[str, np.ndarray]:
    """Per-run relative test errors of a finished sweep store with readout 'all' and
    ``save_params``, recomputed from the stored final parameters on each run's own test set.

    Returns, over the runs in ``sweep.expand_runs`` order of the stored spec: ``err`` (R, T-1)
    (:func:`relative_error`), ``width`` and ``seed`` (R,), the engine's own final ``test_loss``
    (R,) and ``diverged`` (R,, any step). The test set is regenerated as ``train`` draws it
    (``tasks.sample_task`` from fold_in(run key, 1)); it does not depend on n_train, so it is drawn
    with n_train = 1. Parameters of runs packed at a larger array width are stored NaN-padded
    (the padding is exact zeros in the engine) and evaluated at the array width with the run's
    true width in the scales, as the engine does. A centred run (``[train] center``) is
    evaluated as it was trained: f(final) - f(init), from the stored initial parameters."""
    import jax
    import jax.numpy as jnp

    from rnn_ntk import model, sweep, tasks, train
    from rnn_ntk.store import load_results

    ds = load_results(store_dir)
    spec = sweep.parse_spec(ds.attrs["spec_toml"], f"{store_dir} (stored spec)")
    apply = _jit_apply()
    out: dict[str, list] = {"err": [], "width": [], "seed": [], "test_loss": [], "diverged": []}
    for r in sweep.expand_runs(spec):
        cfg = sweep.build_config(spec, r.static, r.width)
        tc = dataclasses.replace(cfg.task, n_train=1)
        thp = {k: float(v) for k, v in tasks.default_task_hparams(cfg.task).items()}
        set_by_spec = {**spec.fixed["task"], **dict(r.lanes)}
        thp.update({k: float(set_by_spec[k]) for k in thp if k in set_by_spec})
        data = tasks.sample_task(tc, jax.random.fold_in(train.run_key(r.seed, r.key_coords), 1),
                                 thp, dtype=cfg.jnp_dtype)
        cell = ds.sel({a.name: c for a, c in zip(spec.axes, r.coords)})

        def stored(which):
            return {g: jnp.asarray(np.nan_to_num(cell[f"{which}_{g}"].values, nan=0.0),
                                   cfg.jnp_dtype) for g in model.GROUPS}

        m = cfg.model
        sc = model.Scales(m.sigma_w, m.sigma_u, m.sigma_b, m.sigma_v, float(r.width))
        pred = apply(m, stored("final"), data.x_test, scales=sc)[..., 0]
        if cfg.center:
            pred = pred - apply(m, stored("init"), data.x_test, scales=sc)[..., 0]
        out["err"].append(relative_error(pred, data.y_test[..., 0]))
        out["width"].append(r.width)
        out["seed"].append(r.seed)
        out["test_loss"].append(float(cell["test_loss"].isel(step=-1)))
        out["diverged"].append(bool(cell["diverged"].any()))
    return {k: np.asarray(v) for k, v in out.items()}


_APPLY: list = []


def _jit_apply():
    """model.apply jitted once per process (config static)."""
    if not _APPLY:
        import jax

        from rnn_ntk import model
        _APPLY.append(jax.jit(model.apply, static_argnums=0))
    return _APPLY[0]
