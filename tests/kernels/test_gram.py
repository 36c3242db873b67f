"""Streamed Gram matrices (rnn_ntk.kernels.gram): equal to the in-memory kernels, stores that
read back lazily, crash + resume giving the same bytes, refusals before any compute."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_ntk import store
from rnn_ntk.kernels import empirical_nngp, empirical_ntk, gram, infinite_kernels, load_gram
from rnn_ntk.model import RNNConfig, init_params

REPO = Path(__file__).resolve().parents[2]


def _data(n, T, d, seed=0, ragged=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, T, d))
    lens = rng.integers(1, T + 1, size=n) if ragged else None
    return x, lens


def _chunk_bytes(out: Path) -> dict[str, bytes]:
    base = out / "gram.zarr"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*"))
            if p.is_file() and p.relative_to(base).parts[1] == "c"}


@pytest.mark.parametrize("readout", ["last", "all", "mean"])
def test_symmetric_and_cross_equal_infinite_kernels_exactly(readout):
    # block boundaries aligned with infinite_kernels' own tiles (block_size=block, n = 3 blocks):
    # the same per-tile computation, so the arrays are bitwise equal
    cfg = RNNConfig(width=8, input_dim=3, readout=readout, sigma_w=1.3, sigma_b=0.2,
                    trainable=("W", "b", "v"))
    x, lens = _data(48, 5, 3)
    x2, lens2 = _data(20, 4, 3, seed=1)
    nngp, ntk = infinite_kernels(cfg, x, lengths1=lens, block_size=16)
    g_nngp, g_ntk = gram(cfg, x, lengths=lens, kind="both", block=16)
    np.testing.assert_array_equal(g_nngp, np.asarray(nngp))
    np.testing.assert_array_equal(g_ntk, np.asarray(ntk))
    _, ntk_x = infinite_kernels(cfg, x, x2, lengths1=lens, lengths2=lens2, block_size=16)
    g_x = gram(cfg, x, x2, lengths=lens, lengths2=lens2, kind="ntk", block=16)
    assert g_x.shape == ntk_x.shape
    np.testing.assert_array_equal(g_x, np.asarray(ntk_x))


def test_unaligned_blocks_agree_to_rounding():
    # ragged last block (50 = 3 x 16 + 2), padded internally and sliced off
    cfg = RNNConfig(width=8, input_dim=3, readout="mean", activation="erf", sigma_b=0.3)
    x, lens = _data(50, 6, 3, seed=2)
    _, ntk = infinite_kernels(cfg, x, lengths1=lens)
    g = gram(cfg, x, lengths=lens, block=16)
    np.testing.assert_allclose(g, np.asarray(ntk), rtol=1e-13, atol=0)
    np.testing.assert_array_equal(g, g.T)


def test_empirical_method_equals_empirical_kernels():
    cfg = RNNConfig(width=16, input_dim=3, readout="last", sigma_b=0.1)
    params = init_params(cfg, jax.random.key(3))
    x, lens = _data(30, 4, 3, seed=3)
    x2, _ = _data(11, 6, 3, seed=4)
    nngp, ntk = gram(cfg, x, lengths=lens, kind="both", method="empirical", params=params, block=8)
    np.testing.assert_allclose(ntk, np.asarray(empirical_ntk(cfg, params, x, lengths1=lens,
                                                             method="jacobian")), rtol=1e-10)
    np.testing.assert_allclose(nngp, np.asarray(empirical_nngp(cfg, params, x, lengths1=lens)),
                               rtol=1e-10)
    cross = gram(cfg, x, x2, lengths=lens, method="empirical", params=params, block=8)
    np.testing.assert_allclose(cross, np.asarray(empirical_ntk(cfg, params, x, x2, lengths1=lens,
                                                               method="jacobian")), rtol=1e-10)


def test_store_reads_back_lazily_and_in_float32(tmp_path):
    cfg = RNNConfig(width=8, input_dim=3, readout="all", sigma_b=0.1)
    x, lens = _data(20, 3, 3, seed=5)
    ref = gram(cfg, x, lengths=lens, block=8)
    s = gram(cfg, x, lengths=lens, block=8, out=tmp_path / "g")
    assert s.complete and s.shape == (20, 3, 20, 3) and s.dtype == np.float64
    np.testing.assert_array_equal(np.asarray(s), ref)
    np.testing.assert_array_equal(s[3:17, :, 5:9, 1], ref[3:17, :, 5:9, 1])
    again = load_gram(tmp_path / "g")
    np.testing.assert_array_equal(np.asarray(again), ref)
    # float32 store of a 2-D Gram; iter_blocks covers every entry once
    cfg2 = cfg.replace(readout="last")
    s32 = gram(cfg2, x, lengths=lens, kind="both", block=8, dtype="float32", out=tmp_path / "h")
    assert isinstance(s32, tuple) and s32[1].dtype == np.float32
    ref2 = gram(cfg2, x, lengths=lens, block=8)
    np.testing.assert_array_equal(np.asarray(s32[1]), ref2.astype(np.float32))
    seen = np.zeros((20, 20), int)
    for r, c, blk in s32[1].iter_blocks():
        np.testing.assert_array_equal(blk, ref2[r, c].astype(np.float32))
        seen[r, c] += 1
    assert (seen == 1).all()
    assert load_gram(tmp_path / "h", "nngp").kind == "nngp"
    with pytest.raises(store.StoreError, match=r"holds \['ntk'\], not 'nngp'"):
        load_gram(tmp_path / "g", "nngp")


class _Crash(Exception):
    pass


def test_crash_between_blocks_then_resume_gives_the_same_bytes(tmp_path):
    cfg = RNNConfig(width=8, input_dim=3, sigma_b=0.1)
    x, lens = _data(40, 5, 3, seed=6)
    gram(cfg, x, lengths=lens, block=8, out=tmp_path / "ref")          # 15 blocks, uninterrupted

    def crash(done, total):
        if done == 4:
            raise _Crash

    with pytest.raises(_Crash):
        gram(cfg, x, lengths=lens, block=8, out=tmp_path / "run", on_block=crash)
    with pytest.raises(store.StoreError, match="unfinished: 4 of 15 blocks"):
        load_gram(tmp_path / "run")
    part = load_gram(tmp_path / "run", allow_partial=True)
    assert not part.complete and np.isnan(np.asarray(part)).any()
    with pytest.raises(store.StoreError, match="not empty; pass resume=True"):
        gram(cfg, x, lengths=lens, block=8, out=tmp_path / "run")
    calls = []
    s = gram(cfg, x, lengths=lens, block=8, out=tmp_path / "run", resume=True,
             on_block=lambda d, t: calls.append((d, t)))
    assert calls[0] == (4, 15) and calls[-1] == (15, 15) and len(calls) == 12  # 11 computed
    assert s.complete
    assert _chunk_bytes(tmp_path / "run") == _chunk_bytes(tmp_path / "ref")
    assert len(_chunk_bytes(tmp_path / "ref")) == 25                           # 5 x 5 chunks


def test_block_without_marker_is_recomputed(tmp_path):
    cfg = RNNConfig(width=8, input_dim=3, sigma_b=0.1)
    x, _ = _data(24, 4, 3, seed=7, ragged=False)
    gram(cfg, x, block=8, out=tmp_path / "g")
    ref = _chunk_bytes(tmp_path / "g")
    chunk = tmp_path / "g" / "gram.zarr" / "ntk" / "c" / "0" / "2"
    chunk.write_bytes(b"\0" * 10)                    # a torn write whose marker never came
    (tmp_path / "g" / "done" / "0_2").unlink()
    gram(cfg, x, block=8, out=tmp_path / "g", resume=True)
    assert _chunk_bytes(tmp_path / "g") == ref


def test_sigkill_then_resume(tmp_path):
    out = tmp_path / "g"
    script = textwrap.dedent(f"""
        import os, signal, jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        from rnn_ntk.kernels import gram
        from rnn_ntk.model import RNNConfig
        x = np.random.default_rng(8).normal(size=(40, 4, 3))
        def kill(done, total):
            if done == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        gram(RNNConfig(width=8, input_dim=3, sigma_b=0.1), x, block=8, out={str(out)!r},
             on_block=kill)
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(list((out / "done").iterdir())) == 3
    x = np.random.default_rng(8).normal(size=(40, 4, 3))
    cfg = RNNConfig(width=8, input_dim=3, sigma_b=0.1)
    s = gram(cfg, x, block=8, out=out, resume=True)     # takes over the dead writer's lock
    np.testing.assert_array_equal(np.asarray(s), gram(cfg, x, block=8))


def test_resume_refuses_other_inputs_naming_them(tmp_path):
    cfg = RNNConfig(width=8, input_dim=3, sigma_b=0.1)
    x, lens = _data(16, 4, 3, seed=9)
    gram(cfg, x, lengths=lens, block=8, out=tmp_path / "g")
    x_other = x.copy()
    x_other[3, 1, 2] += 1e-9
    cases = [(dict(x=x_other, lengths=lens), "inputs.x"),
             (dict(x=x, lengths=None), "inputs.lengths"),
             (dict(x=x, lengths=lens, cfg=cfg.replace(sigma_w=1.1)), "cfg.sigma_w"),
             (dict(x=x, lengths=lens, kind="both"), "kinds"),
             (dict(x=x, lengths=lens, block=4), "block")]
    for kw, name in cases:
        c = kw.pop("cfg", cfg)
        kw.setdefault("block", 8)
        with pytest.raises(store.StoreError, match=rf"other inputs or config \(differs: .*{name}"):
            gram(c, out=tmp_path / "g", resume=True, **kw)


@pytest.mark.parametrize("kw, msg", [
    (dict(kind="ntkk"), "kind must be one of"),
    (dict(method="exact"), "method must be one of"),
    (dict(lengths2=np.ones(16, int)), "lengths2 was given without x2"),
    (dict(params={"b": np.zeros(8)}), "params are only used by method='empirical'"),
    (dict(method="empirical"), "needs params"),
    (dict(block=0), "block must be a positive integer"),
    (dict(lengths=np.full(16, 9)), r"lengths must lie in \[1, 4\]"),
    (dict(x2=np.zeros((3, 4, 2))), "x2 has token dimension 2"),
    (dict(dtype="int32"), "dtype must be a floating dtype"),
    (dict(process_index=2, process_count=2), "process_index < process_count"),
])
def test_bad_input_fails_before_anything_is_written(tmp_path, kw, msg):
    cfg = RNNConfig(width=8, input_dim=3)
    x, _ = _data(16, 4, 3, ragged=False)
    with pytest.raises(ValueError, match=msg):
        gram(cfg, x, out=tmp_path / "g", **kw)
    assert not (tmp_path / "g").exists()


def test_process_shares_and_devices_fill_one_store(tmp_path):
    assert len(jax.local_devices()) == 2                 # conftest: 2 CPU devices
    cfg = RNNConfig(width=8, input_dim=3, sigma_b=0.1)
    x, lens = _data(40, 4, 3, seed=10)
    ref = gram(cfg, x, lengths=lens, block=8, devices=jax.local_devices()[:1])
    a = gram(cfg, x, lengths=lens, block=8, out=tmp_path / "g", process_index=0, process_count=2)
    assert not a.complete and len(list((tmp_path / "g" / "done").iterdir())) == 8  # 15 blocks
    b = gram(cfg, x, lengths=lens, block=8, out=tmp_path / "g", resume=True, process_index=1,
             process_count=2)
    assert b.complete
    np.testing.assert_array_equal(np.asarray(load_gram(tmp_path / "g")), ref)
