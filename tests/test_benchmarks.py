"""The speed benchmark runs end to end (its --quick mode: tiny shapes, nothing written) and
compiles the way the engine does; its ratios are not judged here (timings are not tests)."""
import importlib.util
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
        entry = summary[name]
        assert entry["value"] > 0 and isinstance(entry["pass"], bool), name
    assert summary["compiled_inductor_default_lslu_over_series"] > 0
    assert result["training_compiled"]["compiled"] and not result["training"]["compiled"]
    assert summary["training_compiled_lslu_over_series_images_per_s"] > 0
