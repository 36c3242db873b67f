"""The one resume rule of every experiment: a stored piece is reused only when the settings that
made it equal the settings asked for (issue 11, bug 1: A1, A2 and C1 treated a stored file as
done when it merely existed, so a `--scale default` run into the results folder of a `--scale ci`
run reported the ci numbers).

The heavy computations are replaced by stubs whose arrays encode the scale they were asked for,
so each test runs 'ci' then 'default' into one folder in a few seconds and checks what the
figures/claims loader then reads."""
import numpy as np
import pytest

from rnn_ntk import sweep
from rnn_ntk.reproduce import load_arrays, load_experiment

a1 = load_experiment("a1_sample_complexity")
a2 = load_experiment("a2_length_dependence")
c1 = load_experiment("c1_kernel_complexity")

TAG = {"ci": 1.0, "default": 2.0}        # the value every stubbed error array holds, per scale


def _scale_of(st, settings) -> str:
    return next(s for s, v in settings.items() if v == st)


@pytest.fixture
def stub_a1(monkeypatch):
    """A1 without training or kernels: errors = TAG[scale of the setting] everywhere."""
    monkeypatch.setattr(a1, "ntk_lr", lambda *a, **k: 0.125)

    def tag(st):
        return TAG[_scale_of(st, a1.SETTINGS)]

    def kernel_piece(N, st, lr):
        return {k: np.full((st.seeds, a1.LENGTH - 1), tag(st)) for k in a1.REFERENCES}

    def train_piece(N, st, lr, store_dir):
        W, S = len(st.widths), st.seeds
        return {"err": np.full((W, S, a1.LENGTH - 1), tag(st)),
                "diverged": np.zeros(W * S, bool), "test_loss": np.ones(W * S)}

    monkeypatch.setattr(a1, "_kernel_piece", kernel_piece)
    monkeypatch.setattr(a1, "_train_piece", train_piece)
    return a1.run


def test_a1_rerun_at_another_scale_recomputes(tmp_path, stub_a1):
    res = tmp_path / "res"
    stub_a1(res, "ci")
    st, E, ref = a1._load(res)
    assert st == a1.SETTINGS["ci"] and np.all(E == TAG["ci"])
    stub_a1(res, "default")
    st, E, ref = a1._load(res)
    d = a1.SETTINGS["default"]
    assert st == d
    assert E.shape == (len(d.widths), d.seeds, len(d.ns)) and np.all(E == TAG["default"])
    for k in a1.REFERENCES:
        assert ref[k].shape == (d.seeds, len(d.ns)) and np.all(ref[k] == TAG["default"])


def test_a1_stale_piece_of_the_same_name_is_not_read(tmp_path, stub_a1, monkeypatch):
    """A piece whose file name both scales share (same N) is recomputed, not reused."""
    ci = a1.SETTINGS["ci"]
    monkeypatch.setitem(a1.SETTINGS, "default", ci._replace(seeds=ci.seeds + 1))
    res = tmp_path / "res"
    stub_a1(res, "ci")
    stub_a1(res, "default")
    st, E, ref = a1._load(res)
    assert st.seeds == ci.seeds + 1 and E.shape[1] == ci.seeds + 1
    assert np.all(E == TAG["default"]) and all(np.all(r == TAG["default"]) for r in ref.values())


@pytest.fixture
def stub_a2(monkeypatch):
    monkeypatch.setattr(a2, "position_steps", lambda L, **k: (np.ones(L + 1), 1.0 / (L + 1)))
    monkeypatch.setattr(a2, "_kernel_piece", lambda st: np.full(
        (st.seeds, len(st.ns), max(st.lengths)), TAG[_scale_of(st, a2.SETTINGS)]))
    monkeypatch.setattr(sweep, "run_sweep", lambda spec, out, **k: None)
    seen = {}

    def spec(st, L, N, lr, weights):
        # the width check's pieces run the scale's setting at another width
        seen["st"] = next(v for v in a2.SETTINGS.values() if v._replace(width=st.width) == st)
        seen["L"] = L
        return None

    def errors(store_dir):
        st, L = seen["st"], seen["L"]
        S = st.rnn_seeds
        return {"err": np.full((S, L), TAG[_scale_of(st, a2.SETTINGS)]),
                "test_loss": np.ones(S), "diverged": np.zeros(S, bool)}

    monkeypatch.setattr(a2, "rnn_spec", spec)
    monkeypatch.setattr(a2, "store_position_errors", errors)


@pytest.mark.parametrize("change", ["default", "same_names"])
def test_a2_rerun_with_other_settings_recomputes(tmp_path, stub_a2, monkeypatch, change):
    ci = a2.SETTINGS["ci"]
    if change == "same_names":     # every file name is shared; only the seeds differ
        monkeypatch.setitem(a2.SETTINGS, "default", ci._replace(seeds=ci.seeds + 1,
                                                                rnn_seeds=ci.rnn_seeds + 1))
    res = tmp_path / "res"
    a2.run(res, "ci")
    a2.run(res, "default")
    st, kern, rnn, n_div, lr, width_err = a2._load(res)
    d = a2.SETTINGS["default"]
    assert st == d
    for L in d.lengths:
        assert kern[L].shape == (d.seeds, len(d.ns), L) and np.all(kern[L] == TAG["default"])
        assert rnn[L].shape == (d.rnn_seeds, len(d.rnn_ns), L) and np.all(rnn[L] == TAG["default"])
        assert lr[L] == pytest.approx(1.0 / (L + 1))
    L0 = d.lengths[0]
    assert width_err.shape == (d.rnn_seeds, len(d.check_widths), L0)
    assert np.all(width_err == TAG["default"])


@pytest.fixture
def stub_c1(monkeypatch):
    def kernel_piece(t, st):
        S, n = st.seeds, len(st.ns)
        v = TAG[_scale_of(st, c1.SETTINGS)]
        return {"measure": np.full((S, n), v), "kr_test_mse": np.full((S, n), v),
                "lam_max": np.full((S,), 10.0), "ns": np.asarray(st.ns)}

    seen = {}

    def run_sweep(spec, out, **k):
        seen["seeds"] = len(spec.axis("seed").values)
        seen["steps"] = spec.fixed["train"]["steps"]

    def results(store_dir):
        S = seen["seeds"]
        v = TAG["ci"] if seen["steps"] == c1.SETTINGS["ci"].steps else TAG["default"]
        return {"test_mse": np.full(S, v), "train_mse": np.full(S, v),
                "diverged": np.zeros(S, bool), "lr": np.asarray(0.1)}

    monkeypatch.setattr(c1, "_kernel_piece", kernel_piece)
    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    monkeypatch.setattr(c1, "train_results", results)


def test_c1_rerun_at_another_scale_recomputes(tmp_path, stub_c1):
    res = tmp_path / "res"
    c1.run(res, "ci")
    K, R = c1._load(res)
    assert np.all(K["additive"]["measure"] == TAG["ci"])
    c1.run(res, "default")
    K, R = c1._load(res)
    d = c1.SETTINGS["default"]
    for t in c1.TARGETS:
        assert K[t.name]["measure"].shape == (d.seeds, len(d.ns))
        assert np.all(K[t.name]["measure"] == TAG["default"])
        assert R[t.name]["test_mse"].shape == (d.train_seeds,)
        assert np.all(R[t.name]["test_mse"] == TAG["default"])
    np.testing.assert_array_equal(K["additive"]["ns"], d.ns)


def test_rerun_at_the_same_scale_reuses_every_piece(tmp_path, stub_c1):
    res = tmp_path / "res"
    c1.run(res, "ci")
    files = sorted((res / c1.NAME).glob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in files]
    c1.run(res, "ci")
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert load_arrays(files[0])[1]      # pieces carry the settings that made them


# the protocol module itself

def test_is_done_and_load_piece(tmp_path):
    from rnn_ntk.experiments import protocol
    st = a1.SETTINGS["ci"]
    want = protocol.settings("ci", st, extra=(1, 2))
    assert want == {"scale": "ci", "setting": {"ns": [4, 8], "widths": [4, 8], "seeds": 2,
                                               "n_test": 8}, "extra": [1, 2]}
    p = tmp_path / "piece.npz"
    assert not protocol.is_done(p, want)                          # missing
    p.write_bytes(b"not an npz")
    assert not protocol.is_done(p, want)                          # unreadable
    protocol.save_piece(p, want, {"note": "x"}, a=np.arange(3))
    assert protocol.is_done(p, want)
    assert not protocol.is_done(p, protocol.settings("default", st, extra=(1, 2)))
    assert not protocol.is_done(p, protocol.settings("ci", st._replace(seeds=3), extra=(1, 2)))
    arrays, meta = protocol.load_piece(p, want)
    np.testing.assert_array_equal(arrays["a"], [0, 1, 2])
    assert meta["note"] == "x" and protocol.stored_setting(meta, type(st)) == st
    with pytest.raises(FileNotFoundError, match="other settings"):
        protocol.load_piece(p, protocol.settings("default", st))
    with pytest.raises(FileNotFoundError, match="run the experiment first"):
        protocol.load_piece(tmp_path / "none.npz")
    with pytest.raises(FileNotFoundError, match="older format"):
        protocol.stored_setting({"scale": "ci"}, type(st))


def test_sweep_store_replaces_a_store_of_another_spec(tmp_path, monkeypatch):
    import json

    from rnn_ntk import store
    from rnn_ntk.experiments import protocol
    spec = a1.rnn_spec(a1.SETTINGS["ci"], 8, 0.1)
    calls = []
    monkeypatch.setattr(sweep, "run_sweep", lambda s, out, **k: calls.append((s, out, k)))
    out = tmp_path / "store"
    out.mkdir()
    (out / store.HEADER).write_text(json.dumps({"spec": {"other": 1}}))
    (out / "stale").write_text("x")
    protocol.sweep_store(spec, out)
    assert not out.exists()                          # removed, then (stub) run afresh
    assert calls == [(spec, out, {"resume": True})]


def test_fmt_interval():
    from rnn_ntk.experiments.protocol import fmt_fit, fmt_interval
    from rnn_ntk.stats import Fit
    assert fmt_interval(0.5, (0.25, 1.0)) == "0.500 [0.250, 1.000]"
    assert fmt_interval(-0.5, (-1, 0.25), 2, signed=True) == "-0.50 [-1.00, +0.25]"
    assert fmt_fit(Fit(-0.51, 0.0, 0.01, 0.9, (-0.53, -0.49)), 4) == "-0.5100 [-0.5300, -0.4900]"
