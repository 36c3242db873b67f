"""B3 (lazy training): end to end at scale 'ci', reusing L1's stored runs without retraining."""
import os

import numpy as np

from rnn_ntk import model
from rnn_ntk.reproduce import VERDICTS, load_experiment


b3 = load_experiment("b3_lazy_training")


def test_ci_end_to_end_reuses_l1_runs(ci_results, tmp_path):
    res = ci_results(b3.NAME)     # b3.run(res, "ci"): trains L1's ci runs unless stored already
    files = sorted((res / b3.l1.NAME).glob("width_*.npz"))
    assert len(files) == len(b3.l1.SETTINGS["ci"].widths)
    # B3's own store holds only its separation sweep; the lazy-training statistics are L1's runs
    assert sorted(p.name for p in (res / b3.NAME).iterdir()) == ["delta.npz"]
    files.append(res / b3.NAME / "delta.npz")
    stamps = [os.stat(f).st_mtime_ns for f in files]
    b3.run(res, "ci")                                   # stored: nothing is trained again
    b3.l1.run(res, "ci")
    assert [os.stat(f).st_mtime_ns for f in files] == stamps

    d = b3.delta_summary(res)
    assert d["t_eps"].shape == (len(b3.DELTAS), b3.DELTA_SETTINGS["ci"].seeds)
    np.testing.assert_allclose(d["arrays"]["deltas"], b3.DELTAS)

    s = b3.l1.summary(res)
    a = s["arrays"]
    # the movement statistic is s_w * ||dW|| (NTK parameterisation) = sqrt(m) ||dW_paper||
    sw = model.RNNConfig.paper(width=1, input_dim=b3.l1.INPUT_DIM).sigma_w
    np.testing.assert_allclose(s["stats"]["movement"], np.sqrt(2.0) * a["dtheta_W"][..., -1])
    assert sw == np.sqrt(2.0)
    assert np.all((s["stats"]["sign_flip"] >= 0) & (s["stats"]["sign_flip"] <= 1))
    assert np.all(a["sign_flip"][..., 0] == 0)          # no flips at initialisation

    paths = b3.figures(res, tmp_path / "fig")
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)
    cl = b3.claims(res)
    assert len(cl) == 5
    assert all(c.verdict in VERDICTS and c.experiment == b3.NAME for c in cl)
