"""Chapters 10 (E9 efficiency), 11 (activation zoo) and 12 (results summary): the lslu functions
behind them. Fast: tiny models, no training."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from lslu.chapters import common, efficiency, lslu_function, summary, zoo
from lslu.models import build_model
from lslu.results import ResultsStore


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))


# ------------------------------------------------------------------------------ latency (E9)
def test_measure_latency_gives_ordered_positive_percentiles():
    model = _tiny().train()
    before = [p.detach().clone() for p in model.parameters()]
    out = efficiency.measure_latency(model, batch=2, input_size=16, device="cpu", repeats=5,
                                   warmup=1)
    assert set(out) == {"median_ms", "p10", "p90", "times_ms"} and len(out["times_ms"]) == 5
    assert out["median_ms"] > 0 and out["p10"] > 0
    assert out["p10"] <= out["median_ms"] <= out["p90"]
    # the model itself is neither moved nor switched to eval mode
    assert model.training
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("kwargs", [{"repeats": 0}, {"warmup": -1}, {"batch": 0},
                                    {"input_size": 2.5}])
def test_measure_latency_rejects_bad_settings(kwargs):
    args = {"batch": 1, "input_size": 8, "device": "cpu", "repeats": 2, "warmup": 0} | kwargs
    with pytest.raises(ValueError):
        efficiency.measure_latency(_tiny(), **args)


def test_latency_table_times_every_graph_and_skips_pairs():
    graphs = {("series", "train"): _tiny(), ("lslu", "train"): _tiny()}
    table = efficiency.latency_table(graphs, [8, 16], [1, 2], "cpu", repeats=3, warmup=0,
                                   skip=[[16, 2]])
    assert len(table) == 2 * 3
    assert (16, 2) not in set(zip(table.input_size, table.batch))
    assert (table.p10 <= table.median_ms).all() and (table.median_ms <= table.p90).all()
    ratios = efficiency.latency_ratios(table)
    assert len(ratios) == 3 and (ratios["lslu / series"] > 0).all()
    shown = efficiency.latency_display(table)
    assert "lslu / series" in shown.columns and len(shown) == 3


def test_efficiency_graphs_deploy_is_exact_and_costs_are_counted():
    graphs = efficiency.efficiency_graphs("vanillanet_5_x0_25", 10, ("series", "lslu"), act_num=2)
    x = lslu_function.random_images(2, 32, seed=0)
    with torch.no_grad():
        for act in ("series", "lslu"):
            train, deploy = graphs[(act, "train")](x), graphs[(act, "deploy")](x)
            assert torch.allclose(train, deploy, rtol=1e-4, atol=1e-4)
    costs = efficiency.cost_table(graphs, [32, 64]).set_index(["input_size", "activation"])
    layers = 4  # stem and three stages
    extra = costs.loc[(32, "lslu"), "params (train)"] - costs.loc[(32, "series"), "params (train)"]
    assert extra == 2 * 2 * layers
    assert costs.loc[(32, "lslu"), "MFLOPs (deploy)"] == costs.loc[(32, "series"), "MFLOPs (deploy)"]
    assert costs.loc[(32, "lslu"), "params (deploy)"] < costs.loc[(32, "lslu"), "params (train)"]
    assert costs.loc[(64, "lslu"), "MFLOPs (train)"] > costs.loc[(32, "lslu"), "MFLOPs (train)"]
    assert costs.loc[(32, "lslu"), "kernel"] == "5x5"


def test_efficiency_headlines_flag_the_latency_ratio_as_timing():
    graphs = efficiency.efficiency_graphs("vanillanet_5_x0_25", 10)
    costs = efficiency.cost_table(graphs, [32])
    latency = efficiency.latency_table(graphs, [32], [1], "cpu", repeats=2, warmup=0)
    rows = efficiency.efficiency_headlines(costs, latency, "vanillanet_5_x0_25", "cpu")
    assert {r.experiment for r in rows} == {"E9"}
    assert all(r.paper == "not available" for r in rows)
    timing = [r for r in rows if r.timing]
    assert len(timing) == 1 and "latency" in timing[0].quantity
    assert next(r for r in rows if "extra params" in r.quantity).ours == 2 * 3 * 4


def test_check_efficiency_parameters(tmp_path):
    ok = dict(model="vanillanet_5", num_classes=100, act_num=3, input_sizes=[32, 224],
              batch_sizes=[1, 16], latency_skip=[[224, 16]], repeats=5, warmup=1, device="cpu",
              benchmarks_dir=str(tmp_path))
    assert efficiency.check_efficiency_parameters(**ok) == [(32, 1), (32, 16), (224, 1)]
    bad = [({"model": "resnet18"}, "VanillaNet"), ({"model": "nope"}, "VanillaNet"),
           ({"latency_skip": [[64, 1]]}, "not input_sizes"), ({"input_sizes": [16]}, "32 px"),
           ({"batch_sizes": []}, "non-empty"), ({"repeats": 0}, "repeats"),
           ({"benchmarks_dir": str(tmp_path / "missing")}, "not a folder"),
           ({"device": "tpu"}, "device"),
           ({"latency_skip": [[32, 1], [32, 16], [224, 1], [224, 16]]}, "no \\(input size")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            efficiency.check_efficiency_parameters(**(ok | change))


def test_benchmark_tables(tmp_path):
    assert efficiency.speed_benchmark_table(tmp_path).empty
    assert efficiency.gpu_check_table(tmp_path) is None
    (tmp_path / "activation_speed_cpu.json").write_text(json.dumps({
        "machine": {"device": "cpu", "cpu": "Test CPU", "cpu_count": 2, "torch_threads": 2},
        "summary": {"eager_lslu_over_series": {"value": 1.0712, "interval": [1.0512, 1.0889],
                                               "target": "<= 1.25", "pass": True},
                    "training_ratio": 0.998}}))
    (tmp_path / "gpu_check.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H200"}, "correctness": [{"pass": True}],
        "summary": {"correctness_pass": True,
                    "training_step_eager_lslu_over_series": {
                        "value": 1.1234, "interval": [1.101, 1.142], "target": "<= 1.1",
                        "pass": False}}}))
    speed = efficiency.speed_benchmark_table(tmp_path)
    assert list(speed["value"]) == [1.07, 1.0]
    assert list(speed["verdict"]) == ["pass", ""]
    assert list(speed["90% interval"]) == ["1.05 to 1.09", ""]
    assert speed["machine"].iloc[0] == "cpu: Test CPU, 2 cores, 2 threads"
    gpu = efficiency.gpu_check_table(tmp_path).set_index("ratio")
    assert gpu.loc["correctness pass", "value"] is True
    step = gpu.loc["training step eager lslu over series"]
    assert (step["value"], step["90% interval"], step["verdict"]) == (1.12, "1.10 to 1.14", "FAIL")
    assert step["machine"] == "cuda: NVIDIA H200"
    with pytest.raises(ValueError, match="does not exist"):
        efficiency.speed_benchmark_table(tmp_path / "missing")


def test_launch_count_table(tmp_path):
    assert efficiency.launch_count_table(tmp_path) is None
    (tmp_path / "launch_count.json").write_text(json.dumps({
        "target_ratio_tensor_path": 1.3,
        "rows": [{"model": "m", "path": "tensor", "activation": "lslu_per_channel", "ops": 130,
                  "series_ops": 100, "ratio": 1.3, "meets_target": True},
                 {"model": "m", "path": "fast", "activation": "lslu", "ops": 117,
                  "series_ops": 100, "ratio": 1.17, "meets_target": True}]}))
    table = efficiency.launch_count_table(tmp_path)
    assert list(table["LSLU form"]) == ["per channel", "per layer"]
    assert list(table["ratio"]) == [1.3, 1.17]
    assert list(table["target"]) == ["<= 1.3", ""]  # the target is for the tensor path only


def test_latency_ratio_interval_and_verdict():
    times = {"series": [1.0, 1.1, 1.2, 1.0, 1.1], "lslu": [2.0, 2.2, 2.4, 2.0, 2.2]}
    table = pd.DataFrame([{"activation": a, "graph": "deploy", "input_size": 32, "batch": 1,
                           "median_ms": float(pd.Series(t).median()), "p10": min(t),
                           "p90": max(t), "times_ms": t} for a, t in times.items()])
    ratio = efficiency.latency_ratios(table).iloc[0]
    assert ratio["lslu / series"] == pytest.approx(2.0) and ratio["lo"] > 1
    assert ratio["verdict"] == "lslu slower than series"
    shown = efficiency.latency_display(table).iloc[0]
    assert shown["verdict"] == "lslu slower than series"
    table["times_ms"] = [[1.0, 1.2, 1.1, 1.0, 1.2], [1.2, 1.0, 1.1, 1.2, 1.0]]
    assert efficiency.latency_ratios(table).iloc[0]["verdict"] == \
        "no difference measurable at this precision"


def test_plot_latency_and_seed_dots():
    table = pd.DataFrame([{"activation": a, "graph": g, "input_size": 32, "batch": 1,
                           "median_ms": 2.0, "p10": 1.5, "p90": 3.0}
                          for a in ("series", "lslu") for g in ("train", "deploy")])
    assert isinstance(efficiency.plot_latency(table), Figure)
    frame = pd.DataFrame({"act_fn": ["relu", "relu", "lslu", "lslu"], "seed": [0, 1, 0, 1],
                          "top1": [90.0, 91.0, 92.0, 93.0]})
    fig = zoo.plot_seed_dots(frame, "act_fn", "top1", order=["lslu", "relu"], highlight=["lslu"])
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["lslu", "relu"]


# ------------------------------------------------------------------------------- the zoo
BASE = {"dataset": "digits", "epochs": 2}


def test_zoo_configs_share_the_baseline_run():
    configs = zoo.zoo_configs(BASE, "vanillanet_5_x0_25", ["relu", "series", "lslu"],
                                      [0, 1], "series")
    assert [(c.activation, c.seed) for c in configs] == [
        ("relu", 0), ("relu", 1), (None, 0), (None, 1), ("lslu", 0), ("lslu", 1)]
    # the baseline is the very run "with vs without LSLU" trains (same run id, from the store)
    shared = common.grid(BASE, model=["vanillanet_5_x0_25"], activation=[None, "lslu"],
                              seed=[0])
    assert {c.run_id for c in shared} <= {c.run_id for c in configs}
    assert zoo.activation_setting("resnet18", "relu") is None
    assert zoo.activation_setting("resnet18", "series") == "series"


@pytest.mark.parametrize("activations, seeds, reference, message", [
    (["relu", "lslu"], [0], "series", "not among"),
    (["relu", "relu"], [0], "relu", "duplicates"),
    ([], [0], "relu", "non-empty"),
    (["relu"], [], "relu", "non-empty"),
    (["gelu"], [0], "gelu", "unknown activation"),
])
def test_zoo_configs_reject_bad_parameters(activations, seeds, reference, message):
    with pytest.raises(ValueError, match=message):
        zoo.zoo_configs(BASE, "vanillanet_5_x0_25", activations, seeds, reference)


def _zoo_frame():
    rows = []
    for act, values in {"series": [90.0, 91.0], "lslu": [95.0, 95.5], "relu": [80.0, 81.0]}.items():
        for seed, v in enumerate(values):
            rows.append({"act_fn": act, "seed": seed, "top1": v, "params": 100, "flops": 2e6})
    return pd.DataFrame(rows)


def test_zoo_summary_ranks_and_compares_with_the_reference():
    summary = zoo.zoo_summary(_zoo_frame(), "series")
    assert summary["act_fn"].tolist() == ["lslu", "series", "relu"]
    by = summary.set_index("act_fn")
    assert by.loc["series", "gain"] == 0.0 and by.loc["series", "significant"] is None
    assert by.loc["lslu", "gain"] == pytest.approx(4.75)
    assert by.loc["relu", "gain"] == pytest.approx(-10.0)
    shown = zoo.zoo_display(summary, "series")
    assert shown.loc[1, "activation"] == "lslu" and shown.loc[1, "top-1 (%)"] == "95.25 ± 0.35"
    assert shown.loc[2, "Welch p"] == "ref."
    rows = zoo.zoo_headlines(summary, "series", "vanillanet_5_x0_25", "digits", [0, 1])
    by_q = {r.quantity.split(",")[0]: r.ours for r in rows}
    assert by_q["zoo: rank of lslu"] == "1 of 3"
    assert by_q["zoo: lslu gain over series"] == 4.75
    assert all(r.paper == "not available" for r in rows)


def test_power_note_is_computed_from_the_seeds():
    note = zoo.power_note([0, 1])
    assert note.startswith("2 seeds") and "12.71" in note and "4.30" in note
    assert "3 distinct means" in note
    assert "n/a" in zoo.power_note([0])


# --------------------------------------------------------------------------- the summary
def test_load_headlines_says_what_to_run_when_there_are_none(tmp_path):
    with pytest.raises(RuntimeError, match=r"run the other notebooks first: "
                                           r"python -m lslu\.book execute --profile smoke"):
        summary.load_headlines("smoke", tmp_path)
    ResultsStore(tmp_path).save_headline("fast", "02_x", [], parameters={"profile": "fast"})
    with pytest.raises(RuntimeError, match="profile 'smoke'"):
        summary.load_headlines("smoke", tmp_path)


def test_headline_frame_orders_flags_and_checks_rows(tmp_path):
    common.save_headline("smoke", "10_efficiency", [
        {"experiment": "E9", "quantity": "deploy params", "ours": 11.84, "paper": "not available",
         "unit": "M"},
        {"experiment": "E9", "quantity": "latency ratio", "ours": 1.03, "paper": "not available",
         "unit": "ratio", "timing": True}], tmp_path, parameters={"profile": "smoke"})
    common.save_headline("smoke", "03_cifar100", [
        {"experiment": "E2", "quantity": "LSLU gain", "ours": 1.234, "paper": "+3.17",
         "unit": "pp"},
        {"experiment": "E2", "quantity": "seconds", "ours": 12, "paper": "not available",
         "unit": "s"}], tmp_path, parameters={"profile": "smoke"})
    common.save_headline("smoke", "11_activation_zoo", [
        {"experiment": "beyond", "quantity": "best", "ours": "lslu (95.0%)",
         "paper": "not available", "unit": ""}], tmp_path, parameters={"profile": "smoke"})
    frame = summary.headline_frame(summary.load_headlines("smoke", tmp_path))
    assert frame["experiment"].tolist() == ["E2", "E2", "E9", "E9", "beyond"]
    assert frame["timing"].tolist() == [False, True, False, True, False]
    stable = summary.headline_display(frame, timing=False)
    assert stable["ours"].tolist() == ["1.23", "11.84", "lslu (95.0%)"]
    assert summary.headline_display(frame, timing=True)["ours"].tolist() == ["12", "1.03"]
    assert summary.experiments_without_headline(frame) == [
        "E1", "E3", "E4", "E5", "E6", "E7", "E8"]


@pytest.mark.parametrize("row, message", [
    ({"experiment": "E1", "quantity": "top-1", "ours": 90.0, "paper": "75.6", "unit": "%"},
     "allowed: 'not available' or a number of"),
    ({"experiment": "E1", "quantity": "top-1", "ours": 90.0, "paper": "not public", "unit": "%"},
     "allowed: 'not available'"),
    ({"experiment": "E1", "quantity": "top-1", "ours": 90.0, "unit": "%"}, "lacks"),
])
def test_headline_frame_rejects_invented_paper_values_and_bad_rows(row, message):
    with pytest.raises(ValueError, match=message):
        summary.headline_frame({"02_cifar10": [row]})
