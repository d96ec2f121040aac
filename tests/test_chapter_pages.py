"""The book as a reader sees it: one rounding rule, tables without a meaningless index, figures
that fit the page, and a summary with one row per distinct comparison, intervals and a verdict
computed from the numbers."""
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lslu.chapters import common, plots, summary, zoo


# --------------------------------------------------------------------------- the rounding rule
def test_one_rounding_rule_for_accuracies_gains_p_values_and_counts():
    assert common.fmt_pct(96.7) == "96.70"
    assert common.fmt_pp(-0.2849) == "-0.28" and common.fmt_pp(1.105) in ("+1.10", "+1.11")
    assert common.fmt_pp(-0.001) == "0.00" == common.fmt_pp(0.004)  # no '-0.00'
    assert common.fmt_pp(-0.005001) == "-0.01"
    assert common.fmt_pp(float("nan")) == "n/a" and common.fmt_pct(None) == "n/a"
    assert common.fmt_p(0.012345) == "0.0123" and common.fmt_p(0.5) == "0.500"
    assert common.fmt_p(1.0) == "1.00" and common.fmt_p(3.2e-7) == "3.20e-07"
    assert common.fmt_int(17341600) == "17,341,600" and common.fmt_int(24.0) == "24"
    assert common.fmt_interval(-0.512, 2.731) == "[-0.51, +2.73]"
    assert common.fmt_interval(float("nan"), 1.0) == "n/a"
    with pytest.raises(ValueError, match="a p-value lies in"):
        common.fmt_p(1.5)
    with pytest.raises(ValueError, match="whole number, got 2.5"):
        common.fmt_int(2.5)


def test_plural_forms():
    assert common.plural(1, "seed") == "1 seed" and common.plural(3, "seed") == "3 seeds"
    assert common.plural(1200, "param") == "1,200 params"


# --------------------------------------------------------------------------- tables
def test_show_table_hides_a_counter_index_and_formats_numbers():
    frame = pd.DataFrame({"model": ["a", "b"], "params": [17341600, 24],
                          "top-1 (%)": [96.666, 90.0], "p": [0.012345, 0.5]})
    html = common.show_table(frame, formats={"p": common.fmt_p}).to_html()
    assert "17,341,600" in html and "96.67" in html and "0.0123" in html
    assert "17341600" not in html and "96.666" not in html
    # no row header cells: the 0..n counter is hidden
    assert "row_heading" not in html
    # a meaningful index is kept, as a column
    named = common.show_table(frame.set_index("model")).to_html()
    assert ">model<" in named and "row_heading" not in named
    # the same table renders the same HTML every time (nbval compares it with the stored one)
    assert common.show_table(frame)._repr_html_() == common.show_table(frame.copy())._repr_html_()


def test_show_table_rejects_bad_input():
    with pytest.raises(ValueError, match="needs a pandas DataFrame, got list"):
        common.show_table([1, 2])
    with pytest.raises(ValueError, match=r"unknown columns \['nope'\]"):
        common.show_table(pd.DataFrame({"a": [1]}), formats={"nope": str})


# --------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("gain, low, high, p, ends", [
    (2.0, 0.5, 3.5, 0.01, "LSLU better than the baseline"),
    (-2.0, -3.5, -0.5, 0.01, "LSLU worse than the baseline"),
    (0.4, -0.8, 1.6, 0.4, "not distinguishable from zero at this budget"),
    (2.0, 0.5, 3.5, 0.2, "not distinguishable from zero at this budget"),  # p disagrees
    (1.1, float("nan"), float("nan"), float("nan"), "no verdict at this budget"),
])
def test_verdict_is_decided_by_the_numbers(gain, low, high, p, ends):
    text = common.verdict(gain, low, high, p)
    assert text.endswith(ends)
    assert text.startswith(f"gain {common.fmt_pp(gain)} pp")


def test_verdict_needs_a_gain():
    with pytest.raises(ValueError, match="verdict needs a measured gain, got nan"):
        common.verdict(float("nan"), 0, 1, 0.5)


# --------------------------------------------------------------------------- figure sizes
def _columns(fig):
    shown = [ax for ax in fig.axes if ax.get_visible()]
    return len({round(ax.get_position().x0, 3) for ax in shown})


@pytest.mark.parametrize("panels", [1, 2, 3, 7])
def test_page_grid_fits_the_column(panels):
    nrows, ncols, (width, height) = plots.page_grid(panels)
    assert ncols <= plots.MAX_COLUMNS and nrows * ncols >= panels
    assert width <= plots.PAGE_WIDTH_IN and 720 / (100 * width) >= 0.6  # shown >= 0.6 scale
    fig = plots.plot_histogram_grid({f"p{i}": {"a": [0.1, 0.3 * i]} for i in range(panels)})
    assert fig.get_size_inches()[0] <= 7.5 and _columns(fig) == min(panels, 2)


def test_summary_figures_fit_the_column():
    comparisons = pd.DataFrame({"comparison": ["a gain", "b gain"], "chapters": ["02", "11"],
                                "gain": [1.0, -0.5], "ci_low": [0.2, np.nan],
                                "ci_high": [1.8, np.nan]})
    fig = summary.plot_comparisons(comparisons, 3.17)
    assert isinstance(fig, Figure) and fig.get_size_inches()[0] <= 7.5
    (bars,) = [c for c in fig.axes[0].containers if hasattr(c, "errorbar")]
    assert bars.errorbar is not None  # every gain drawn with its interval
    wide = pd.DataFrame({"act_fn": [f"a{i}" for i in range(12)], "top1": range(12), "seed": 0})
    assert zoo.plot_seed_dots(wide, "act_fn", "top1").get_size_inches()[0] <= 7.5


# --------------------------------------------------------------------------- the summary
def _gain_row(experiment, quantity, base, lslu, runs):
    return common.Headline(experiment, quantity, round(float(np.mean(lslu) - np.mean(base)), 2),
                           "pp", baseline_values=tuple(base), values=tuple(lslu),
                           runs=tuple(runs)).as_dict()


def _headlines():
    shared = ["r-base-0", "r-base-1", "r-lslu-0", "r-lslu-1"]
    e1 = _gain_row("E1", "LSLU gain, vn on digits", [80.0, 81.0], [83.0, 84.0], shared)
    return {
        "02_cifar10": [e1, {"experiment": "E1", "quantity": "top-1", "ours": 80.5,
                            "paper": "not available", "unit": "%"}],
        "08_convergence": [dict(e1, experiment="E7")],  # the same runs: shown once
        "11_activation_zoo": [_gain_row("beyond", "zoo: lslu gain over series, vn on digits",
                                        [82.0, 82.4, 81.0], [81.9, 81.5, 81.8],
                                        ["z-0", "z-1", "z-2", "z-3", "z-4", "z-5"])],
        "03_cifar100": [{"experiment": "E2", "quantity": "LSLU gain, vn on digits", "ours": 0.7,
                         "paper": "+3.17", "unit": "pp"}],  # saved without per-seed numbers
    }


def test_comparisons_show_shared_runs_once_with_interval_and_p():
    table = summary.comparison_frame(_headlines())
    assert len(table) == 3
    e1 = table[table["experiments"] == "E1, E7"].iloc[0]
    assert e1["chapters"] == "02_cifar10, 08_convergence"
    assert e1["gain"] == pytest.approx(3.0)
    lo, hi = common.bootstrap_interval([80.0, 81.0], [83.0, 84.0])
    assert (e1["ci_low"], e1["ci_high"]) == pytest.approx((lo, hi))
    assert e1["p_value"] == pytest.approx(common.welch_test([80.0, 81.0], [83.0, 84.0])[1])
    assert e1["seeds"] == "2/2" and e1["setting"] == "vn on digits"
    old = table[table["chapters"] == "03_cifar100"].iloc[0]
    assert np.isnan(old["ci_low"]) and "not stored" in old["verdict"]
    shown = summary.comparison_display(table).to_html()
    assert "+3.00" in shown and "row_heading" not in shown


def test_verdict_paragraph_is_computed_and_reconciles_the_same_setting():
    table = summary.comparison_frame(_headlines())
    text = summary.verdict_paragraph(table)
    assert max(map(len, text.split("\n"))) <= common.TEXT_WIDTH
    flat = " ".join(text.split())
    zoo_row = table[table["chapters"] == "11_activation_zoo"].iloc[0]
    assert common.fmt_pp(zoo_row["gain"]) + " pp" in flat
    # the E1 runs and the zoo's runs share the setting "vn on digits": reconciled from numbers
    e1 = table[table["experiments"] == "E1, E7"].iloc[0]
    overlap = e1["ci_low"] <= zoo_row["ci_high"] and zoo_row["ci_low"] <= e1["ci_high"]
    assert ("do not contradict each other" if overlap else "differ by more than seed noise") \
        in flat
    assert "per-seed numbers not stored" in flat
    assert "nothing to conclude" in summary.verdict_paragraph(table.iloc[0:0])


def test_zoo_gain_headline_carries_its_per_seed_evidence():
    frame = pd.DataFrame({"act_fn": ["series", "series", "lslu", "lslu"], "seed": [0, 1, 0, 1],
                          "top1": [90.0, 91.0, 95.0, 95.5], "run_id": ["s0", "s1", "l0", "l1"],
                          "params": 10, "flops": 1e6})
    table = zoo.zoo_summary(frame, "series")
    rows = zoo.zoo_headlines(table, "series", "vn", "digits", [0, 1], frame=frame)
    (gain,) = [r for r in rows if r.unit == "pp"]
    assert gain.baseline_values == (90.0, 91.0) and gain.values == (95.0, 95.5)
    assert gain.runs == ("l0", "l1", "s0", "s1")


def test_trend_table_splits_into_halves_that_fit():
    from lslu.chapters import theta_omega
    table = pd.DataFrame({"model": ["vn"], "seed": [0], "layer": ["s0"], "i": [1],
                          **{f"{k}_{w}": [v] for k in ("theta", "omega")
                             for w, v in (("start", 1.0), ("end", 0.9), ("min", 0.8),
                                          ("max", 1.0))},
                          "theta_trend": ["down-up-stable"], "omega_trend": ["flat"],
                          "matches_claim": [False]})
    whole = theta_omega.trend_display(table)
    theta = theta_omega.trend_display(table, keys=("theta",))
    assert [c for c in theta.columns if "ω" in c] == [] and "θ trend" in theta.columns
    assert len(theta.columns) == len(whole.columns) - 3
    with pytest.raises(ValueError, match="keys must be a non-empty tuple of 'theta', 'omega'"):
        theta_omega.trend_display(table, keys=("phi",))
