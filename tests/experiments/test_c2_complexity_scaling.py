"""C2 (WSHC scaling laws): the pieces against closed forms and independent computations, the
model comparison on synthetic power laws and exponentials, and the experiment end to end at 'ci'."""

import math

import numpy as np
import pytest

from rnn_ntk.reproduce import VERDICTS, load_experiment


c2 = load_experiment("c2_complexity_scaling")


def test_bound_closed_form_and_bad_input():
    # sqrt(2) c + 3 sqrt(ln(6/delta) / (2n)) at c = 0.5, n = 200, delta = 0.05
    want = math.sqrt(2) * 0.5 + 3 * math.sqrt(math.log(120) / 400)
    assert float(c2.wshc_bound(0.5, 200)) == pytest.approx(want, rel=1e-12)
    assert float(c2.wshc_bound(0.0, 1e12)) < 1e-5
    with pytest.raises(ValueError, match="delta"):
        c2.wshc_bound(0.5, 200, delta=1.5)
    with pytest.raises(ValueError, match="n >= 1"):
        c2.wshc_bound(0.5, 0)


def test_ramp_loss():
    np.testing.assert_array_equal(c2.ramp_loss([0.0, 0.5, 3.0, -2.0], [0.2, 0.0, 0.0, 0.0]),
                                  [0.2, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("law,sign", [("power", -1), ("exp", +1)])
def test_model_comparison_tells_power_laws_from_exponentials(law, sign):
    # 6 seeds of c(L) = L^0.7 or e^{0.05 L} with 3% multiplicative noise: the statistic's whole
    # interval lies below 0 for the power law and above 0 for the exponential
    rng = np.random.default_rng(0)
    L = np.array([4, 8, 16, 32, 64], float)
    mean = 0.7 * np.log(L) if law == "power" else 0.05 * L
    logc = mean + 0.03 * rng.normal(size=(6, L.size))
    est, (lo, hi) = c2.model_comparison(L, logc)
    assert sign * est > 0 and sign * lo > 0 and sign * hi > 0


def test_phase_cells_and_their_lags():
    st = c2.SETTINGS["default"]
    cells = c2.phase_cells(st)
    assert all(N <= l0 + 1 for N, l0 in cells) and len(cells) == len(set(cells))
    # N = 1: 7 spans; N = 2: l0 >= 1 (6); N = 3: l0 >= 2 (5); N = 4: l0 >= 3 (4)
    assert len(cells) == 7 + 6 + 5 + 4
    assert c2.cell_lags(1, 9) == (9,)
    assert c2.cell_lags(2, 9) == (0, 9)
    assert c2.cell_lags(4, 3) == (0, 1, 2, 3)
    assert c2.cell_lags(3, 9) == (0, 4, 9)                     # offsets 0, round(4.5) = 5, 9


def test_prefix_kernel_by_lengths_is_the_kernel_of_the_prefix():
    # the L sweep's one program: the 'last' NTK of the first L tokens via lengths1 equals the
    # NTK of the truncated sequences
    import jax
    from rnn_ntk.experiments import c1_kernel_complexity as c1
    from rnn_ntk.kernels.infinite import infinite_kernels

    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 8, c1.INPUT_DIM))
    cfg = c1.model_config(8)
    with jax.enable_x64(True):
        for L in (3, 8):
            a = np.asarray(infinite_kernels(cfg, x, lengths1=np.full(6, L))[1])
            b = np.asarray(infinite_kernels(cfg, x[:, :L])[1])
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_end_to_end_ci(ci_results, rerun_changes_nothing, tmp_path):
    res = ci_results(c2.NAME)
    rerun_changes_nothing(c2, res)
    figs = c2.figures(res, tmp_path / "fig")
    assert figs and all(p.exists() for p in figs)
    cl = c2.claims(res)
    assert [c.role for c in cl] == ["claim", "claim", "claim", "control", "extra"]
    assert all(c.verdict in VERDICTS and c.experiment == c2.NAME for c in cl)
