"""What the experiments share: the one resume rule, sweep stores, interval formatting.

The resume rule (issue 11): a stored piece is reused only when the settings that made it are
equal to the settings asked for. Every piece is an .npz written by :func:`save_piece` with its
settings (a JSON-normalised dict: the scale, the scale's Setting, and any constant the piece
depends on) under ``meta["settings"]``; :func:`is_done` compares them, :func:`load_piece` refuses a
piece made with other settings. A sweep store is reused when its stored spec equals the spec asked
for and replaced otherwise (:func:`sweep_store`), since the sweep engine refuses to resume a changed
spec.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from rnn_ntk.reproduce import load_arrays, save_arrays

__all__ = ["settings", "is_done", "save_piece", "load_piece", "stored_setting", "sweep_store",
           "not_finished", "fmt_interval", "fmt_fit"]


def settings(scale: str, setting: Any = None, **extra: Any) -> dict[str, Any]:
    """The settings dict of a piece: ``{"scale": scale, "setting": setting._asdict(), **extra}``
    (``setting`` a NamedTuple or a dict, omitted when None), normalised through JSON (tuples become
    lists) so that it compares equal to what :func:`load_arrays` reads back."""
    out: dict[str, Any] = {"scale": scale}
    if setting is not None:
        out["setting"] = setting._asdict() if hasattr(setting, "_asdict") else dict(setting)
    out.update(extra)
    return json.loads(json.dumps(out))


def is_done(path: str | Path, want: dict[str, Any]) -> bool:
    """Whether ``path`` holds a finished piece made with the settings ``want`` (a missing or
    unreadable file is not done; a piece made with other settings is not done)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        _, meta = load_arrays(path)
    except Exception:  # unreadable: recompute
        return False
    return meta.get("settings") == json.loads(json.dumps(want))


def save_piece(path: str | Path, want: dict[str, Any], meta: dict[str, Any] | None = None,
               **arrays: Any) -> Path:
    """Atomically write a piece: ``arrays`` with ``meta`` and ``meta["settings"] = want``."""
    return save_arrays(path, {**(meta or {}), "settings": want}, **arrays)


def load_piece(path: str | Path, want: dict[str, Any] | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, meta) of a stored piece; FileNotFoundError (the protocol's "not run yet") when it
    is missing or, ``want`` given, was made with other settings (a run at another scale that
    stopped half-way: rerun the experiment)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no stored piece {path}; run the experiment first")
    arrays, meta = load_arrays(path)
    if want is not None and meta.get("settings") != json.loads(json.dumps(want)):
        raise FileNotFoundError(f"{path} was made with other settings than the rest of the "
                                f"results; run the experiment again")
    return arrays, meta


def sweep_store(spec: Any, store_dir: str | Path) -> Path:
    """Run the sweep ``spec`` into ``store_dir``, or finish it: a store of the same spec is resumed
    (finished chunks are kept; nothing runs when every run is stored), a store of another spec
    (another scale, target or step) is removed first."""
    from rnn_ntk import store, sweep

    out = Path(store_dir)
    if (out / store.HEADER).exists():
        if store.read_header(out).get("spec") != spec.resolved:
            shutil.rmtree(out)
        elif ((out / store.RESULTS).is_dir()
              and len(store.done_runs(out)) == len(sweep.expand_runs(spec))):
            return out
    sweep.run_sweep(spec, out, resume=True)
    return out


def fmt_interval(estimate: float, interval: tuple[float, float], nd: int = 3,
                 signed: bool = False) -> str:
    """``"est [lo, hi]"`` with ``nd`` decimals (``signed``: always a sign, e.g. "+0.120")."""
    f = f"{{:{'+' if signed else ''}.{nd}f}}"
    return f"{f.format(estimate)} [{f.format(interval[0])}, {f.format(interval[1])}]"


def not_finished(missing: str, name: str, scale: str, out: str | Path) -> FileNotFoundError:
    """The error of figures/claims on an interrupted run (``rnn-ntk figures`` reports it as "not
    finished"): ``missing`` (e.g. "3 pieces") of the ``scale`` run under ``out`` are not stored."""
    return FileNotFoundError(f"{missing} of the {scale} run under {out} are not stored yet; "
                             f"finish it with `rnn-ntk reproduce {name} --scale {scale}`")


def fmt_fit(fit: Any, nd: int = 3, signed: bool = False) -> str:
    """A :class:`rnn_ntk.stats.Fit`'s slope with its 95% interval (:func:`fmt_interval`)."""
    return fmt_interval(fit.slope, fit.ci95, nd, signed)


def stored_setting(meta: dict[str, Any], cls: type) -> Any:
    """The scale's Setting (a NamedTuple ``cls``) a piece was made with, from its meta (lists
    back to tuples); FileNotFoundError for a piece stored without settings (an older format)."""
    st = (meta.get("settings") or {}).get("setting")
    if st is None:
        raise FileNotFoundError("a stored piece has no settings (an older format); run the "
                                "experiment again")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in st.items()})
