"""lslu.plots draws what it should on tiny inputs; lslu.analysis checks used by chapter 01."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from lslu import build_model
from lslu.chapters.lslu_function import SIGN_CASES, closed_form_error, deploy_error, models_per_act_num, move_activation_parameters_, parameter_table, random_images, representative_draws, series_pieces_table, shape_curves
from lslu.chapters.lslu_function import plot_activation_shapes, plot_three_pieces
from lslu.chapters.plots import plot_bars_with_error, plot_curves, plot_histograms
from lslu.chapters.theta_omega import plot_trajectories


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


# ------------------------------------------------------------------------------------ plots
def test_activation_shapes_one_line_per_curve():
    x = np.linspace(-1, 1, 5)
    fig = plot_activation_shapes({"relu": (x, np.maximum(x, 0)), "id": (x, x)})
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["relu", "id"]


def test_activation_shapes_draws_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plot_activation_shapes(shape_curves(SIGN_CASES), ax=ax) is fig
    assert len(ax.lines) == len(SIGN_CASES)


@pytest.mark.parametrize("theta, omega, lines", [
    ([1.0], [0.0], 3),                 # ReLU: series, closed form, p (q is infinite)
    ([-1.0, -1.0], [1.0, 1.0], 4),     # clamp(x, 0, 1): series, closed form, p, q
])
def test_three_pieces_one_panel(theta, omega, lines):
    fig = plot_three_pieces(theta, omega)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == lines
    series, closed = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    np.testing.assert_allclose(series, closed, atol=1e-12)


def test_three_pieces_one_panel_per_draw():
    theta, omega = representative_draws(3, seed=0)
    fig = plot_three_pieces(theta, omega)
    axes = _visible_axes(fig)
    assert len(axes) == theta.shape[0] == 3
    assert all(len(ax.lines) >= 3 for ax in axes)
    assert fig.get_size_inches()[0] <= 7.5  # fits the book's column at 100 dpi
    assert len(plot_three_pieces(theta, omega, ncols=1).axes) == 3
    with pytest.raises(ValueError, match="ncols must be an integer from 1 to 2"):
        plot_three_pieces(theta, omega, ncols=3)


def test_curves_one_line_per_hue_from_frame_and_dict():
    df = pd.DataFrame({"epoch": [2, 1, 0] * 2, "acc": [0.3, 0.2, 0.1, 0.6, 0.5, 0.4],
                       "run": ["a"] * 3 + ["b"] * 3})
    fig = plot_curves(df, "epoch", "acc", hue="run", ylabel="top-1 (%)")
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_xdata()) == [0, 1, 2]  # sorted by x
    assert ax.get_ylabel() == "top-1 (%)"
    fig = plot_curves(df.to_dict("list"), "epoch", "acc")
    assert len(fig.axes[0].lines) == 1


def test_bars_with_error_given_and_aggregated():
    df = pd.DataFrame({"model": ["v5", "v5", "r18", "r18"], "act": ["lslu", "relu"] * 2,
                       "acc": [1.0, 2.0, 3.0, 4.0], "sd": [0.1, 0.2, 0.3, 0.4]})
    fig = plot_bars_with_error(df, "model", "acc", yerr="sd", hue="act")
    (ax,) = fig.axes
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["v5", "r18"]
    runs = pd.concat([df.assign(acc=df.acc + d) for d in (-1.0, 1.0)])  # two seeds per bar
    ax = plot_bars_with_error(runs, "model", "acc", hue="act").axes[0]
    assert len(ax.patches) == 4
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [1.0, 2.0, 3.0, 4.0]  # the means


def test_trajectories_one_panel_per_layer_one_line_per_step():
    history = [{"epoch": e, "theta": {"stem": [1.0, 1.0 - 0.1 * e, 1.0], "s0": [1.0, 0.5, 2.0]}}
               for e in range(4)]
    fig = plot_trajectories(history, "theta")
    axes = _visible_axes(fig)
    assert len(axes) == 2
    assert [len(ax.lines) for ax in axes] == [3, 3]
    assert [ax.get_title() for ax in axes] == ["stem", "s0"]
    assert list(axes[0].lines[1].get_ydata()) == pytest.approx([1.0, 0.9, 0.8, 0.7])


def test_trajectories_hides_unused_panels():
    history = [{"omega": {f"l{i}": [0.0] for i in range(5)}} for _ in range(2)]
    fig = plot_trajectories(history, "omega")
    assert len(fig.axes) == 6 and len(_visible_axes(fig)) == 5  # 3 rows of 2, one hidden
    assert fig.get_size_inches()[0] <= 7.5


def test_histograms_one_per_label():
    rng = np.random.default_rng(0)
    fig = plot_histograms({k: rng.normal(size=50) for k in "abc"}, bins=10, xlabel="selectivity")
    (ax,) = fig.axes
    assert len(ax.patches) == 3
    assert ax.get_xlabel() == "selectivity"


# ---------------------------------------------------------------------------------- analysis
def test_series_pieces_table_known_shapes():
    theta = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [-1.0, 1.0]])
    omega = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    table = series_pieces_table(theta, omega)
    assert table["pieces"].tolist() == [2, 3, 1]      # ReLU, clamp(x, 0, 1), constant 0
    assert table.loc[1, ["c", "s", "p", "q"]].tolist() == [0.0, 1.0, 0.0, 1.0]
    assert table.loc[0, "q"] == math.inf


def test_closed_form_matches_series():
    check = closed_form_error([1, 3], draws=200, seed=0, points=101)
    assert check["max_abs_error"] < 1e-12
    assert sum(check["pieces"].values()) == check["draws"] == 400
    assert set(k for k, v in check["pieces"].items() if v) <= {1, 2, 3}


def test_deploy_error_ours_exact_reference_not():
    torch.manual_seed(0)
    model = build_model("vanillanet_5_x0_25", 10, "lslu", 3)
    move_activation_parameters_(model, seed=0, scale=0.5, input_size=32, batch=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    err = deploy_error(model, random_images(4, 32, seed=1))
    assert err["ours"]["max_rel"] < 1e-4 and err["ours"]["norm_rel"] < 1e-4
    assert err["ours"]["top1_agreement"] == 1.0
    assert err["reference"]["max_rel"] > 1e-3
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is left as it was


def test_move_activation_parameters_is_reproducible():
    def moved(seed):
        torch.manual_seed(0)
        m = build_model("vanillanet_5_x0_25", 10, "lslu", 2)
        return move_activation_parameters_(m, seed=seed, scale=0.5).state_dict()
    a, b, c = moved(3), moved(3), moved(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["stem_act.theta"], c["stem_act.theta"])
    assert not torch.equal(a["stem_act.theta"], torch.ones(2))


def test_parameter_table_flops_grow_with_n():
    table = parameter_table(models_per_act_num("vanillanet_5_x0_25", 10, [1, 2, 3], ("lslu",)),
                            input_size=32)
    for column in ("MFLOPs (train)", "MFLOPs (deploy)", "params (train)", "params (deploy)"):
        assert table[column].is_monotonic_increasing and table[column].is_unique, column
    assert table["kernel"].tolist() == ["3x3", "5x5", "7x7"]
    assert (table["params (deploy)"] < table["params (train)"]).all()
