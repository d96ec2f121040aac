"""The speed benchmark runs end to end (its --quick mode: tiny shapes, nothing written) and
compiles the way the engine does; its ratios are not judged here (timings are not tests)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from lslu.train import compile_options

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_activation_speed_quick_compiles_as_the_engine(tmp_path, monkeypatch):
    bench = _load("activation_speed")
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    threads = torch.get_num_threads()
    try:
        result = bench.main(["--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    assert list(tmp_path.iterdir()) == []                      # --quick writes nothing
    engine, default = result["compiled"], result["compiled_inductor_default"]
    assert engine and default
    assert all(r["inductor_options"] == compile_options("cpu") for r in engine)
    assert all(r["inductor_options"] == {} for r in default)
    summary = result["summary"]
    for name in bench.TARGETS:
        assert isinstance(summary[name]["pass"], bool), name
    for name, entry in summary.items():                # a ratio inside its own interval
        lo, hi = entry["interval"]
        assert 0 < lo <= entry["value"] <= hi, name
    assert result["training_compiled"]["compiled"] and not result["training"]["compiled"]
    assert "training_compiled_lslu_over_series_images_per_s" in summary


def test_paired_ratio_is_the_median_of_per_round_ratios():
    bench = _load("activation_speed")
    # round 3 ran under load for both modules: its ratio is 1.1 like the others, while the
    # ratio of the medians (2.2 / 2.0) would not see the pairing
    times = {"lslu": np.array([1.1, 2.2, 22.0, 1.21, 2.2]),
             "series": np.array([1.0, 2.0, 20.0, 1.1, 2.0])}
    value, (lo, hi) = bench.paired(times, "lslu", "series")
    assert value == pytest.approx(1.1) and lo == pytest.approx(1.1) and hi == pytest.approx(1.1)
    rows = [{"r": 1.2, "r_interval": [1.1, 1.3]}, {"r": 0.9, "r_interval": [0.8, 1.0]}]
    assert bench.worst(rows, "r", "<=") == {"value": 1.2, "interval": [1.1, 1.3]}
    assert bench.worst(rows, "r", ">=") == {"value": 0.9, "interval": [0.8, 1.0]}
