"""Result store: dense xarray layout, atomic chunks, resume refusal, consolidation, the writer
lock (no training)."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from rnn_ntk import store
from rnn_ntk.store import StoreError

AXES = {"width": [8, 16, 32], "lr": [0.1, 0.2], "seed": [0, 1]}
SPEC = {"model": {"width": [8, 16, 32], "input_dim": 2}, "train": {"lr": [0.1, 0.2], "steps": 4},
        "sweep": {"seed": [0, 1]}}


def _header(spec=SPEC):
    return {"spec": spec, "axes": AXES, "spec_toml": "# toml text", "name": "t",
            "versions": {"jax": "0.0-test", "python": "3.x"}, "n_runs": 12}


def _metrics(rng, R, n_logs, width):
    """Synthetic chunk: loss per log, a per-run scalar, a final parameter of each run's width."""
    M = max(width)
    b = rng.normal(size=(R, M))
    for r, m in enumerate(width):
        b[r, m:] = np.nan
    return ({"train_loss": rng.normal(size=(R, n_logs)),
             "diverged": rng.random((R, n_logs)) > 0.5,
             "array_width": np.full((R,), M, dtype=np.int64),
             "final_b": b},
            {"train_loss": ("step",), "diverged": ("step",), "array_width": (), "final_b": ("unit",)})


def _fill(tmp_path, rng):
    """Two chunks with different step grids (ragged) covering 6 of the 12 cells."""
    out = tmp_path / "out"
    store.open_store(out, _header(), resume=False)
    runs_a = [(8, 0.1, 0), (8, 0.1, 1), (16, 0.1, 0)]
    data_a, dims = _metrics(rng, 3, 3, [8, 8, 16])
    store.write_chunk(out, "a", runs_a, data_a, dims, steps=[0, 2, 4])
    runs_b = [(32, 0.2, 0), (32, 0.2, 1), (16, 0.2, 1)]
    data_b, dims = _metrics(rng, 3, 5, [32, 32, 16])
    store.write_chunk(out, "b", runs_b, data_b, dims, steps=[0, 1, 2, 3, 4])
    return out, [(runs_a, data_a, [0, 2, 4]), (runs_b, data_b, [0, 1, 2, 3, 4])]


def test_dense_layout_and_values(tmp_path):
    rng = np.random.default_rng(0)
    out, chunks = _fill(tmp_path, rng)
    ds = store.load_results(out)
    assert ds.train_loss.dims == ("width", "lr", "seed", "step")
    assert ds.final_b.dims == ("width", "lr", "seed", "unit")
    assert ds.sizes["unit"] == 32
    assert ds.width.values.tolist() == [8, 16, 32]
    assert ds.lr.values.tolist() == [0.1, 0.2]
    assert ds.step.values.tolist() == [0, 1, 2, 3, 4]
    ran = np.zeros((3, 2, 2), bool)
    for runs, data, steps in chunks:
        for r, (w, lr, s) in enumerate(runs):
            cell = ds.sel(width=w, lr=lr, seed=s)
            ran[AXES["width"].index(w), AXES["lr"].index(lr), s] = True
            np.testing.assert_array_equal(cell.train_loss.sel(step=steps).values, data["train_loss"][r])
            np.testing.assert_array_equal(cell.diverged.sel(step=steps).values, data["diverged"][r])
            other = sorted(set(range(5)) - set(steps))
            assert np.isnan(cell.train_loss.sel(step=other).values).all()
            assert not cell.diverged.sel(step=other).values.any()
            assert float(cell.array_width) == data["array_width"][r]
            b = cell.final_b.values
            np.testing.assert_array_equal(b[:w], data["final_b"][r, :w])
            assert np.isnan(b[w:]).all()
            assert bool(cell.ran)
    np.testing.assert_array_equal(ds.ran.values, ran)
    assert np.isnan(ds.train_loss.values[~ran]).all()
    assert ds.attrs["n_runs_done"] == 6 and ds.attrs["n_runs_planned"] == 12


def test_attrs_spec_and_versions(tmp_path):
    out, _ = _fill(tmp_path, np.random.default_rng(1))
    ds = store.load_results(out)
    text = json.dumps(SPEC, sort_keys=True, separators=(",", ":"))
    assert ds.attrs["spec_hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert json.loads(ds.attrs["spec_json"]) == SPEC
    assert ds.attrs["spec_toml"] == "# toml text"
    assert ds.attrs["version_jax"] == "0.0-test"
    assert json.loads(ds.attrs["versions"]) == {"jax": "0.0-test", "python": "3.x"}


def test_consolidate_roundtrip_and_staleness(tmp_path):
    rng = np.random.default_rng(2)
    out, _ = _fill(tmp_path, rng)
    mem = store.assemble(out)
    path = store.consolidate(out)
    assert path == out / store.RESULTS
    for opened in (store.load_results(out), store.load_results(path), xr.open_zarr(path)):
        xr.testing.assert_identical(opened.load(), mem)
    # a chunk finished after consolidation makes results.zarr stale: load_results sees it
    data, dims = _metrics(rng, 1, 3, [8])
    store.write_chunk(out, "c", [(8, 0.2, 0)], data, dims, steps=[0, 2, 4])
    ds = store.load_results(out)
    assert bool(ds.ran.sel(width=8, lr=0.2, seed=0))
    np.testing.assert_array_equal(ds.train_loss.sel(width=8, lr=0.2, seed=0, step=[0, 2, 4]).values,
                                  data["train_loss"][0])
    store.consolidate(out)  # replaces the old results.zarr
    xr.testing.assert_identical(store.load_results(out / store.RESULTS), ds)


def test_interrupted_write_leaves_no_chunk(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    out, _ = _fill(tmp_path, rng)
    before = store.assemble(out)
    data, dims = _metrics(rng, 1, 3, [8])

    def crash(*a, **k):
        raise KeyboardInterrupt("killed before rename")

    monkeypatch.setattr(store.os, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write_chunk(out, "late", [(8, 0.2, 1)], data, dims, steps=[0, 2, 4])
    monkeypatch.undo()
    assert any(p.name.startswith(".tmp-late") for p in (out / store.CHUNKS).iterdir())
    # a directory that somehow lacks its manifest does not count either
    (out / store.CHUNKS / "nomanifest").mkdir()
    assert [m["name"] for m in store.list_chunks(out)] == ["a", "b"]
    xr.testing.assert_identical(store.assemble(out), before)
    assert store.remove_partial(out) == 1
    assert not any(p.name.startswith(".tmp-") for p in (out / store.CHUNKS).iterdir())


def test_refusals(tmp_path):
    rng = np.random.default_rng(4)
    out, _ = _fill(tmp_path, rng)
    header_bytes = (out / store.HEADER).read_bytes()
    with pytest.raises(StoreError, match="not empty.*--resume"):
        store.open_store(out, _header(), resume=False)
    changed = json.loads(json.dumps(SPEC))
    changed["train"]["steps"] = 5
    changed["model"]["activation"] = "tanh"
    with pytest.raises(StoreError, match=r"changed: model\.activation, train\.steps"):
        store.open_store(out, _header(changed), resume=True)
    assert (out / store.HEADER).read_bytes() == header_bytes
    # same spec resumes and reports what is done
    h = store.open_store(out, _header(), resume=True)
    assert h["spec"] == SPEC
    assert store.done_runs(out) == {(8, 0.1, 0), (8, 0.1, 1), (16, 0.1, 0), (32, 0.2, 0),
                                    (32, 0.2, 1), (16, 0.2, 1)}
    data, dims = _metrics(rng, 1, 3, [8])
    with pytest.raises(StoreError, match="already exists"):
        store.write_chunk(out, "a", [(8, 0.2, 1)], data, dims, steps=[0, 2, 4])
    # the same run in two chunks is an error, never silently merged
    store.write_chunk(out, "dup", [(8, 0.1, 0)], data, dims, steps=[0, 2, 4])
    with pytest.raises(StoreError, match="in two chunks"):
        store.assemble(out)
    with pytest.raises(StoreError, match="shape"):
        store.write_chunk(out, "bad", [(8, 0.2, 1)], {"x": np.zeros((2, 3))}, {"x": ("step",)}, [0, 1, 2])
    with pytest.raises(StoreError, match="neither"):
        store.load_results(tmp_path)


def test_resume_of_missing_or_empty_dir_starts_fresh(tmp_path):
    out = tmp_path / "new"
    store.open_store(out, _header(), resume=True)
    assert store.read_header(out)["spec"] == SPEC
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("unrelated")
    with pytest.raises(StoreError, match="holds no sweep.json"):
        store.open_store(other, _header(), resume=True)


def test_spec_diff():
    a = {"m": {"w": 1, "x": [1, 2]}, "t": {"s": 3}}
    b = {"m": {"w": 1, "x": [1, 3]}, "t": {"s": 3, "new": 0}}
    assert store.spec_diff(a, b) == ["m.x", "t.new"]
    assert store.spec_diff(a, a) == []


# ---------------------------------------------------------------------------------------------
# the writer lock

REPO = Path(__file__).resolve().parents[1]


def test_lock_refuses_a_second_writer_and_is_released(tmp_path):
    out = tmp_path / "out"
    with store.lock_store(out) as lock:
        assert lock.note is None
        info = json.loads((out / store.LOCK).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        # a second writer (another open file description, even in this process) is refused,
        # with the holder named in one line
        with pytest.raises(StoreError) as e:
            store.lock_store(out)
        msg = str(e.value)
        assert "\n" not in msg and "in use by another rnn-ntk writer" in msg
        assert f"pid {os.getpid()} on host {socket.gethostname()}, started {info['started']}" in msg
        # the lock file does not make a new store's directory "not empty"
        store.open_store(out, _header(), resume=False)
    assert not (out / store.LOCK).exists()          # released after success
    with pytest.raises(ValueError, match="boom"):
        with store.lock_store(out):
            raise ValueError("boom")
    assert not (out / store.LOCK).exists()          # released after an exception
    with store.lock_store(out) as lock:             # and free again, with nothing stale
        assert lock.note is None
    # a directory the lock created is removed again when nothing was written into it
    with store.lock_store(tmp_path / "fresh"):
        pass
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="not a directory"):
        store.lock_store(tmp_path / "file")


HOLD = """
import sys, time
from rnn_ntk import store
lock = store.lock_store(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_lock_held_by_another_process_then_stale_after_sigkill(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=env, stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=f"another rnn-ntk writer \\(pid {p.pid} on host "):
            store.lock_store(out)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # the killed holder left its lock file behind; the kernel dropped its flock: stale, taken over
    assert json.loads((out / store.LOCK).read_text())["pid"] == p.pid
    with store.lock_store(out) as lock:
        assert f"stale lock of {out} (pid {p.pid} on host {socket.gethostname()}" in lock.note
        assert "that process is gone" in lock.note
        assert json.loads((out / store.LOCK).read_text())["pid"] == os.getpid()
    assert not (out / store.LOCK).exists()


# ---------------------------------------------------------------------------------------------
# shards: one lock each, the directory lock shared; race-free header and shard record


def test_shard_locks_exclude_plain_writers_and_each_other(tmp_path):
    out = tmp_path / "out"
    with store.lock_store(out, shard="shard-0-of-2"):
        info = json.loads(store.shard_lock_path(out, "shard-0-of-2").read_text())
        assert info["pid"] == os.getpid()
        with store.lock_store(out, shard="shard-1-of-2"):        # another shard runs alongside
            with pytest.raises(StoreError) as e:                 # a plain writer is refused
                store.lock_store(out)
            msg = str(e.value)
            assert "\n" not in msg and "in use by rnn-ntk shard(s) 0/2 (pid" in msg
            assert "1/2 (pid" in msg
            with pytest.raises(StoreError, match="in use by another rnn-ntk writer"):
                store.lock_store(out, shard="shard-1-of-2")      # the same shard twice
            assert store.lock_state(store.shard_lock_path(out, "shard-1-of-2"))[1] == "live"
        assert (out / store.LOCK).exists()                       # shard 0 still holds it
        with pytest.raises(StoreError, match="shard"):
            store.lock_store(out)
    assert not (out / store.LOCK).exists() and not list(out.glob(".rnn-ntk.lock*"))
    with store.lock_store(out):                                  # plain, then shards refused
        with pytest.raises(StoreError, match="plain \\(unsharded\\) rnn-ntk writer \\(pid"):
            store.lock_store(out, shard="shard-0-of-2")
        assert not store.shard_lock_path(out, "shard-0-of-2").exists()
    assert not out.exists()        # created by the first lock, nothing written, removed again


def test_shards_create_the_header_and_record_race_free(tmp_path):
    out = tmp_path / "out"
    n = 8
    barrier = threading.Barrier(n)
    results, errors = [None] * n, [None] * n

    def start(i):
        header = dict(_header(), created=f"by {i}")
        rec = {"count": 4, "spec_hash": store.spec_hash(SPEC), "chunks": [{"by": i}]}
        if i == n - 1:
            header = dict(_header(dict(SPEC, extra={"x": 1})), created=f"by {i}")  # other spec
            rec = dict(rec, count=5)
        barrier.wait()
        try:
            h = store.open_store(out, header, resume=False, shard=f"shard-{i}-of-4")
            results[i] = (h["created"], store.open_shards(out, rec)["chunks"][0]["by"])
        except StoreError as e:
            errors[i] = e

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    made = json.loads((out / store.HEADER).read_text())
    if made["spec"] == SPEC:       # a same-spec shard won the race: all the others agree
        ok = [r for r in results if r is not None]
        assert len(ok) == n - 1 and len(set(ok)) == 1 and ok[0][0] == made["created"]
        assert isinstance(errors[-1], store.StoreConflict) and "changed: extra.x" in str(errors[-1])
        assert ok[0][1] == json.loads((out / store.SHARDS).read_text())["chunks"][0]["by"]
    else:                          # the odd one won: every other shard is refused
        assert all(isinstance(e, store.StoreConflict) for e in errors[:-1])
        assert results[-1] is not None and results[-1][0] == made["created"] == f"by {n - 1}"
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    # N differing from the store's, and a shard that already wrote chunks without --resume
    if made["spec"] == SPEC:
        with pytest.raises(store.StoreConflict, match="split into 4 shards.*not 3"):
            store.check_store(out, SPEC, 3)
        store.check_store(out, SPEC, 4)
        data, dims = _metrics(np.random.default_rng(5), 1, 3, [8])
        store.write_chunk(out, "s0", [(8, 0.1, 0)], data, dims, [0, 2, 4],
                          info={"shard": "shard-0-of-4"}, writer="shard-0-of-4")
        with pytest.raises(StoreError, match="shard-0-of-4 has already written chunks.*--resume"):
            store.open_store(out, _header(), resume=False, shard="shard-0-of-4")
        store.open_store(out, _header(), resume=True, shard="shard-0-of-4")


def test_a_shard_removes_only_its_own_partial_writes(tmp_path):
    out, _ = _fill(tmp_path, np.random.default_rng(6))
    data, dims = _metrics(np.random.default_rng(7), 1, 3, [8])

    def crash(*a, **k):
        raise KeyboardInterrupt("killed before rename")

    for writer in ("shard-0-of-2", "shard-1-of-2"):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store.os, "rename", crash)
            with pytest.raises(KeyboardInterrupt):
                store.write_chunk(out, f"late-{writer}", [(8, 0.2, 1)], data, dims, [0, 2, 4],
                                  writer=writer)
    tmp = sorted(p.name for p in (out / store.CHUNKS).iterdir() if p.name.startswith(".tmp"))
    assert len(tmp) == 2 and all(t.startswith(".tmp-shard-") for t in tmp)
    assert store.remove_partial(out, writer="shard-0-of-2") == 1
    left = [p.name for p in (out / store.CHUNKS).iterdir() if p.name.startswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".tmp-shard-1-of-2-late-shard-1-of-2")
    assert [m["name"] for m in store.list_chunks(out)] == ["a", "b"]


def test_empty_store_loads_with_nothing_ran(tmp_path):
    out = tmp_path / "out"
    store.open_store(out, _header(), resume=False)
    ds = store.load_results(out)
    assert ds.ran.dims == ("width", "lr", "seed") and not ds.ran.values.any()
    assert ds.attrs["n_runs_done"] == 0 and ds.attrs["n_runs_planned"] == 12
