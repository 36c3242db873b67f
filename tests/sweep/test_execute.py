"""Sweep execution (rnn_ntk.sweep.execute): records -> store variables. Training a sweep end to
end (chunks, resume, progress) is tested through the CLI in test_cli.py."""
import numpy as np

from rnn_ntk.sweep.execute import _records_to_arrays


def test_records_become_store_variables_with_the_padding_masked():
    rng = np.random.default_rng(0)
    R, M, d, k, L = 3, 5, 2, 1, 4
    widths = np.array([2, 5, 3])
    params = {"W": rng.normal(size=(R, M, M)).astype(np.float32), "U": rng.normal(size=(R, M, d)),
              "b": rng.normal(size=(R, M)), "v": rng.normal(size=(R, M, k))}
    records = {"train_loss": rng.normal(size=(R, L)), "diverged": np.zeros((R, L), bool),
               "final_params": params, "lin_final_params": params}
    data, dims = _records_to_arrays(records, widths, L)
    assert dims["train_loss"] == dims["diverged"] == ("step",)
    np.testing.assert_array_equal(data["train_loss"], records["train_loss"])
    unit_dims = {"W": ("unit", "unit_in"), "U": ("unit", "input"), "b": ("unit",),
                 "v": ("unit", "output")}
    for prefix in ("final", "lin_final"):
        for g, a in params.items():
            got = data[f"{prefix}_{g}"]
            assert dims[f"{prefix}_{g}"] == unit_dims[g] and got.dtype == a.dtype
            n_unit = sum(dn.startswith("unit") for dn in unit_dims[g])
            for r in range(R):
                for idx in np.ndindex(*a.shape[1:]):     # NaN exactly where a unit is padding
                    pad = any(u >= widths[r] for u in idx[:n_unit])
                    want = np.nan if pad else a[(r, *idx)]
                    np.testing.assert_equal(got[(r, *idx)], want)
    assert set(data) == {"train_loss", "diverged"} | {f"{p}_{g}" for p in ("final", "lin_final")
                                                      for g in params}
