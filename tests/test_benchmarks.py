"""The speed benchmark runs end to end (its --quick mode: tiny shapes, nothing written) and
compiles the way the engine does; its ratios are not judged here (timings are not tests)."""
import importlib.util
import json
from pathlib import Path

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


def test_gpu_check_smoke_runs_every_part_and_judges_the_training_step_targets(tmp_path):
    """--smoke-cpu: the GPU script's every part on the CPU at tiny sizes, so that the one run a
    lent GPU gets does not fail on the script itself."""
    bench = _load("gpu_check")
    out = tmp_path / "gpu_check.json"
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--smoke-cpu", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
    result = json.loads(out.read_text())
    steps = result["training_steps"]
    assert [(r["size"], r["compiled"]) for r in steps["eager"] + steps["compiled"]] == \
        [(32, False), (64, False), (32, True), (64, True)]
    summary = result["summary"]
    assert summary["correctness_pass"] is True
    for name in bench.TARGETS:                       # every target judged, with its interval
        lo, hi = summary[name]["interval"]
        assert lo <= summary[name]["value"] <= hi and isinstance(summary[name]["pass"], bool)
    assert summary["training_step_eager_lslu_over_series"]["target"] == "<= 1.1"
    assert summary["training_step_compiled_lslu_over_series"]["target"] == "<= 1.03"
