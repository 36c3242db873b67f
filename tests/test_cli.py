"""The rnn-ntk CLI end to end: help, validate, bad specs (exit 2, nothing written), a sweep whose
store equals runs trained directly through the Python API, refusals, the step progress bar, the
writer lock, and SIGKILL + --resume."""
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray as xr

from rnn_ntk import __version__, store, sweep
from rnn_ntk.cli import main, plot_loss_curves
from rnn_ntk.model import RNNConfig
from rnn_ntk.tasks import TaskConfig
from rnn_ntk.train import TrainConfig, make_train, run_key
from train_helpers import _count_compiles

REPO = Path(__file__).resolve().parents[1]

GOOD = """
name = "tiny"
[model]
width = 4
activation = "tanh"
[task]
kind = "random_labels"
n_train = 6
n_test = 4
length = 4
input_dim = 3
[train]
steps = 4
log_every = 2
lr = 0.5
dtype = "float64"
[sweep]
seed = 0
"""


def write(tmp_path, text, name="spec.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("run", "validate", "demo"):
        assert cmd in out
    for cmd, opts in (("run", ("--out", "--resume", "--max-memory", "--x64", "FILE")),
                      ("validate", ("--max-memory", "FILE")), ("demo", ("--out", "--resume"))):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert all(o in out for o in opts), (cmd, out)
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rnn-ntk {__version__}"


def test_validate_prints_the_plan(tmp_path, capsys):
    text = GOOD.replace("width = 4", "width = [4, 8]\ntrainable = [[\"W\"], [\"W\", \"v\"]]").replace(
        "seed = 0", "seeds = 3\npack_widths = true\nchunk_size = 4")
    assert main(["validate", str(write(tmp_path, text))]) == 0
    out = capsys.readouterr().out
    assert "12 runs over axes (width=2, trainable=2, seed=3)" in out
    assert "2 compiled program(s), 4 chunk(s)" in out
    assert out.count("widths 4,8 packed at array width 8") == 2
    assert "trainable=W;" in out and "trainable=Wv;" in out
    assert "estimated time" in out and "per chunk" in out
    # a budget too small for one run is refused before anything runs (splitting: tests/sweep/test_plan.py)
    assert main(["validate", str(tmp_path / "spec.toml"), "--max-memory", "1K"]) == 2
    assert "more than the memory budget 1.0 KiB (--max-memory)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "spec.toml"]


BAD = [
    ("unknown key", ("width = 4", "widht = 4"), "model.widht: unknown key (did you mean 'width'?)"),
    ("key in wrong section", ("lr = 0.5", "lr = 0.5\nsigma_w = 1.0"),
     "train.sigma_w: unknown key; 'sigma_w' belongs in [model]"),
    ("unknown section", ("[sweep]", "[swep]"), "swep: unknown top-level key (did you mean 'sweep'?)"),
    ("wrong type", ("n_train = 6", 'n_train = "6"'), "task.n_train: must be an integer, got '6'"),
    ("wrong type in axis", ('activation = "tanh"', 'activation = ["tanh", 3]'),
     "model.activation[1]: must be a string, got 3"),
    ("bad choice", ('activation = "tanh"', 'activation = "tahn"'),
     "model.activation: must be one of"),
    ("non-positive size", ("width = 4", "width = 0"), "model.width: must be a positive integer, got 0"),
    ("non-positive axis size", ("length = 4", "length = [4, -2]"),
     "task.length[1]: must be a positive integer, got -2"),
    ("empty axis", ("lr = 0.5", "lr = []"), "train.lr: empty axis (give at least one value)"),
    ("infinite lr", ("lr = 0.5", "lr = inf"), "train.lr: learning rate must be finite and > 0, got inf"),
    ("nan lr", ("lr = 0.5", "lr = nan"), "train.lr: learning rate must be finite and > 0, got nan"),
    ("zero lr", ("lr = 0.5", "lr = [0.5, 0.0]"),
     "train.lr[1]: learning rate must be finite and > 0, got 0.0"),
    ("empty trainable", ("width = 4", "width = 4\ntrainable = []"),
     "model.trainable: must name at least one of ['W', 'U', 'b', 'v']"),
    ("readout/target mismatch", [("width = 4", 'width = 4\nreadout = "all"'),
                                 ("n_test = 4", 'n_test = 4\ntarget = "last"')],
     "task: target 'last' does not fit model.readout 'all'"),
    ("readout/target mismatch in axis", [("width = 4", 'width = 4\nreadout = ["last", "all"]'),
                                         ("n_test = 4", 'n_test = 4\ntarget = "last"')],
     "task: target 'last' does not fit model.readout 'all' ('all' readout needs target 'all' and "
     "vice versa) (run with width=4, readout=all)"),
    ("zip of unequal length", ("seed = 0", "seed = 0\n[sweep.zip]\nwidth = [4, 8]\nlr = [0.1]"),
     "sweep.zip: zipped axes must have equal lengths (width has 2, lr has 1)"),
    ("zip key also in its section",
     ("seed = 0", "seed = 0\n[sweep.zip]\nlr = [0.1, 0.2]\nsigma_w = [1.0, 2.0]"),
     "train.lr: set in [train] and in [sweep.zip]"),
    ("task parameter of another kind", ("input_dim = 3", "input_dim = 3\nrho = 0.5"),
     "task.rho: not a parameter of task kind 'random_labels'"),
    ("task parameter out of range", ("input_dim = 3", "input_dim = 3\neps_x = 2.0"),
     "task.eps_x: must be in [0, 1] (tokens must have norm <= 1), got 2.0"),
    ("steps not a multiple of log_every", ("steps = 4", "steps = 5"),
     "steps (5) must be a multiple of log_every (2)"),
    ("bad seeds", ("seed = 0", "seeds = 0"), "sweep.seeds: must be a positive integer"),
    ("duplicate axis values", ("width = 4", "width = [4, 4]"), "model.width: repeated values"),
    ("invalid TOML", ("width = 4", "width = = 4"), "invalid TOML"),
]


@pytest.mark.parametrize("name,edit,message", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_exits_2_and_writes_nothing(tmp_path, capsys, name, edit, message):
    text = GOOD
    for old, new in edit if isinstance(edit, list) else [edit]:
        assert old in text
        text = text.replace(old, new, 1)
    spec = write(tmp_path, text)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert all(line.startswith("rnn-ntk: error: ") for line in err.strip().splitlines())
    assert not out.exists()
    assert main(["validate", str(spec)]) == 2
    assert message in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [spec]


def test_bad_arguments_exit_2(tmp_path, capsys):
    spec = write(tmp_path, GOOD)
    assert main(["run", str(spec), "--out", str(tmp_path / "o"), "--max-memory", "lots"]) == 2
    assert "--max-memory" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read spec file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run"])
    assert e.value.code == 2


# A packed width ladder in float64: widths 3 and 6 share one program (array width 6); 10 runs in
# chunks of at most 4 lanes (sizes 4, 4, 2 -> the last one is padded), momentum optimizer, two
# trained groups, final parameters saved.
PACKED = """
name = "packed"
[model]
width = [3, 6]
activation = "tanh"
sigma_b = 0.5
trainable = ["W", "v"]
[task]
kind = "random_labels"
n_train = 5
n_test = 3
length = 4
input_dim = 3
label_noise = 0.1
[train]
steps = 6
log_every = 2
lr = [0.3, 0.6]
momentum = 0.5
optimizer = "momentum"
dtype = "float64"
save_params = true
[sweep]
seed = [3, 11]
pack_widths = true
chunk_size = 4
"""


@functools.lru_cache(maxsize=None)
def direct_train(width):
    """One run through the Python API, alone at its own width (independent of rnn_ntk.sweep)."""
    cfg = TrainConfig(model=RNNConfig(width=width, input_dim=3, activation="tanh", sigma_b=0.5,
                                      trainable=("W", "v")),
                      task=TaskConfig("random_labels", n_train=5, n_test=3, length=4, input_dim=3),
                      steps=6, log_every=2, optimizer="momentum", dtype="float64", save_params=True)
    return jax.jit(make_train(cfg))


def direct_run(width, lr, seed):
    hp = {"lr": lr, "momentum": 0.5, "label_noise": 0.1, "sigma_b": 0.5, "width": float(width)}
    return direct_train(width)(run_key(seed, ()), hp)


def test_run_store_equals_direct_api_and_refusals(tmp_path, capsys):
    spec = write(tmp_path, PACKED)
    out = tmp_path / "out"
    assert main(["run", str(spec), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "packed: 8 runs in the store (8 trained now, 0 finished before), 0 diverged" in captured.out
    assert str(out / "results.zarr") in captured.out
    manifests = store.list_chunks(out)
    assert [len(m["runs"]) for m in manifests] and sum(len(m["runs"]) for m in manifests) == 8
    assert all(m["info"]["array_width"] == 6 for m in manifests)

    ds = store.load_results(out)
    assert ds.train_loss.dims == ("width", "lr", "seed", "step")
    assert ds.width.values.tolist() == [3, 6] and ds.lr.values.tolist() == [0.3, 0.6]
    assert ds.seed.values.tolist() == [3, 11] and ds.step.values.tolist() == [0, 2, 4, 6]
    assert ds.final_W.dims == ("width", "lr", "seed", "unit", "unit_in")
    assert bool(ds.ran.all())
    assert json.loads(ds.attrs["spec_json"])["train"]["lr"] == [0.3, 0.6]
    assert ds.attrs["version_jax"] == jax.__version__

    for width in (3, 6):
        for lr in (0.3, 0.6):
            for seed in (3, 11):
                ref = direct_run(width, lr, seed)
                cell = ds.sel(width=width, lr=lr, seed=seed)
                for k in ("train_loss", "test_loss", "dtheta_W", "dtheta_v", "grad_norm",
                          "sign_flip"):
                    np.testing.assert_allclose(cell[k].values, np.asarray(ref[k]), rtol=1e-12,
                                               atol=1e-13, err_msg=f"{k} width={width}")
                np.testing.assert_array_equal(cell["diverged"].values, np.asarray(ref["diverged"]))
                for g in ("W", "U", "b", "v"):
                    got = cell[f"final_{g}"].values
                    want = np.asarray(ref["final_params"][g])
                    sl = tuple(slice(0, n) for n in want.shape)
                    np.testing.assert_allclose(got[sl], want, rtol=1e-12, atol=1e-13)
                    assert got.shape[0] == 6 and np.isnan(got[width:]).all()  # beyond own width
                    if g == "W":
                        assert np.isnan(got[:, width:]).all()

    # the figure of a store
    paths = plot_loss_curves(ds, tmp_path / "fig" / "loss")
    assert paths[0].suffix == ".png" and paths[0].stat().st_size > 1000

    # refusals: existing out dir without --resume; changed spec on resume; nothing overwritten
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["run", str(spec), "--out", str(out)]) == 1
    assert "is not empty; pass --resume" in capsys.readouterr().err
    changed = write(tmp_path, PACKED.replace("steps = 6", "steps = 8").replace(
        'activation = "tanh"', 'activation = "relu"'), "changed.toml")
    assert main(["run", str(changed), "--out", str(out), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "spec changed since the first run (changed: model.activation, train.steps)" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # resuming a finished run trains nothing and keeps the results
    assert main(["run", str(spec), "--out", str(out), "--resume"]) == 0
    assert "(0 trained now, 8 finished before)" in capsys.readouterr().out
    xr.testing.assert_identical(store.load_results(out), ds)


def test_second_writer_is_refused_before_any_compute(tmp_path, capsys):
    spec = write(tmp_path, GOOD)
    out = tmp_path / "out"
    with store.lock_store(out), _count_compiles() as compiles:   # this process is the writer
        for extra in ([], ["--resume"]):
            assert main(["run", str(spec), "--out", str(out), *extra]) == 1
            captured = capsys.readouterr()
            err = captured.err.strip()
            assert len(err.splitlines()) == 1 and err.startswith("rnn-ntk: error: "), err
            assert (f"{out} is in use by another rnn-ntk writer (pid {os.getpid()} on host "
                    f"{socket.gethostname()}, started ") in err
            assert captured.out == ""
        assert compiles == []
        assert [q.name for q in out.iterdir()] == [store.LOCK]    # nothing written


# 5 runs in chunks of 3 lanes (3 + 2, the second padded), on 2 devices (both padded to 4)
STEPS = GOOD.replace("seed = 0", "seeds = 5\nchunk_size = 3")


def test_step_progress_sums_to_the_plan_and_changes_nothing(tmp_path, capsys, monkeypatch):
    spec = sweep.parse_spec(STEPS, "<test>")
    plan = sweep.make_plan(spec)
    assert [len(c.runs) for c in plan.chunks] == [3, 2] and {c.size for c in plan.chunks} == {3}
    assert plan.steps_todo == 5 * 4
    # runs this short report when their chunk ends ...
    assert sweep.progress_every(plan.programs[0].cfg, plan.backend) == 0
    reports, chunks = [], []
    sweep.run_sweep(spec, tmp_path / "short", on_step=reports.append,
                    on_chunk=lambda c, s: chunks.append(sum(reports)))
    assert reports == [3 * 4, 2 * 4] and chunks == [3 * 4, 5 * 4]
    # ... longer ones from inside the compiled program (here: every log, each run by itself)
    monkeypatch.setattr(sweep, "PROGRESS_MIN_RUN_S", 0.0)
    monkeypatch.setattr(sweep, "PROGRESS_INTERVAL_S", 1e-9)
    assert sweep.progress_every(plan.programs[0].cfg, plan.backend) == 1
    reports, chunks = [], []
    sweep.run_sweep(spec, tmp_path / "api", on_step=reports.append,
                    on_chunk=lambda c, s: chunks.append(sum(reports)))
    assert reports == [2] * 10                   # 5 runs x 2 logs of 2 steps; padding not reported
    assert chunks == [3 * 4, 5 * 4]              # every step of a chunk reported before it is written
    assert not (tmp_path / "api" / store.LOCK).exists()

    path = write(tmp_path, STEPS)
    assert main(["run", str(path), "--out", str(tmp_path / "plain")]) == 0   # not a tty: no bar
    assert "step/s" not in capsys.readouterr().err
    # (still reporting every log from the program) tqdm draws its bar as on a terminal
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["run", str(path), "--out", str(tmp_path / "bar")]) == 0
    captured = capsys.readouterr()
    final = captured.err.split("\r")[-1]
    assert "100%" in final and "20.0/20.0" in final and "step/s" in final, captured.err
    assert "chunk 2/2, 5/5 runs" in final
    assert "tiny: 5 runs in the store (5 trained now, 0 finished before), 0 diverged" in captured.out
    plain = store.load_results(tmp_path / "plain")
    xr.testing.assert_identical(store.load_results(tmp_path / "bar"), plain)
    xr.testing.assert_identical(store.load_results(tmp_path / "api"), plain)
    xr.testing.assert_identical(store.load_results(tmp_path / "short"), plain)
    assert len(set(plain.train_loss.values[:, -1].tolist())) == 5         # the runs differ


KILL = """
name = "kill"
[model]
width = 8
[task]
kind = "random_labels"
n_train = 8
n_test = 4
length = 5
input_dim = 3
[train]
steps = 3000
log_every = 500
lr = [0.2, 0.4]
dtype = "float64"
[sweep]
seeds = 6
chunk_size = 2
"""


def _env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _cli(tmp_path, *args):
    return subprocess.Popen([sys.executable, "-m", "rnn_ntk.cli", *args], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)


def _finished(out):
    return len(store.list_chunks(out))


def _kill_when(proc, cond, timeout=120):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, f"finished before the kill point: {proc.communicate()}"
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_and_resume_give_the_uninterrupted_store(tmp_path):
    spec = write(tmp_path, KILL)
    ref, out = tmp_path / "ref", tmp_path / "out"
    p = _cli(tmp_path, "run", str(spec), "--out", str(ref))
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr.decode()
    n_chunks = _finished(ref)
    assert n_chunks == 6

    assert not (ref / store.LOCK).exists()

    # kill 1: before any chunk finished (the header is written, the program compiling)
    p = _cli(tmp_path, "run", str(spec), "--out", str(out))
    _kill_when(p, lambda: (out / store.HEADER).exists())
    assert _finished(out) == 0
    # the killed writer's lock file stays behind (stale); the next --resume takes it over
    assert json.loads((out / store.LOCK).read_text())["pid"] == p.pid
    killed = p.pid
    # kill 2: after the first chunk; kill 3: two chunks later
    p = _cli(tmp_path, "run", str(spec), "--out", str(out), "--resume")
    _kill_when(p, lambda: _finished(out) >= 1)
    err = p.stderr.read().decode()
    assert f"rnn-ntk: note: taking over the stale lock of {out} (pid {killed} on host" in err, err
    k2 = _finished(out)
    assert 1 <= k2 < n_chunks
    p = _cli(tmp_path, "run", str(spec), "--out", str(out), "--resume")
    _kill_when(p, lambda: _finished(out) >= k2 + 2)
    k3 = _finished(out)
    assert k2 + 2 <= k3 < n_chunks
    p = _cli(tmp_path, "run", str(spec), "--out", str(out), "--resume")
    stdout, stderr = p.communicate(timeout=300)
    assert p.returncode == 0, stderr.decode()
    assert f"({12 - 2 * k3} trained now, {2 * k3} finished before)" in stdout.decode()
    assert "taking over the stale lock" in stderr.decode()
    assert not (out / store.LOCK).exists()        # released at the end

    # no chunk lost or duplicated, no temp dirs left, and the same store as without kills
    runs = [tuple(r) for m in store.list_chunks(out) for r in m["runs"]]
    assert len(runs) == len(set(runs)) == 12
    assert not [q for q in (out / store.CHUNKS).iterdir() if q.name.startswith(".tmp")]
    a, b = store.load_results(out), store.load_results(ref)
    xr.testing.assert_identical(a, b)
    assert bool(a.ran.all()) and a.train_loss.notnull().all()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "rnn_ntk.cli", "demo", "--out", str(out)],
                       env=_env(tmp_path), capture_output=True, timeout=600)
    assert p.returncode == 0, p.stderr.decode()
    ds = store.load_results(out)
    assert ds.train_loss.dims == ("width", "trainable", "seed", "step") and bool(ds.ran.all())
    assert (out / "loss_curves.png").stat().st_size > 10000
