"""Many runs as lanes (rnn_ntk.lanes): train_many against single runs, repeatability, run keys,
divergence isolation, no recompiles for new values, the layout rule, compiled-program release, and
the old rnn_ntk.train names."""
import jax
import numpy as np
import pytest

from rnn_ntk import lanes
from rnn_ntk.lanes import Layout, choose_layout, run_key, run_keys, train_many
from train_helpers import (CFG_ADAM, CFG_F32, _assert_records_close, _assert_records_equal, _cfg,
                           _count_compiles, _jit_train, _np)


@pytest.mark.parametrize("cfg,rtol,layouts", [(CFG_F32, 1e-5, (None, Layout(2, "vmap", 1))),
                                              (CFG_ADAM, 1e-12, (Layout(1, "map", 2),))])
def test_train_many_equals_single_runs(cfg, rtol, layouts):
    R = 3
    keys = run_keys(7, np.arange(R)[:, None])
    hp = {"lr": np.array([0.01, 0.03, 0.02]), "sigma_w": np.array([1.0, 1.4, 0.7]),
          "delta": np.array([0.1, 0.2, 0.3])}
    ref = [_np(_jit_train(cfg)(keys[i], {k: v[i] for k, v in hp.items()})) for i in range(R)]
    for lay in layouts:
        out = _np(train_many(cfg, keys, hp, layout=lay))
        assert out["train_loss"].shape == (R, cfg.n_logs)
        for i in range(R):
            _assert_records_close(jax.tree.map(lambda a: a[i], out), ref[i], rtol=rtol, atol=1e-30)
    # the single runs really differ from each other (so the comparison can fail)
    assert abs(ref[0]["train_loss"][-1] - ref[1]["train_loss"][-1]) > 1e-4


def test_train_many_repeatable_and_more_seeds_keep_runs():
    cfg = CFG_F32
    keys4 = run_keys(1, np.stack([np.arange(4), np.full(4, 2)], axis=1))
    keys3 = run_keys(1, np.stack([np.arange(3), np.full(3, 2)], axis=1))
    a = _np(train_many(cfg, keys3, {"lr": 0.3}))
    b = _np(train_many(cfg, keys3, {"lr": 0.3}))
    c = _np(train_many(cfg, keys4, {"lr": 0.3}))
    _assert_records_equal(a, b)
    _assert_records_equal(a, jax.tree.map(lambda x: x[:3], c))
    assert len(set(np.round(c["train_loss"][:, 0], 6))) == 4   # different seeds, different runs
    # run_keys is the stacked run_key fold_in chain
    for i in range(4):
        np.testing.assert_array_equal(jax.random.key_data(keys4[i]),
                                      jax.random.key_data(run_key(1, (i, 2))))
    np.testing.assert_array_equal(
        jax.random.key_data(run_key(1, (3, 2))),
        jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(1), 3), 2)))


def test_divergence_is_flagged_and_isolated():
    cfg = CFG_F32
    keys = run_keys(0, np.arange(3)[:, None])
    out = _np(train_many(cfg, keys, {"lr": np.array([0.1, 1e9, 0.2])}))
    assert out["diverged"][1, -1] and not out["diverged"][1, 0]
    assert not out["diverged"][0].any() and not out["diverged"][2].any()
    first = int(np.argmax(out["diverged"][1]))
    # frozen: every record after the divergence repeats the value at the frozen parameters
    for k in ("train_loss", "dtheta_W", "grad_norm", "sign_flip"):
        np.testing.assert_array_equal(out[k][1, first:], np.full(cfg.n_logs - first, out[k][1, first]))
    # the other lanes are exactly what they are next to a healthy run
    calm = _np(train_many(cfg, keys, {"lr": np.array([0.1, 0.15, 0.2])}))
    for i in (0, 2):
        _assert_records_equal(jax.tree.map(lambda a: a[i], out), jax.tree.map(lambda a: a[i], calm))


def test_new_hparam_values_do_not_recompile():
    cfg = CFG_F32
    keys = run_keys(0, np.arange(3)[:, None])
    with _count_compiles() as compiles:
        train_many(cfg, keys, {"lr": 0.1})["train_loss"].block_until_ready()
        single = _jit_train(cfg)
        single(keys[0], {"lr": 0.1, "sigma_w": 1.0, "width": 8.0})["train_loss"].block_until_ready()
        jax.jit(lambda x: x * 1.2345)(1.0).block_until_ready()
        assert compiles, "the listener must see a compile"
        compiles.clear()
        for lr, sw, w in [(0.2, 1.3, 7.0), (0.05, 0.5, 6.0)]:
            hp = {"lr": np.array([lr, 2 * lr, lr]), "sigma_w": np.array([sw, sw, 1.0]),
                  "sigma_v": np.array([0.5, 2.0, 1.0]), "width": np.array([w, 8.0, 4.0]),
                  "delta": np.array([0.2, 0.3, 0.4])}
            train_many(cfg, run_keys(int(lr > 0.1), np.arange(3)[:, None]), hp)[
                "train_loss"].block_until_ready()
            single(keys[1], {"lr": lr, "sigma_w": sw, "width": w})["train_loss"].block_until_ready()
        assert compiles == []


def test_bad_hparams_for_many_runs():
    with pytest.raises(ValueError, match="sigma_w"):
        train_many(_cfg(), run_keys(0, np.zeros((3, 1), int)), {"sigma_w": np.ones(2)})


def test_choose_layout_rule():
    small = _cfg(width=32, T=10, n=32)
    big = _cfg(width=1024, T=10, n=32)
    assert choose_layout(small, 256, backend="cpu", devices=[0, 1]) == Layout(2, "map", 1)
    assert choose_layout(big, 4, backend="cpu", devices=[0, 1]) == Layout(2, "map", 1)
    assert choose_layout(big, 1, backend="cpu", devices=[0, 1]) == Layout(1, "map", 1)
    assert choose_layout(small, 256, backend="gpu", devices=jax.devices()[:1]).strategy == "vmap"


def test_release_compiled_frees_memory_maps_and_only_past_the_threshold(monkeypatch):
    """XLA's CPU backend holds ~3 memory maps per compiled kernel while a program is cached (a test
    session or a long sweep would otherwise reach vm.max_map_count and abort inside LLVM)."""
    cfg, R = _cfg(width=7), 2
    keys = run_keys(0, np.arange(R)[:, None])
    lanes.release_compiled(force=True)
    before = lanes._map_counts()
    assert before is not None, "this test needs Linux's /proc (the limit it guards is Linux's)"
    ref = _np(train_many(cfg, keys, {}))
    held = lanes._map_counts()[0]
    assert held > before[0] + 50              # one small program holds hundreds of maps
    with _count_compiles() as compiles:       # far below the threshold: nothing is dropped
        assert not lanes.release_compiled()
        train_many(cfg, keys, {})["train_loss"].block_until_ready()
    assert compiles == []
    assert lanes.release_compiled(force=True)
    assert lanes._map_counts()[0] < held - 50  # the program's maps are gone
    train_many(cfg, keys, {})["train_loss"].block_until_ready()        # cached again
    monkeypatch.setattr(lanes, "MAP_COUNT_FRACTION", 0.0)   # "over the threshold" from now on
    with _count_compiles() as compiles:       # reusing a cached program never checks or drops
        train_many(cfg, keys, {})["train_loss"].block_until_ready()
    assert compiles == []
    # a new program over the threshold drops every cached one first, so cfg's recompiles
    train_many(_cfg(width=6), keys, {})["train_loss"].block_until_ready()
    monkeypatch.setattr(lanes, "MAP_COUNT_FRACTION", 1.0)
    with _count_compiles() as compiles:
        out = _np(train_many(cfg, keys, {}))
    assert len(compiles) >= 1
    _assert_records_equal(out, ref)


def test_moved_names_still_import_from_train():
    import subprocess
    import sys

    from rnn_ntk import progress, train
    for name in ("train_many", "run_key", "run_keys", "Layout", "choose_layout",
                 "release_compiled", "MAP_COUNT_FRACTION", "ACCEL_MEMORY_FRACTION"):
        assert getattr(train, name) is getattr(lanes, name)
    assert train.progress_listener is progress.progress_listener
    from rnn_ntk.train import release_compiled
    assert release_compiled is lanes.release_compiled
    with pytest.raises(AttributeError, match="no_such_name"):
        train.no_such_name
    # importing the program does not import the lanes (they import it: no cycle)
    code = ("import sys, rnn_ntk.train; "
            "assert 'rnn_ntk.lanes' not in sys.modules and 'rnn_ntk.progress' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


class _FakeGPU:
    """A stand-in accelerator: platform 'gpu' and memory_stats() returning (or raising) stats."""

    platform, device_kind = "gpu", "Fake GPU"

    def __init__(self, stats):
        self._stats = stats

    def memory_stats(self):
        if isinstance(self._stats, Exception):
            raise self._stats
        return self._stats


def test_choose_layout_on_fake_gpus_vmaps_as_many_lanes_as_fit(monkeypatch):
    from rnn_ntk.sweep import cost
    cfg = _cfg(width=512, T=10, n=32)
    limit, in_use = 2 ** 31, 300 * 2 ** 20
    devs = [_FakeGPU({"bytes_limit": limit, "bytes_in_use": in_use})]
    fit = int(0.6 * (limit - in_use)) // cost.run_bytes(cfg)    # floor(fraction * free / per run)
    assert cost.MEMORY_FRACTION == 0.6 and 2 <= fit < 10 ** 4
    assert choose_layout(cfg, fit, devices=devs) == Layout(1, "vmap", fit)
    assert choose_layout(cfg, fit + 1, devices=devs) == Layout(1, "map", fit)
    two = devs * 2
    assert choose_layout(cfg, 2 * fit, devices=two) == Layout(2, "vmap", fit)
    assert choose_layout(cfg, 2 * fit + 1, devices=two) == Layout(2, "map", fit)
    # the one fraction of the cost model decides (a smaller fraction fits fewer lanes)
    monkeypatch.setattr(cost, "MEMORY_FRACTION", 0.3)
    assert choose_layout(cfg, fit, devices=devs) == Layout(1, "map", int(0.3 * (limit - in_use))
                                                           // cost.run_bytes(cfg))


@pytest.mark.parametrize("stats", [None, RuntimeError("unsupported")])
def test_choose_layout_on_a_gpu_without_memory_stats_uses_host_ram(stats):
    from rnn_ntk.sweep import cost
    cfg = _cfg(width=512, T=10, n=32)
    with open("/proc/meminfo") as f:
        host = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    fit = 0.6 * host / cost.run_bytes(cfg)         # about this many fit (host RAM moves a little)
    assert choose_layout(cfg, int(0.8 * fit), devices=[_FakeGPU(stats)]).strategy == "vmap"
    lay = choose_layout(cfg, int(1.25 * fit), devices=[_FakeGPU(stats)])
    assert lay.strategy == "map" and lay.batch_size == pytest.approx(fit, rel=0.1)
