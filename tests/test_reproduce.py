"""The experiment protocol: atomic result files, discovery, RESULTS.md."""
import numpy as np
import pytest

from rnn_ntk.reproduce import (Claim, check_scale, discover, load_arrays, load_experiment,
                               results_markdown, save_arrays)


def test_save_load_roundtrip_and_atomicity(tmp_path, monkeypatch):
    p = save_arrays(tmp_path / "a" / "r.npz", {"scale": "ci"}, x=np.arange(3.0), y=[[1, 2]])
    arrays, meta = load_arrays(p)
    np.testing.assert_array_equal(arrays["x"], [0.0, 1.0, 2.0])
    assert meta == {"scale": "ci"} and arrays["y"].shape == (1, 2)

    # a write that fails half-way leaves the previous file intact and no temp file behind
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        save_arrays(p, x=np.zeros(5))
    np.testing.assert_array_equal(load_arrays(p)[0]["x"], [0.0, 1.0, 2.0])
    assert [f.name for f in p.parent.iterdir()] == ["r.npz"]


def test_claim_and_scale_validation():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Claim("e", "c", "s", "1", "crit", "maybe")
    with pytest.raises(ValueError, match="scale must be one of"):
        check_scale("huge")


def test_discover_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown experiment"):
        discover(["no_such_experiment"])


def test_every_experiment_follows_the_protocol_and_loads_once():
    mods = discover()
    assert len(mods) >= 10
    for mod in mods:
        assert load_experiment(mod.NAME) is mod          # one module object per process
        assert callable(mod.run) and callable(mod.figures) and callable(mod.claims)
    assert [m.NAME for m in discover(["b2_no_explosion", "a1_sample_complexity"])] == [
        "b2_no_explosion", "a1_sample_complexity"]
    with pytest.raises(ValueError, match="unknown experiment 'nope'"):
        load_experiment("nope")


def test_results_markdown_groups_by_experiment():
    rows = [Claim("K1", "kernel converges", "slope", "-0.50 ± 0.02", "[-0.65, -0.35]", "agrees"),
            Claim("B1", "linear rate", "a|b", "x", "y", "disagrees", role="control")]
    md = results_markdown(rows)
    assert md.index("## K1") < md.index("## B1")
    assert "| claim | kernel converges | slope | -0.50 ± 0.02 | [-0.65, -0.35] | **agrees** |" in md
    assert "| control | linear rate | a\\|b |" in md
    with pytest.raises(ValueError, match="role must be one of"):
        Claim("B1", "c", "s", "v", "k", "agrees", role="paper")
