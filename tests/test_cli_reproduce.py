"""`rnn-ntk reproduce` and `rnn-ntk figures` through the CLI entry point."""
import pytest

from rnn_ntk.cli import main

# shares the ci runs of the session fixture ci_results with test_b2_no_explosion.py:
# one pytest-xdist worker runs both files
pytestmark = pytest.mark.xdist_group("b2_ci_runs")


def test_unknown_experiment_is_a_usage_error(capsys):
    assert main(["figures", "no_such_experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_reproduce_then_figures_redraws_from_stored_results(ci_results, tmp_path, capsys):
    # the session's shared 'ci' results: reproduce resumes B2's stored runs (the experiment's own
    # test checks that nothing is recomputed), then draws
    res, figs, md = ci_results("b2_no_explosion"), tmp_path / "figs", tmp_path / "RESULTS.md"
    assert main(["reproduce", "b2_no_explosion", "--scale", "ci", "--results", str(res),
                 "--figures", str(figs), "--results-md", str(md)]) == 0
    first = md.read_text().splitlines()
    pngs = sorted(p.name for p in figs.glob("*.png"))
    assert pngs and "## b2_no_explosion" in first
    for p in figs.iterdir():
        p.unlink()
    md.unlink()
    # figures alone: same claims and figures, nothing trained (results already stored)
    assert main(["figures", "b2_no_explosion", "--results", str(res), "--out", str(figs),
                 "--results-md", str(md)]) == 0
    again = md.read_text().splitlines()
    strip = lambda lines: [l for l in lines if not l.startswith("Last generated")]
    assert strip(again) == strip(first)
    assert sorted(p.name for p in figs.glob("*.png")) == pngs


def test_figures_without_results_names_what_is_missing(tmp_path, capsys):
    assert main(["figures", "b2_no_explosion", "--results", str(tmp_path / "none"),
                 "--out", str(tmp_path / "f"), "--results-md", str(tmp_path / "R.md")]) == 1
    assert "no stored results for: b2_no_explosion" in capsys.readouterr().err
    assert not (tmp_path / "R.md").exists()


def test_naming_one_experiment_keeps_the_other_rows_of_results_md(ci_results, tmp_path,
                                                                  monkeypatch):
    import types

    from rnn_ntk import reproduce
    res, figs, md = ci_results("b2_no_explosion"), tmp_path / "figs", tmp_path / "RESULTS.md"
    assert main(["reproduce", "b2_no_explosion", "--scale", "ci", "--results", str(res),
                 "--figures", str(figs), "--results-md", str(md)]) == 0
    other = types.SimpleNamespace(
        NAME="zz_other", TITLE="t", run=None, figures=None,
        claims=lambda results: [reproduce.Claim("zz_other", "a stored claim", "s", "1", "c",
                                                "agrees")])
    unrun = types.SimpleNamespace(NAME="zz_unrun", TITLE="t", run=None, figures=None,
                                  claims=lambda results: (_ for _ in ()).throw(
                                      FileNotFoundError("none")))
    original = reproduce.discover
    monkeypatch.setattr(reproduce, "discover",
                        lambda names=None: original(names) if names else
                        original(["b2_no_explosion"]) + [other, unrun])
    assert main(["figures", "b2_no_explosion", "--results", str(res), "--out", str(figs),
                 "--results-md", str(md)]) == 0
    text = md.read_text()
    assert "## b2_no_explosion" in text and "## zz_other" in text and "a stored claim" in text
    assert "zz_unrun" not in text


def _run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter that imports this checkout's rnn_ntk; its stdout."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import rnn_ntk
    root = str(Path(rnn_ntk.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_import_and_help_stay_light():
    """`import rnn_ntk` and building the CLI's parser (what `rnn-ntk --help` does) import none of
    jax, flax, xarray; the public names still resolve on first use."""
    out = _run_python(
        "import sys, rnn_ntk, rnn_ntk.cli\n"
        "rnn_ntk.cli.build_parser().format_help()\n"
        "print(sorted(m for m in ('jax', 'flax', 'xarray', 'optax') if m in sys.modules))\n"
        "print(rnn_ntk.RNNConfig.__module__, rnn_ntk.load_results.__module__)\n")
    assert out.split("\n")[:2] == ["[]", "rnn_ntk.model rnn_ntk.store"]


def test_lazy_names_are_the_functions_even_after_their_submodule_is_imported():
    out = _run_python(
        "import rnn_ntk.linearize, rnn_ntk\n"
        "from rnn_ntk.linearize import linearize\n"
        "print(rnn_ntk.linearize is linearize, callable(rnn_ntk.linearize))\n"
        "print(rnn_ntk.model.RNNConfig is rnn_ntk.RNNConfig)\n")
    assert out.split("\n")[:2] == ["True True", "True"]
