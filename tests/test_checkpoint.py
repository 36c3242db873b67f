"""Mid-run checkpoints (``[train] checkpoint_every``): segments, orbax saves, resume, cleanup.

One tiny program shape for the whole module (a module's compiled programs are shared by its
tests): minibatch SGD with momentum and the linearised model, so every part of the lane state
(parameters, optimiser traces, the linearised model, the epoch order) crosses a checkpoint.
The reference is the same sweep without checkpoint_every, run by the single-program path.
"""
import json

import numpy as np
import pytest

from rnn_ntk import checkpoint as ckpt_lib
from rnn_ntk import lanes, store, sweep, train
from rnn_ntk.sweep.execute import adopt_checkpoints
from train_helpers import _assert_records_equal, _assert_records_same_arithmetic, xla_default_env

SPEC = """
[model]
width = 4
activation = "relu"
[task]
kind = "random_labels"
n_train = 6
n_test = 4
length = 4
input_dim = 3
[train]
steps = 12
log_every = 2
batch_size = 4
optimizer = "momentum"
linearized = true
save_params = true
lr = [0.1, 0.3]
{extra}
[sweep]
seeds = {seeds}
{sweep}
"""


def spec(extra="", seeds=2, sweep_=""):
    return sweep.parse_spec(SPEC.format(extra=extra, seeds=seeds, sweep=sweep_), "<test>")


# ---------------------------------------------------------------------------------------------
# the spec field and the segment arithmetic (nothing compiled)

@pytest.mark.parametrize("value, problem", [
    ("-1", "must be an integer >= 0, got -1"), ("2.5", "must be an integer, got 2.5"),
    ('"10"', "must be an integer, got '10'"), ("true", "must be an integer, got True")])
def test_a_bad_checkpoint_every_is_a_one_line_spec_error(value, problem):
    with pytest.raises(sweep.SpecError) as e:
        spec(extra=f"checkpoint_every = {value}")
    assert e.value.problems == [f"train.checkpoint_every: {problem}"]


@pytest.mark.parametrize("steps, log_every, K", [(12, 2, 2), (12, 2, 5), (12, 2, 8), (30, 3, 7),
                                                 (12, 2, 11), (12, 2, 12), (12, 2, 0)])
def test_segments_cover_every_log_once_and_end_on_multiples_of_their_length(steps, log_every, K):
    cfg = _cfg().replace(steps=steps, log_every=log_every, checkpoint_every=K)
    L = train.segment_logs(cfg)
    n_logs = steps // log_every + 1
    want_L = -(-K // log_every)
    if K == 0 or want_L * log_every >= steps:          # no checkpoint would fall before the end
        assert L == 0
        with pytest.raises(train.ConfigError, match="no segments"):
            train.segment_starts(cfg)
        return
    assert L == want_L
    covered = [k for k0 in train.segment_starts(cfg) for k in range(k0, k0 + L)
               if 0 <= k < n_logs]
    assert covered == list(range(n_logs))               # each log once, in order
    ends = [k0 + L - 1 for k0 in train.segment_starts(cfg)]
    assert ends[0] == 0 and all(e * log_every % (L * log_every) == 0 for e in ends)
    assert ends[-2] < n_logs - 1 <= ends[-1]            # the last segment holds the last log


def _cfg():
    return sweep.make_plan(spec()).programs[0].cfg


# ---------------------------------------------------------------------------------------------
# the checkpoint files (orbax, tiny arrays; nothing compiled)

def _tree(x):
    import jax
    return ({"state": {"a": jax.numpy.full((2, 3), x, np.float32), "b": np.arange(2) + x},
             "records": {"loss": np.full((2, 4), x, np.float64)}})


def _like():
    import jax
    t = _tree(0)
    return {"state": jax.tree.map(lambda a: jax.ShapeDtypeStruct(
        a.shape, a.dtype, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])),
        t["state"]), "records": t["records"]}


def test_the_last_two_checkpoints_are_kept_and_another_chunks_are_refused(tmp_path):
    d = ckpt_lib.checkpoint_dir(tmp_path, "p000-abc")
    ck = ckpt_lib.ChunkCheckpoint(d, {"chunk": "p000-abc", "spec_hash": "h1"})
    assert ck.restore(_like(), {"lanes": 2}) is None    # nothing saved yet
    for step in (3, 6, 9, 12):
        ck.save(step, _tree(step), {"lanes": 2, "segment": step // 3})
    ck.close()
    assert sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) == [9, 12]
    assert json.loads((d / "chunk.json").read_text())["chunk"] == "p000-abc"
    meta, tree = ckpt_lib.ChunkCheckpoint(d, {"chunk": "p000-abc", "spec_hash": "h1"}).restore(
        _like(), {"lanes": 2})
    assert meta["segment"] == 4 and meta["step"] == 12
    np.testing.assert_array_equal(np.asarray(tree["state"]["a"]), np.full((2, 3), 12, np.float32))
    np.testing.assert_array_equal(tree["records"]["loss"], np.full((2, 4), 12.0))
    for identity, meta, what in [({"chunk": "p000-abc", "spec_hash": "h2"}, {"lanes": 2},
                                  "spec_hash"),
                                 ({"chunk": "p000-xyz", "spec_hash": "h1"}, {"lanes": 2}, "chunk"),
                                 ({"chunk": "p000-abc", "spec_hash": "h1"}, {"lanes": 4}, "lanes")]:
        with pytest.raises(ckpt_lib.CheckpointError) as e:
            ckpt_lib.ChunkCheckpoint(d, identity).restore(_like(), meta)
        msg = str(e.value)
        assert "\n" not in msg and f"differs: {what})" in msg and isinstance(e.value,
                                                                         store.StoreError)


def test_a_resumed_plan_keeps_the_chunk_that_holds_a_checkpoint(tmp_path):
    s = spec(seeds=5, sweep_="chunk_size = 4")
    first = sweep.make_plan(s)                          # 10 runs: chunks of 4, 4, 2 lanes
    assert [len(c.runs) for c in first.chunks] == [4, 4, 2]
    c0, c1 = first.chunks[:2]
    done = [first.runs[i].coords for i in c0.runs]      # chunk 0 written, chunk 1 checkpointed
    resumed = sweep.make_plan(s, done=done)
    assert c1.name not in {c.name for c in resumed.chunks}   # the replan cuts the runs anew
    d = ckpt_lib.checkpoint_dir(tmp_path, c1.name)
    (d / "8").mkdir(parents=True)
    identity = {"spec_hash": store.spec_hash(s.resolved), "chunk": c1.name, "program": "p000",
                "runs": list(c1.runs), "size": c1.size}
    (d / "chunk.json").write_text(json.dumps(identity))
    other = ckpt_lib.checkpoint_dir(tmp_path, "p000-other")    # another spec's: left alone
    (other / "4").mkdir(parents=True)
    (other / "chunk.json").write_text(json.dumps(dict(identity, chunk="p000-other",
                                                      spec_hash="0" * 64)))
    plan = adopt_checkpoints(resumed, tmp_path)
    assert plan.chunks[0] == c1
    todo = sorted(i for c in plan.chunks for i in c.runs)
    assert todo == sorted(i for c in resumed.chunks for i in c.runs)     # each run once
    assert all(len(c.runs) <= resumed.programs[0].chunk_lanes for c in plan.chunks)
    assert adopt_checkpoints(first, tmp_path).chunks == first.chunks     # same cut: as planned
    assert other.exists()


# ---------------------------------------------------------------------------------------------
# checkpointed sweeps: bitwise equal to the single program, resumed from the last checkpoint

class Interrupted(Exception):
    pass


def _data(out):
    ds = store.load_results(out)
    return {k: ds[k].values for k in ds.data_vars}


def _assert_same_records(got, want, exact=False):
    """A checkpointed sweep (the segment program) against the single program: same variables and
    dtypes, values bit for bit at XLA's default optimisation (8 ulps at the suite's fast-compile
    level, where the two programs may round apart: train_helpers); ``exact``: bit for bit always
    (both stores made by processes at XLA's defaults)."""
    assert set(got) == set(want)
    assert all(got[k].dtype == want[k].dtype for k in want)
    (_assert_records_equal if exact else _assert_records_same_arithmetic)(got, want)


def test_interrupted_checkpointed_sweep_resumes_from_its_last_checkpoint_bit_for_bit(
        tmp_path, monkeypatch):
    ref_out, out = tmp_path / "plain", tmp_path / "ckpt"
    sweep.run_sweep(spec(), ref_out)                    # the single program, no checkpoints
    want = _data(ref_out)

    s = spec(extra="checkpoint_every = 2")              # segments of 1 log: 7 segments
    cfg = sweep.make_plan(s).programs[0].cfg
    starts = train.segment_starts(cfg)
    assert len(starts) == 7
    saves, real_save = [], ckpt_lib.ChunkCheckpoint.save

    def save_then_die(self, step, tree, meta):          # dies after its third checkpoint
        real_save(self, step, tree, meta)
        saves.append(step)
        if len(saves) == 3:
            self.wait()
            raise Interrupted

    monkeypatch.setattr(ckpt_lib.ChunkCheckpoint, "save", save_then_die)
    with pytest.raises(Interrupted):
        sweep.run_sweep(s, out)
    monkeypatch.undo()
    assert saves == [2, 4, 6]
    (d,) = (out / ckpt_lib.CHECKPOINTS).iterdir()
    assert sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) == [4, 6]
    assert not store.list_chunks(out)

    k0s, real_fn = [], lanes._segment_fn

    def counting_fn(*a, **kw):                          # counts the segment program's calls
        fn = real_fn(*a, **kw)

        def call(k0, *args):
            if isinstance(k0, np.ndarray):              # not the shape-only trace
                k0s.append(int(k0))
            return fn(k0, *args)
        return call

    monkeypatch.setattr(lanes, "_segment_fn", counting_fn)
    steps = []
    summary = sweep.run_sweep(s, out, resume=True, on_step=steps.append)
    assert k0s == starts[4:]                            # after the checkpoint at step 6 only
    assert summary.n_trained == 4 and sum(steps) == 4 * 12
    assert not any((out / ckpt_lib.CHECKPOINTS).iterdir())    # deleted once written
    _assert_same_records(_data(out), want)

    k0s.clear()                                         # uninterrupted: every segment, same bits
    sweep.run_sweep(s, tmp_path / "again")
    assert k0s == starts
    _assert_same_records(_data(tmp_path / "again"), want)


@pytest.mark.slow
def test_sigkilled_cli_run_resumes_from_its_checkpoint_to_the_same_store(tmp_path):
    """The CLI killed (SIGKILL) once a checkpoint is on disk, then --resume: the store's data
    equal the single program's bit for bit, and no checkpoint is left. Every run here is a CLI
    process at XLA's default optimisation (a bit-for-bit check across programs; 4000 steps with a
    diverging lane amplify any rounding difference)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    text = SPEC.format(extra="checkpoint_every = 200", seeds=2, sweep="").replace(
        "steps = 12\nlog_every = 2", "steps = 4000\nlog_every = 100")
    (tmp_path / "spec.toml").write_text(text)
    (tmp_path / "ref.toml").write_text(text.replace("checkpoint_every = 200", ""))
    env = xla_default_env(dict(os.environ, JAX_PLATFORMS="cpu",
                               PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep
                               + os.environ.get("PYTHONPATH", "")))
    out = tmp_path / "out"

    def cli(*extra, spec="spec.toml", dest=out):
        return subprocess.Popen([sys.executable, "-m", "rnn_ntk.cli", "run", spec,
                                 "--out", str(dest), *extra], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def saved():
        base = out / ckpt_lib.CHECKPOINTS
        return [p for d in base.iterdir() for p in d.iterdir()
                if p.name.isdigit()] if base.is_dir() else []

    proc, t0 = cli(), time.time()
    while not saved():
        assert proc.poll() is None, f"finished before a checkpoint: {proc.communicate()}"
        assert time.time() - t0 < 600, "no checkpoint written"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not store.list_chunks(out) and saved()
    proc = cli("--resume")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert not any((out / ckpt_lib.CHECKPOINTS).iterdir())
    ref = tmp_path / "ref"
    proc = cli(spec="ref.toml", dest=ref)                # the single program, no checkpoints
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    _assert_same_records(_data(out), _data(ref), exact=True)
