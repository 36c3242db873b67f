"""`rnn-ntk reproduce` and `rnn-ntk figures` through the CLI entry point."""
from rnn_ntk.cli import main


def test_unknown_experiment_is_a_usage_error(capsys):
    assert main(["figures", "no_such_experiment"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_reproduce_then_figures_redraws_from_stored_results(tmp_path, capsys):
    res, figs, md = tmp_path / "res", tmp_path / "figs", tmp_path / "RESULTS.md"
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


def test_naming_one_experiment_keeps_the_other_rows_of_results_md(tmp_path, monkeypatch):
    import types

    from rnn_ntk import reproduce
    res, figs, md = tmp_path / "res", tmp_path / "figs", tmp_path / "RESULTS.md"
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
