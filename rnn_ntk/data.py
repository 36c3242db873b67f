"""Real sequence data: univariate UCR time-series classification sets shipped inside a pip package.

sktime (the optional extra ``ucr``: ``pip install -e ".[ucr]"``) bundles a few UCR archive data
sets with their standard train/test splits as ``.ts`` files. They are read here with a small
parser of their own, without importing sktime (slow): the files are found through
``importlib.util.find_spec("sktime").submodule_search_locations``. Nothing is downloaded.

    ds = load_ucr("GunPoint")                 # UCRData, x z-normalised per series, (n, T, 1)
    ds.x_train.shape, ds.y_train[:5]          # (50, 150, 1), integer class indices 0..C-1

Known sizes (train / test, length): GunPoint 50 / 150, 150; ItalyPowerDemand 67 / 1029, 24;
ArrowHead 36 / 175, 251; OSULeaf 200 / 242, 427.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["UCR_DATASETS", "UCRData", "TsFile", "load_ucr", "read_ts", "sktime_data_dir",
           "znormalize"]

#: the univariate sets sktime ships with the standard splits: name -> (n_train, n_test, length)
UCR_DATASETS: dict[str, tuple[int, int, int]] = {
    "GunPoint": (50, 150, 150),
    "ItalyPowerDemand": (67, 1029, 24),
    "ArrowHead": (36, 175, 251),
    "OSULeaf": (200, 242, 427),
}


class DataError(ValueError):
    """A data file or data set request is malformed. The message is one line."""


@dataclasses.dataclass(frozen=True)
class TsFile:
    """The contents of one ``.ts`` file: series (n, T) float64, string labels (n,), header."""

    series: np.ndarray
    labels: np.ndarray
    class_labels: tuple[str, ...]
    header: dict[str, str]


@dataclasses.dataclass(frozen=True)
class UCRData:
    """A UCR data set with its standard split.

    x_train (n_train, T, 1), x_test (n_test, T, 1): float64, each series z-normalised (mean 0,
    std 1 over its own steps; a constant series becomes 0). y_train, y_test: int64 class
    indices into ``classes`` (the header's class labels, in order).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def length(self) -> int:
        return self.x_train.shape[1]


def read_ts(path: str | Path) -> TsFile:
    """Parse a univariate, equal-length, labelled ``.ts`` file (sktime's text format).

    Lines starting with '#' are comments; '@key value' lines form the header up to '@data'; each
    data line is ``v1,v2,...,vT:label``. Missing values ('?' or NaN), multivariate series
    (more than one ':'-separated dimension), unequal lengths and unlabelled files are refused
    with a one-line :class:`DataError` naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such .ts file: {path}")
    header: dict[str, str] = {}
    rows: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{path.name}:{lineno}"
            if not in_data:
                if not line.startswith("@"):
                    raise DataError(f"{where}: expected a '@' header line before @data")
                key, _, value = line[1:].partition(" ")
                key = key.lower()
                if key == "data":
                    in_data = True
                else:
                    header[key] = value.strip()
                continue
            *dims, label = line.split(":")
            if len(dims) != 1:
                raise DataError(f"{where}: expected one dimension and a label "
                                f"('v1,...,vT:label'), got {len(dims)} dimension(s)")
            try:
                vals = np.array([float(v) for v in dims[0].split(",")], np.float64)
            except ValueError:
                raise DataError(f"{where}: series values must be numbers") from None
            if not np.all(np.isfinite(vals)):
                raise DataError(f"{where}: missing or non-finite values are not supported")
            if rows and vals.shape != rows[0].shape:
                raise DataError(f"{where}: series of length {vals.size}, but the first has "
                                f"{rows[0].size} (unequal lengths are not supported)")
            rows.append(vals)
            labels.append(label.strip())
    if not in_data:
        raise DataError(f"{path.name}: no @data section")
    if not rows:
        raise DataError(f"{path.name}: no series after @data")
    cl = header.get("classlabel", "").split()
    if not cl or cl[0].lower() != "true":
        raise DataError(f"{path.name}: '@classLabel true ...' header missing (unlabelled data)")
    classes = tuple(cl[1:])
    unknown = sorted(set(labels) - set(classes))
    if classes and unknown:
        raise DataError(f"{path.name}: labels {unknown} are not among @classLabel {list(classes)}")
    if header.get("univariate", "true").lower() != "true":
        raise DataError(f"{path.name}: only univariate series are supported")
    T = header.get("serieslength")
    if T is not None and int(T) != rows[0].size:
        raise DataError(f"{path.name}: @seriesLength {T} but series have {rows[0].size} values")
    return TsFile(np.stack(rows), np.asarray(labels), classes or tuple(sorted(set(labels))),
                  header)


def znormalize(series_NT: np.ndarray) -> np.ndarray:
    """Each series to mean 0 and std 1 over its steps (float64); constant series become 0."""
    s = np.asarray(series_NT, np.float64)
    mu = s.mean(axis=1, keepdims=True)
    sd = s.std(axis=1, keepdims=True)
    return np.where(sd > 0, (s - mu) / np.where(sd > 0, sd, 1.0), 0.0)


def sktime_data_dir() -> Path:
    """sktime's bundled data folder, found without importing sktime."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the UCR data sets need sktime, which bundles them: "
                        "pip install -e \".[ucr]\" (or pip install sktime)")
    for loc in spec.submodule_search_locations:
        d = Path(loc) / "datasets" / "data"
        if d.is_dir():
            return d
    raise DataError(f"sktime is installed but has no datasets/data folder "
                    f"(looked in {list(spec.submodule_search_locations)})")


def load_ucr(name: str, data_dir: str | Path | None = None) -> UCRData:
    """A UCR data set with its standard train/test split (see the module docstring).

    Args:
      name: one of :data:`UCR_DATASETS` (any folder ``<data_dir>/<name>`` with
        ``<name>_TRAIN.ts`` and ``<name>_TEST.ts`` is read when ``data_dir`` is given).
      data_dir: folder of data sets (default: sktime's bundled data, :func:`sktime_data_dir`).
    Returns:
      :class:`UCRData`, x z-normalised per series with shape (n, T, 1), y class indices.
    """
    if not isinstance(name, str) or (data_dir is None and name not in UCR_DATASETS):
        raise DataError(f"unknown UCR data set {name!r}; bundled: {sorted(UCR_DATASETS)}")
    root = Path(data_dir) if data_dir is not None else sktime_data_dir()
    tr = read_ts(root / name / f"{name}_TRAIN.ts")
    te = read_ts(root / name / f"{name}_TEST.ts")
    if tr.series.shape[1] != te.series.shape[1]:
        raise DataError(f"{name}: train series have length {tr.series.shape[1]}, test series "
                        f"{te.series.shape[1]}")
    classes = tr.class_labels
    index = {c: i for i, c in enumerate(classes)}
    bad = sorted(set(te.labels) - set(classes))
    if bad:
        raise DataError(f"{name}: test labels {bad} are not among the train classes {list(classes)}")
    return UCRData(name=name,
                   x_train=znormalize(tr.series)[:, :, None],
                   y_train=np.array([index[c] for c in tr.labels], np.int64),
                   x_test=znormalize(te.series)[:, :, None],
                   y_test=np.array([index[c] for c in te.labels], np.int64),
                   classes=classes)
