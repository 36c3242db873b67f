"""Scheduler shards (rnn_ntk.sweep.shard, ``rnn-ntk run --shard I/N``, ``rnn-ntk status``): the
chunk assignment (deterministic, disjoint, covering, balanced against a brute-force optimum),
bad --shard inputs and mismatched stores (exit 2, nothing written), status of a partial store,
and two shards as concurrent processes into one store, one SIGKILLed mid-chunk and resumed,
giving the store of a one-process run bit for bit."""
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rnn_ntk import store, sweep
from rnn_ntk.cli import main
from rnn_ntk.sweep.shard import (Shard, assignment, balance, format_status, parse_shard,
                                 shard_plan, store_status)
from sweep_helpers import parse

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# the assignment (pure; nothing trains)


def _brute_force_makespan(costs, n):
    """The optimal largest shard total, by trying every assignment."""
    best = float("inf")
    for owner in itertools.product(range(n), repeat=len(costs)):
        loads = [0.0] * n
        for c, s in zip(costs, owner):
            loads[s] += c
        best = min(best, max(loads))
    return best


def test_balance_is_deterministic_and_within_the_lpt_bounds():
    rng = np.random.default_rng(0)
    for trial in range(30):
        k, n = int(rng.integers(1, 9)), int(rng.integers(1, 4))
        costs = rng.choice([0.5, 1.0, 2.0, 3.5], size=k) if trial % 2 else rng.exponential(size=k)
        owner = balance(costs, n)
        assert owner == balance(list(costs), n)                 # deterministic
        assert len(owner) == k and set(owner) <= set(range(n))  # every item on one shard
        loads = [sum(c for c, s in zip(costs, owner) if s == j) for j in range(n)]
        opt = _brute_force_makespan(costs, n)
        assert max(loads) <= 4 / 3 * opt + 1e-12                # Graham's LPT bound
        assert max(loads) - min(loads) <= max(costs) + 1e-12    # spread: at most one item
    # ties: equal costs are dealt round-robin in index order
    assert balance([1.0] * 5, 2) == [0, 1, 0, 1, 0]
    with pytest.raises(ValueError):
        balance([1.0], 0)


def test_assignment_partitions_the_plans_runs_on_every_shard_count():
    spec = parse(model="width = [4, 8, 16]", train="lr = [0.1, 0.2, 0.3]",
                 sweep_="seeds = 5\npack_widths = false\nchunk_size = 4")
    plan = sweep.make_plan(spec)
    assert len(plan.chunks) >= 9 and len(plan.programs) == 3
    for n in (1, 2, 3, 7, 20):
        rec = assignment(plan, n)
        again = assignment(sweep.make_plan(spec), n)
        assert rec == again                                     # same on every call / host
        json.dumps(rec)                                         # JSON-able
        mine = [shard_plan(plan, rec, Shard(i, n)) for i in range(n)]
        runs = [r for p in mine for c in p.chunks for r in c.runs]
        assert sorted(runs) == list(range(len(plan.runs)))      # disjoint and covering
        assert sorted(c.name for p in mine for c in p.chunks) == sorted(c.name for c in plan.chunks)
        for p in mine:     # each shard's chunks are chunks of the full plan, lanes unchanged
            full = {c.name: c for c in plan.chunks}
            assert all(full[c.name] == c for c in p.chunks)
        cost = {c.name: sweep.chunk_cost(plan, c) for c in plan.chunks}
        loads = [sum(cost[c.name] for c in p.chunks) for p in mine]
        assert max(loads) - min(loads) <= max(cost.values()) + 1e-12
    # finished runs are skipped, and a chunk partly done keeps its lanes under a new name
    rec = assignment(plan, 2)
    first = shard_plan(plan, rec, Shard(0, 2)).chunks[0]
    done = {plan.runs[first.runs[0]].coords}
    part = shard_plan(plan, rec, Shard(0, 2), done)
    assert part.n_done == 1 and part.chunks[0].runs == first.runs[1:]
    assert part.chunks[0].size == first.size and part.chunks[0].name != first.name
    # a record that does not fit the plan is refused
    other = assignment(sweep.make_plan(parse(model="width = [4, 8, 16]", train="lr = [0.1, 0.5, 0.3]",
                                             sweep_="seeds = 5\npack_widths = false\nchunk_size = 4")), 2)
    with pytest.raises(store.StoreConflict, match="does not match this plan"):
        shard_plan(plan, other, Shard(0, 2))


@pytest.mark.parametrize("text", ["2/2", "3/2", "-1/2", "0/0", "a/b", "1", "1/2/3", "", "1.0/2"])
def test_bad_shard_strings_are_one_line_errors(text):
    with pytest.raises(ValueError) as e:
        parse_shard(text)
    assert "\n" not in str(e.value) and str(e.value).startswith("--shard")
    assert parse_shard(" 1 / 3 ") == Shard(1, 3) and str(Shard(1, 3)) == "1/3"
    assert parse_shard((0, 1)).label == "shard-0-of-1"


# ---------------------------------------------------------------------------------------------
# the CLI refuses before any compute

TINY = """
name = "sh"
[model]
width = 8
[task]
kind = "random_labels"
n_train = 8
n_test = 4
length = 5
input_dim = 3
[train]
steps = 2000
log_every = 500
lr = [0.2, 0.4]
dtype = "float64"
[sweep]
seeds = 4
chunk_size = 2
"""


def _files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.exists() else None


def _sharded_store(out, spec, n):
    """A store as the first of n shards leaves it before training (no compute)."""
    plan = sweep.make_plan(spec)
    store.open_store(out, plan.header(), resume=False, shard=f"shard-0-of-{n}")
    store.open_shards(out, assignment(plan, n))
    return plan


def test_bad_shard_arguments_and_mismatched_stores_exit_2_with_nothing_written(tmp_path, capsys):
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(TINY)
    out = tmp_path / "out"
    for bad in ("2/2", "x/2", "1/2/3", "-1/2"):
        assert main(["run", str(spec_path), "--out", str(out), f"--shard={bad}"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("rnn-ntk: error: --shard"), err
        assert not out.exists()
    _sharded_store(out, sweep.parse_spec(TINY, "<t>"), 2)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["run", str(spec_path), "--out", str(out), "--shard", "0/3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "split into 2 shards" in err and "I/2" in err, err
    changed = tmp_path / "changed.toml"
    changed.write_text(TINY.replace("lr = [0.2, 0.4]", "lr = [0.2, 0.5]"))
    for extra in ([], ["--resume"]):
        assert main(["run", str(changed), "--out", str(out), "--shard", "1/2", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "(changed: train.lr)" in err, err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


# ---------------------------------------------------------------------------------------------
# status of a partial store, without training


def _chunk(out, plan, unit, seconds, shard):
    p = plan.programs[unit["program"]]
    sel = p.runs[unit["start"]:unit["stop"]]
    R = len(sel)
    store.write_chunk(out, unit["name"], [plan.runs[i].coords for i in sel],
                      {"train_loss": np.arange(R * 5, dtype=float).reshape(R, 5)},
                      {"train_loss": ("step",)}, steps=[0, 500, 1000, 1500, 2000],
                      info={"seconds": seconds, "shard": shard})
    return sel


def test_status_and_load_results_of_a_partial_sharded_store(tmp_path):
    spec = sweep.parse_spec(TINY.replace("seeds = 4", "seeds = 6"), "<t>")
    out = tmp_path / "out"
    plan = _sharded_store(out, spec, 3)
    rec = store.read_shards(out)
    units = rec["chunks"]
    assert len(units) == 6 and [u["shard"] for u in units] == [0, 1, 2, 0, 1, 2]
    # shard 0: both chunks in (done); shard 1: one in, and a live holder (this process);
    # shard 2: nothing in, its lock left by a dead process (failed)
    written = {}
    for u, s in ((units[0], 2.0), (units[3], 3.0), (units[1], 4.0)):
        written[u["name"]] = _chunk(out, plan, u, s, f"shard-{u['shard']}-of-3")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.shard_lock_path(out, "shard-2-of-3").write_text(
        json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "then"}))
    with store.lock_store(out, shard="shard-1-of-3"):
        st = store_status(out)
        text = format_status(st)
    by = {s["shard"]: s for s in st["shards"]}
    assert st["runs_done"] == 6 and st["n_runs"] == 12 and st["chunks_done"] == 3
    assert (by["0/3"]["state"], by["0/3"]["done"], by["0/3"]["pending"]) == ("done", 2, 0)
    assert (by["1/3"]["state"], by["1/3"]["done"], by["1/3"]["running"],
            by["1/3"]["pending"]) == ("running", 1, 1, 0)
    assert by["1/3"]["pid"] == os.getpid()
    assert (by["2/3"]["state"], by["2/3"]["failed"], by["2/3"]["pending"]) == ("failed", 1, 1)
    # time left: each shard's remaining estimated cost scaled by measured / estimated seconds
    cost = {u["name"]: u["cost"] for u in units}
    factor = (2.0 + 3.0 + 4.0) / sum(cost[n] for n in written)
    assert by["1/3"]["left_s"] == pytest.approx(factor * cost[units[4]["name"]])
    assert by["2/3"]["left_s"] == pytest.approx(factor * (cost[units[2]["name"]]
                                                          + cost[units[5]["name"]]))
    assert st["left_s"] == pytest.approx(by["2/3"]["left_s"]) and st["calibrated"]
    assert "6/12 runs finished (50%)" in text and "not running: 2/3" in text
    assert "running" in text and "failed" in text
    # load_results reads the partial store: NaN and ran False where nothing ran yet
    ds = store.load_results(out)
    assert int(ds.ran.sum()) == 6
    for name, sel in written.items():
        for k, i in enumerate(sel):
            cell = dict(zip(ds.ran.dims, plan.runs[i].coords))
            assert bool(ds.ran.sel(cell))
            np.testing.assert_array_equal(ds.train_loss.sel(cell).values, np.arange(5.0) + 5 * k)
    assert np.isnan(ds.train_loss.values[~ds.ran.values]).all()
    assert ds.attrs["n_runs_done"] == 6 and ds.attrs["n_runs_planned"] == 12
    # no consolidation before the store is complete
    assert store.consolidate_if_complete(out) is None and not (out / store.RESULTS).exists()


# ---------------------------------------------------------------------------------------------
# two shards as concurrent processes, one killed mid-chunk and resumed


def _env(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_NUM_CPU_DEVICES"] = "2"          # as in this test process (conftest)
    return env


def _shard(tmp_path, spec, out, which, *extra):
    return subprocess.Popen([sys.executable, "-m", "rnn_ntk.cli", "run", str(spec), "--out",
                             str(out), "--shard", which, *extra], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)


def _chunks_of(out, label):
    return [m for m in store.list_chunks(out) if m["info"].get("shard") == label]


def test_two_concurrent_shards_one_killed_and_resumed_equal_one_process(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(TINY)
    out = tmp_path / "out"
    # the reference: one process running the whole spec (this one; it fills the session's compile
    # cache, tests/conftest.py, from which the shard processes load the program)
    ref = sweep.run_sweep(sweep.parse_spec(TINY, str(spec)), tmp_path / "ref")
    assert ref.n_runs == 8
    a = _shard(tmp_path, spec, out, "0/2")
    b = _shard(tmp_path, spec, out, "1/2")
    try:
        t0 = time.time()
        while not _chunks_of(out, "shard-0-of-2"):      # kill shard 0 inside its second chunk
            assert a.poll() is None, a.communicate()
            assert time.time() - t0 < 300, "shard 0 never wrote a chunk"
            time.sleep(0.002)
        a.send_signal(signal.SIGKILL)
        a.wait()
        assert len(_chunks_of(out, "shard-0-of-2")) == 1
        st = {s["shard"]: s for s in store_status(out)["shards"]}
        assert st["0/2"]["state"] == "failed" and st["0/2"]["pid"] == a.pid
        assert st["1/2"]["state"] in ("running", "done")
        _, err = b.communicate(timeout=300)
        assert b.returncode == 0, err.decode()
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    # the partial store: shard 1 complete, shard 0 half; status and load_results read it
    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "6/8 runs finished" in text and "failed" in text and "estimated time left" in text
    part = store.load_results(out)
    assert int(part.ran.sum()) == 6 and not (out / store.RESULTS).exists()
    # resumed: the rest only, then the store is consolidated
    r = _shard(tmp_path, spec, out, "0/2", "--resume")
    stdout, stderr = r.communicate(timeout=300)
    assert r.returncode == 0, stderr.decode()
    assert "(2 trained now, 2 finished before)" in stdout.decode()
    assert "taking over the stale lock" in stderr.decode()
    assert (out / store.RESULTS).is_dir()
    assert [q.name for q in out.iterdir() if q.name.startswith(store.LOCK)] == [
        f"{store.LOCK}.consolidate"]                      # every writer lock released
    assert not [q for q in (out / store.CHUNKS).iterdir() if q.name.startswith(".tmp")]
    assert "8/8 runs finished" in format_status(store_status(out))
    # the same store as one process running the whole spec (same values, bit for bit)
    got, want = store.load_results(out), store.load_results(tmp_path / "ref")
    xr.testing.assert_identical(got, want)
    np.testing.assert_array_equal(got.train_loss.where(part.ran).values,
                                  part.train_loss.values)    # the partial store's cells
