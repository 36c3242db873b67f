"""``rnn-ntk run --distributed``: one sweep over several JAX processes (2 local CPU processes,
gloo collectives), checked against a one-process run of the same spec; spec agreement; start-up
that cannot reach its coordinator. Plus the one-process behaviour of rnn_ntk.distributed."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnn_ntk import distributed, load_results, store

REPO = Path(__file__).resolve().parents[2]

SPEC = """
name = "dist"
[model]
width = 4
[task]
kind = "random_labels"
n_train = 6
n_test = 4
length = 4
input_dim = 3
[train]
steps = 4
log_every = 2
lr = [{lrs}]
[sweep]
seeds = 2
chunk_size = 2
"""


def _spec(tmp_path, name="spec.toml", lrs="0.1, 0.2"):
    path = tmp_path / name
    path.write_text(SPEC.format(lrs=lrs))
    return path


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path, devices, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_NUM_CPU_DEVICES"] = str(devices)
    env["RNN_NTK_DIST_TIMEOUT"] = "90"    # a broken test fails instead of hanging
    env.update(extra)
    return env


def _cli(tmp_path, args, env):
    return subprocess.Popen([sys.executable, "-m", "rnn_ntk.cli", "run", *map(str, args)],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _pair(tmp_path, specs, outs, *flags):
    """Processes 0 and 1 of a 2-process run (one CPU device each) on a free local port."""
    addr = f"127.0.0.1:{_free_port()}"
    return [_cli(tmp_path, [specs[i], "--out", outs[i], "--distributed", "--coordinator", addr,
                            "--num-processes", 2, "--process-id", i, *flags], _env(tmp_path, 1))
            for i in range(2)]


def _wait(procs, timeout=400):
    """(returncode, stdout, stderr) of each process; kills them all (by pid) past the timeout."""
    t_end, out = time.time() + timeout, []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, t_end - time.time()))
            out.append((p.returncode, o, e))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"processes still running after {timeout} s")
    return out


def _assert_same_store(a_dir, b_dir):
    a, b = load_results(a_dir), load_results(b_dir)
    assert set(a.data_vars) == set(b.data_vars) and "train_loss" in a
    assert dict(a.sizes) == dict(b.sizes)
    for v in a.data_vars:
        x, y = a[v].values, b[v].values
        assert x.dtype == y.dtype, v
        eq = np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        assert eq, f"{v} differs: {x} vs {y}"   # bit for bit: the same per-device program
    assert bool(a["ran"].all())
    assert np.isfinite(a["train_loss"].values).all()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A one-process run (2 CPU devices) and a 2-process run (1 device each) of the same spec,
    all three processes at once; process 1 is given its own --out, which it must never touch."""
    tmp_path = tmp_path_factory.mktemp("dist")
    spec = _spec(tmp_path)
    ref, out, unused = tmp_path / "ref", tmp_path / "out", tmp_path / "not-written"
    one = _cli(tmp_path, [spec, "--out", ref], _env(tmp_path, 2))
    pair = _pair(tmp_path, [spec, spec], [out, unused])
    return tmp_path, spec, ref, out, unused, _wait([one, *pair])


def test_two_processes_write_the_store_of_one_process(runs):
    """Bit for bit: each lane runs the same single-run program (lax.map on one CPU device) in
    both runs; only the mesh's devices belong to two processes instead of one."""
    _, _, ref, out, unused, [(rc_ref, _, e_ref), (rc0, o0, e0), (rc1, o1, e1)] = runs
    assert rc_ref == 0, e_ref
    assert (rc0, rc1) == (0, 0), (e0, e1)
    assert "4 runs in the store (4 trained now, 0 finished before)" in o0
    assert "runs in the store" not in o1       # process 1 neither writes nor reports
    assert not unused.exists()
    assert len(store.list_chunks(out)) == 2
    _assert_same_store(ref, out)


@pytest.mark.slow   # a second 2-process run (~20 CPU-s per process, like the first)
def test_distributed_resume_retrains_only_the_lost_chunk(runs):
    tmp_path, spec, ref, out, unused, done = runs
    assert [rc for rc, _, _ in done] == [0, 0, 0]
    lost = sorted((out / store.CHUNKS).iterdir())[0]
    shutil.rmtree(lost)
    (rc0, o0, e0), (rc1, _, e1) = _wait(_pair(tmp_path, [spec, spec], [out, unused],
                                              "--resume"))
    assert (rc0, rc1) == (0, 0), (e0, e1)
    assert "4 runs in the store (2 trained now, 2 finished before)" in o0
    assert lost.is_dir() and not unused.exists()
    _assert_same_store(ref, out)


def test_a_different_spec_on_one_process_exits_2_on_both(tmp_path):
    spec, other = _spec(tmp_path), _spec(tmp_path, "other.toml", lrs="0.1, 0.3")
    out = tmp_path / "out"
    results = _wait(_pair(tmp_path, [spec, other], [out, out]), timeout=200)
    for rc, _, err in results:
        assert rc == 2, err
        line = [x for x in err.splitlines() if "error" in x]
        assert len(line) == 1 and "spec.train.lr" in line[0] and "process 1 of 2" in line[0], err
    assert not out.exists()                    # nothing written, no compute


def test_unreachable_coordinator_exits_quickly_with_one_line(tmp_path):
    port = _free_port()                        # nobody listens there
    env = _env(tmp_path, 1, RNN_NTK_DIST_TIMEOUT="3")
    t0 = time.time()
    p = _cli(tmp_path, [_spec(tmp_path), "--out", tmp_path / "out", "--distributed",
                        "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                        "--process-id", 1], env)
    [(rc, _, err)] = _wait([p], timeout=100)
    wall = time.time() - t0
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "could not join the cluster" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "within 3 s" in lines[0]
    assert wall < 60, wall                     # 3 s after start-up (imports), far below JAX's own
    assert not (tmp_path / "out").exists()


def test_no_cluster_and_no_settings_exit_1_with_one_line(tmp_path):
    env = {k: v for k, v in _env(tmp_path, 1).items()
           if not k.startswith(("SLURM_", "OMPI_", "PMI_", "TPU_", "RNN_NTK_"))}
    p = _cli(tmp_path, [_spec(tmp_path), "--out", tmp_path / "out", "--distributed"], env)
    [(rc, _, err)] = _wait([p], timeout=100)
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "no cluster detected" in lines[0], err
    assert "--coordinator" in lines[0] and "RNN_NTK_COORDINATOR" in lines[0]


# ---------------------------------------------------------------------------------------------
# one process (no cluster): settings are checked before anything starts


def test_initialize_after_jax_started_is_refused():
    import jax
    jax.devices()                              # the backend runs: too late for jax.distributed
    with pytest.raises(distributed.DistributedError, match="first JAX call"):
        distributed.initialize("127.0.0.1:1", 2, 0, timeout_s=5)
    assert distributed.process_count() == 1


@pytest.mark.parametrize("kw, match", [
    (dict(coordinator="localhost"), "HOST:PORT"),
    (dict(coordinator="localhost:0"), "HOST:PORT"),
    (dict(coordinator="h:1", num_processes=0, process_id=0), "num_processes"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), r"process_id must be in \[0, 2\)"),
    (dict(coordinator="h:1", num_processes=2, process_id=-1), "process_id"),
    (dict(coordinator="h:1", num_processes=2, process_id=0, timeout_s=0), "timeout_s"),
])
def test_bad_settings_are_refused_before_start(kw, match):
    with pytest.raises(distributed.DistributedError, match=match):
        distributed.initialize(**kw)


def test_environment_settings_are_read_and_checked(monkeypatch):
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "two")
    with pytest.raises(distributed.DistributedError, match="RNN_NTK_NUM_PROCESSES='two'"):
        distributed.initialize()
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "5")
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "h:1")
    with pytest.raises(distributed.DistributedError, match=r"in \[0, 2\), got 5"):
        distributed.initialize()
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "0")
    monkeypatch.setenv(distributed.ENV_TIMEOUT, "soon")
    with pytest.raises(distributed.DistributedError, match="RNN_NTK_DIST_TIMEOUT='soon'"):
        distributed.initialize()


def test_one_process_collectives_are_local():
    assert distributed.process_count() == 1 and distributed.is_writer()
    assert distributed.allgather_bytes(b"abc") == [b"abc"]
    assert distributed.broadcast_json({"a": (1, 2)}) == {"a": [1, 2]}
    distributed.agree({"spec": {"x": 1}})
    assert distributed.from_writer(lambda: 7) == 7


def test_cli_refuses_process_flags_without_distributed(tmp_path, capsys):
    from rnn_ntk import cli
    code = cli.main(["run", str(_spec(tmp_path)), "--out", str(tmp_path / "o"),
                     "--num-processes", "2"])
    assert code == 2
    assert "--num-processes: only with --distributed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
