"""Chapters 04 (E3: number of activations n), 05 (E4: θ/ω dynamics) and 06 (E5: dropout):
the lslu functions they call, on hand-made trajectories and RunResults, plus one tiny run."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from lslu.chapters import common, dropout, sweeps, theta_omega
from lslu.results import RunResult
from lslu.train import TrainConfig, train


# --------------------------------------------------------------------------- classify_trend
@pytest.mark.parametrize("values, label", [
    ([1.0, 1.0, 1.0, 1.0], "flat"),
    ([1.0, 1.0004, 0.9998, 1.0003], "flat"),                      # range below 1e-3
    ([0.0, 0.1, 0.2, 0.3, 0.4], "monotone up"),
    ([1.0, 0.8, 0.6, 0.6, 0.6], "monotone down"),                 # falls, then stable: one move
    ([1.0, 0.9, 0.8, 0.85, 0.95, 0.96, 0.96], "down-up-stable"),  # the abstract's θ
    ([0.0, 0.1, 0.2, 0.15, 0.05, 0.04, 0.04], "up-down-stable"),  # the abstract's ω
    ([1.0, 0.8, 0.6, 0.7, 0.8, 0.9], "down-up"),                  # still rising at the end
    ([0.0, 0.2, 0.4, 0.3, 0.2, 0.1], "up-down"),
    ([0.0, 1.0, 0.0, 1.0, 0.0], "other"),
])
def test_classify_trend_labels(values, label):
    assert theta_omega.classify_trend(values) == label
    assert label in theta_omega.TREND_LABELS


def test_classify_trend_ignores_wiggles_below_the_tolerance():
    # a 2% dip on a rise of 1.0 is not a move at tolerance 0.1, but is one at 0.01
    values = [0.0, 0.5, 0.48, 1.0]
    assert theta_omega.classify_trend(values, tolerance=0.1) == "monotone up"
    assert theta_omega.classify_trend(values, tolerance=0.01) == "other"


def test_classify_trend_is_relative_to_the_range():
    base = np.array([1.0, 0.9, 0.8, 0.85, 0.95, 0.96, 0.96])
    for scale in (0.01, 1.0, 100.0):
        assert theta_omega.classify_trend(1 + scale * (base - 1)) == "down-up-stable"


def test_classify_trend_stable_window():
    values = [1.0, 0.5, 0.0, 0.5, 0.88, 0.98, 1.0]
    # range 1, so the stability threshold is 0.1: the last 2 steps span 0.12 (still
    # moving), the last step alone 0.02 (stable)
    assert theta_omega.classify_trend(values, stable_epochs=2) == "down-up"
    assert theta_omega.classify_trend(values, stable_epochs=1) == "down-up-stable"


@pytest.mark.parametrize("kwargs", [dict(tolerance=0.0), dict(tolerance=1.0),
                                    dict(tolerance=True), dict(stable_epochs=0),
                                    dict(stable_epochs=1.5), dict(flat=-1.0)])
def test_classify_trend_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        theta_omega.classify_trend([0.0, 1.0, 2.0], **kwargs)


def test_classify_trend_rejects_bad_values():
    with pytest.raises(ValueError, match="at least 2"):
        theta_omega.classify_trend([1.0])
    with pytest.raises(ValueError, match="finite"):
        theta_omega.classify_trend([1.0, math.nan, 2.0])


def test_check_trend_parameters_epochs():
    theta_omega.check_trend_parameters(0.1, 2, epochs=2)
    with pytest.raises(ValueError, match="must not exceed"):
        theta_omega.check_trend_parameters(0.1, 3, epochs=2)


def test_trend_moves():
    assert theta_omega.trend_moves([0, 1, 0, 1], 0.5) == ["up", "down", "up"]
    assert theta_omega.trend_moves([0, 0.4, 0.1, 0.45], 0.5) == []
    with pytest.raises(ValueError):
        theta_omega.trend_moves([0, 1], 0.0)


# --------------------------------------------------------------- hand-made RunResults for E4
def _result(theta, omega, model="vanillanet_5_x0_25", decay_epochs=2, frozen=False, seed=0,
            accs=None):
    """A RunResult whose history holds the given per-epoch θ/ω: theta[layer] = (epochs, n)."""
    epochs = len(next(iter(theta.values())))
    accs = accs or [0.5 + 0.1 * e for e in range(epochs)]
    history = []
    for e in range(epochs):
        lam = 1.0 if decay_epochs <= 0 else min(1.0, e / decay_epochs)
        history.append({"epoch": e + 1, "train_loss": 1.0 / (e + 1), "val_loss": 1.0 / (e + 1),
                        "val_acc": accs[e], "val_acc_ema": None, "lr": 1e-3, "lam": lam,
                        "epoch_time": 1.0,
                        "theta": {k: list(map(float, v[e])) for k, v in theta.items()},
                        "omega": {k: list(map(float, v[e])) for k, v in omega.items()}})
    config = TrainConfig(model=model, decay_epochs=decay_epochs, epochs=epochs, seed=seed,
                         freeze_activation=frozen).to_dict()
    final = {"val_acc": accs[-1], "best_val_acc": max(accs), "val_acc_ema": None,
             "val_loss": 0.1, "train_loss": 0.1, "epochs_run": epochs, "stopped_early": False,
             "num_classes": 10, "train_time_s": float(epochs), "images_per_s": 1.0}
    return RunResult(run_id=f"hand{seed}{int(frozen)}{model}", config=config, history=history,
                     final=final, params=100, params_deploy=90, flops=1000)


# θ after epochs 1..6 (the init 1 comes first): down, up, stable; ω the mirror image
CLAIM_THETA = [[0.9, 1.2], [0.8, 1.4], [0.9, 1.6], [0.98, 1.8], [0.98, 2.0], [0.98, 2.2]]
CLAIM_OMEGA = [[0.1, 0.0], [0.2, 0.0], [0.1, 0.0], [0.02, 0.0], [0.02, 0.0], [0.02, 0.0]]


def test_trend_table_on_a_hand_made_run():
    # stored results keep layers sorted by name; the table puts the stem first
    r = _result({"stages.0.act": [[1.0, 1.0]] * 6, "stem_act": CLAIM_THETA},
                {"stages.0.act": [[0.0, 0.0]] * 6, "stem_act": CLAIM_OMEGA})
    table = theta_omega.trend_table(r)
    assert list(table["layer"]) == ["stem_act", "stem_act", "stages.0.act", "stages.0.act"]  # stem first
    assert list(table["i"]) == [1, 2, 1, 2]
    assert list(table["theta_trend"]) == ["down-up-stable", "monotone up", "flat", "flat"]
    assert list(table["omega_trend"]) == ["up-down-stable", "flat", "flat", "flat"]
    assert list(table["matches_claim"]) == [True, False, False, False]
    assert table.loc[0, "theta_start"] == 1.0 and table.loc[0, "omega_start"] == 0.0  # the init
    assert table.loc[0, "theta_min"] == pytest.approx(0.8)
    summary = theta_omega.trend_summary(table)
    assert summary["pairs"] == 4 and summary["matching"] == 1
    assert summary["fraction"] == pytest.approx(0.25)
    assert summary["theta_labels"]["flat"] == 2
    shown = theta_omega.trend_display(table)
    assert shown.loc[0, "θ: start → end"] == "1.000 → 0.980"
    assert theta_omega.trend_display(table.assign(omega_end=-0.0001)).loc[0, "ω: start → end"] \
        == "0.000 → 0.000"
    assert theta_omega.trend_display(table.assign(omega_end=-0.001)).loc[0, "ω: start → end"] \
        == "0.000 → -0.001"
    assert shown.loc[0, "matches the abstract"] == "yes"


def test_trend_table_without_the_initial_value():
    r = _result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA})
    table = theta_omega.trend_table(r, include_init=False)
    assert table.loc[0, "theta_start"] == pytest.approx(0.9)
    assert table.loc[0, "theta_trend"] == "down-up-stable"


def test_activation_history_and_ramp_end():
    r = _result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA}, decay_epochs=2)
    history = theta_omega.activation_history(r)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5, 6]
    assert history[0]["theta"] == {"a": [1.0, 1.0]} and history[0]["omega"] == {"a": [0.0, 0.0]}
    assert len(theta_omega.activation_history(r, include_init=False)) == 6
    assert theta_omega.lambda_ramp_end(r) == 2  # epochs 1 and 2 ramp, λ = 1 from epoch 3 on
    assert theta_omega.lambda_ramp_end(_result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA},
                                            decay_epochs=0)) is None
    assert theta_omega.lambda_ramp_end(_result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA},
                                            decay_epochs=9)) is None  # never reaches 1
    assert theta_omega.lambda_ramp_end(_result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA},
                                            model="resnet18")) is None


def test_activation_history_needs_lslu_layers():
    r = _result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA})
    for h in r.history:
        h["theta"], h["omega"] = {}, {}
    with pytest.raises(ValueError, match="no LSLU layer"):
        theta_omega.activation_history(r)


def test_frozen_check_and_learnable_vs_frozen_curves():
    learn = _result({"a": CLAIM_THETA}, {"a": CLAIM_OMEGA}, accs=[0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    frozen = _result({"a": [[1.0, 1.0]] * 6}, {"a": [[0.0, 0.0]] * 6}, frozen=True,
                     accs=[0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert theta_omega.is_frozen_at_init(frozen) and not theta_omega.is_frozen_at_init(learn)
    curves = theta_omega.learnable_vs_frozen_curves([learn, frozen])
    assert set(curves["variant"]) == {"learnable θ, ω", "frozen θ, ω"}
    last = curves[curves["epoch"] == 6].set_index("variant")["val_acc"]
    assert last["learnable θ, ω"] == pytest.approx(90.0)
    assert last["frozen θ, ω"] == pytest.approx(80.0)
    assert (curves["seeds"] == 1).all()


def test_learnable_vs_frozen_lines_test_the_gain_over_seeds():
    flat = {"a": [[1.0]] * 2}
    zero = {"a": [[0.0]] * 2}
    runs = [_result(flat, zero, frozen=frozen, seed=seed, accs=[0.5, final])
            for frozen, finals in ((False, (0.90, 0.91, 0.92)), (True, (0.80, 0.81, 0.82)))
            for seed, final in enumerate(finals)]
    table = theta_omega.learnable_vs_frozen_table(runs)
    shown = theta_omega.learnable_vs_frozen_display(table).set_index("θ, ω")
    assert shown.loc["learnable θ, ω", "gain over frozen (pp)"] == "+10.00"
    assert shown.loc["frozen θ, ω", "gain over frozen (pp)"] == ""
    frozen_line, learnable_line = sorted(theta_omega.learnable_vs_frozen_lines(table))
    assert frozen_line == "vanillanet_5_x0_25, frozen θ, ω: 81.00% top-1"
    assert learnable_line.startswith("vanillanet_5_x0_25, learnable θ, ω: 91.00% top-1; gain "
                                     "+10.00 pp, 95% interval")
    assert learnable_line.endswith(": learnable better than frozen")
    # the summary's headline carries the per-seed top-1 of both arms (frozen first)
    claim = {"fraction": 0.0}
    rows = theta_omega.trend_headline_rows(claim, table, "vanillanet_5_x0_25", "digits",
                                           results=runs)
    gain = next(r for r in rows if r.unit == "pp")
    assert gain.ours == 10.0 and len(gain.runs) == 6
    assert gain.baseline_values == pytest.approx((80.0, 81.0, 82.0))
    assert gain.values == pytest.approx((90.0, 91.0, 92.0))
    bare = theta_omega.trend_headline_rows(claim, table, "vanillanet_5_x0_25", "digits")
    assert next(r for r in bare if r.unit == "pp").values is None
    # one seed each: a gain, no interval, no verdict
    one = theta_omega.learnable_vs_frozen_lines(theta_omega.learnable_vs_frozen_table(
        [runs[0], runs[3]]))
    assert any(line.endswith("no verdict at this budget") for line in one)


def test_trajectory_plot_with_the_ramp_marked():
    r = _result({"a": CLAIM_THETA, "b": CLAIM_THETA}, {"a": CLAIM_OMEGA, "b": CLAIM_OMEGA})
    fig = theta_omega.plot_trajectories(theta_omega.activation_history(r), "theta")
    fig = theta_omega.mark_epoch(fig, theta_omega.lambda_ramp_end(r))
    assert isinstance(fig, Figure)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    for ax in visible:
        assert any(list(line.get_xdata()) == [2, 2] for line in ax.get_lines())
    assert "end of the λ ramp" in [t.get_text() for t in visible[0].get_legend().get_texts()]
    assert theta_omega.mark_epoch(fig, None) is fig


# ------------------------------------------------------------------------- E5: dropout sites
def test_dropout_sites():
    vanilla = dropout.dropout_sites("vanillanet_5_x0_25", drop_rate=0.3)
    assert list(vanilla["module"]) == ["dropout"] and vanilla.loc[0, "p"] == 0.3
    resnet = dropout.dropout_sites("resnet18", drop_rate=0.3)
    assert len(resnet) == 8 and set(resnet["inside"]) == {f"layers.{i}" for i in range(8)}


# ------------------------------------------------------------------------- E3 / E5: sweeps
def _sweep_frame():
    rows = []
    for model, accs in (("m1", {1: [90.0, 92.0], 3: [95.0, 95.0], 2: [93.0, 93.0]}),
                        ("m2", {1: [80.0, 80.0], 2: [70.0, 72.0], 3: [80.0, 80.0]})):
        for n, values in accs.items():
            for seed, acc in enumerate(values):
                rows.append({"model": model, "act_num": n, "seed": seed, "top1": acc,
                             "params": 100 * n, "params_deploy": 90 * n, "flops": 2e6 * n})
    return pd.DataFrame(rows)


def test_sweep_table_and_best_levels():
    table = sweeps.sweep_table(_sweep_frame(), "act_num")
    assert list(table["model"]) == ["m1"] * 3 + ["m2"] * 3
    assert list(table["act_num"]) == [1, 2, 3, 1, 2, 3]
    assert list(table["kernel"]) == ["3x3", "5x5", "7x7"] * 2
    assert table.loc[0, "top1_mean"] == pytest.approx(91.0)
    assert table.loc[0, "top1_std"] == pytest.approx(math.sqrt(2))
    assert table.loc[2, "mflops"] == pytest.approx(6.0)
    best = sweeps.best_levels(table, "act_num").set_index("model")
    assert best.loc["m1", "best act_num"] == 3 and best.loc["m1", "worst act_num"] == 1
    assert best.loc["m1", "spread"] == pytest.approx(4.0)
    assert best.loc["m2", "best act_num"] == 1  # a tie between 1 and 3: the smaller n
    assert best.loc["m2", "worst act_num"] == 2 and best.loc["m2", "levels"] == 3
    shown = sweeps.sweep_display(table, "act_num", "n")
    assert list(shown.columns[:3]) == ["model", "n", "depthwise kernel"]
    assert shown.loc[0, "top-1 (%)"] == "91.0 ± 1.4"


def test_sweep_table_other_axis_has_no_kernel_and_one_seed_has_no_std():
    frame = _sweep_frame().rename(columns={"act_num": "drop_rate"})
    frame = frame[frame["seed"] == 0]
    frame["drop_rate"] = frame["drop_rate"] / 10
    table = sweeps.sweep_table(frame, "drop_rate")
    assert "kernel" not in table and table["top1_std"].isna().all()
    shown = sweeps.sweep_display(table, "drop_rate", "dropout")
    assert shown.loc[0, "top-1 (%)"] == "90.0"
    fig = sweeps.plot_sweep(table, "drop_rate")
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.1", "0.2", "0.3"]


def test_plot_sweep_draws_error_bars_with_seeds():
    table = sweeps.sweep_table(_sweep_frame(), "act_num")
    fig = sweeps.plot_sweep(table, "act_num", title="t")
    ax = fig.axes[0]
    assert len(ax.containers) == 2  # one errorbar container per model
    assert all(c.has_yerr for c in ax.containers)


@pytest.mark.parametrize("values", [[], 3, [1, 1], (0.0, 0.0)])
def test_check_sweep_levels_rejects(values):
    with pytest.raises(ValueError):
        common.check_sweep_levels("act_nums", values)


def test_check_sweep_levels_accepts():
    assert common.check_sweep_levels("drop_rates", (0.0, 0.3)) == [0.0, 0.3]


def test_sweep_grids_validate_bad_values():
    base = common.base_config(dataset="digits", epochs=1)
    with pytest.raises(ValueError, match="act_num"):
        common.grid(base, model=["resnet18"], activation=["lslu"], act_num=[0])
    with pytest.raises(ValueError, match="drop_rate"):
        common.grid(base, model=["resnet18"], activation=["lslu"], drop_rate=[1.5])


# ------------------------------------------------------------------------------ one tiny run
def test_frozen_run_keeps_theta_omega_at_init(tmp_path):
    cfg = TrainConfig(model="vanillanet_5_x0_25", activation="lslu", act_num=1, dataset="digits",
                      limit=128, epochs=1, batch_size=32, freeze_activation=True, decay_epochs=1)
    result = train(cfg, results_dir=tmp_path, progress=False)
    assert theta_omega.is_frozen_at_init(result)
    table = theta_omega.trend_table(result)
    assert set(table["theta_trend"]) == {"flat"} and set(table["omega_trend"]) == {"flat"}
    assert len(table) == 4  # VanillaNet-5: the stem's LSLU and one per stage, n = 1 each
    assert theta_omega.lambda_ramp_end(result) is None  # one epoch at λ = 0: the ramp never ends


def test_best_display_is_narrow_with_the_shared_rounding():
    table = sweeps.sweep_table(_sweep_frame(), "act_num")
    shown = sweeps.best_display(sweeps.best_levels(table, "act_num"), "act_num", "n",
                                levels_label="values of n")
    assert shown.columns.tolist() == ["model", "best n", "best top-1 (%)", "worst n",
                                      "worst top-1 (%)", "spread (pp)", "values of n"]
    m1 = shown.iloc[0]
    assert (m1["best n"], m1["worst n"], m1["spread (pp)"], m1["values of n"]) == \
        ("3", "1", "+4.00", 3)
    assert m1["best top-1 (%)"] == common.fmt_pct(table["top1_mean"].iloc[2])
    frame = _sweep_frame().rename(columns={"act_num": "drop_rate"}).assign(act_fn="lslu")
    frame["drop_rate"] = frame["drop_rate"] / 10
    best = sweeps.best_levels(sweeps.sweep_table(frame, "drop_rate", group=["model", "act_fn"]),
                              "drop_rate", group=["model", "act_fn"])
    shown = sweeps.best_display(best, "drop_rate", "dropout", group=["model", "act_fn"])
    assert shown.columns[:3].tolist() == ["model", "activation", "best dropout"]
    assert shown["worst dropout"].tolist() == ["0.1", "0.2"]


def test_dropout_sites_follow_the_placement():
    ours = dropout.dropout_sites("resnet18", drop_rate=0.05)
    ref = dropout.dropout_sites("resnet18", drop_rate=0.05, placement="reference")
    assert "(model)" not in set(ours["inside"])  # ours has no head dropout
    assert len(ref) == 9 and "(model)" in set(ref["inside"])  # 8 blocks + before the fc
