"""Kernel launches of one training step: LSLU against VanillaNet's series activation.

On a GPU every ATen operation that does work is a kernel launch, and small models at 32 px are
launch-bound, so this count says on any CPU what an eager GPU step of LSLU costs relative to the
baseline (lslu.profiling explains what is counted).  Two paths:

  tensor path  what CUDA, torch.compile and tracing run (LSLU_CPU_FAST_PATH=0 on a CPU)
  fast path    eager on the CPU: per-layer LSLU reads theta/omega on the host

Target (issue "Speed where the paper's runs happen"): LSLU / series <= 1.3 on the tensor path,
per layer and per channel.  Deterministic: no timing, one run is enough.

    python benchmarks/launch_count.py        # about 10 s; writes benchmarks/results/launch_count.json
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lslu.profiling import training_step_ops

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("vanillanet_5_x0_25", "vanillanet_5")
ACTIVATIONS = ("series", "lslu", "lslu_per_channel")
TARGET = 1.3


def main() -> None:
    rows = []
    for model in MODELS:
        for fast_path in (False, True):
            counts = {a: training_step_ops(model, a, fast_path=fast_path) for a in ACTIVATIONS}
            for activation in ACTIVATIONS[1:]:
                ratio = counts[activation] / counts["series"]
                rows.append({"model": model, "path": "fast" if fast_path else "tensor",
                             "activation": activation, "ops": counts[activation],
                             "series_ops": counts["series"], "ratio": round(ratio, 4),
                             "meets_target": ratio <= TARGET})
                print(f"{model:>20} {rows[-1]['path']:>6} {activation:>17}: {counts[activation]:4d}"
                      f" ops vs {counts['series']:4d} (series) = {ratio:.3f}x")
    report = {"what": "kernel-launching ATen ops of one training step (forward + backward), "
                      "batch 8, 32 px, channels_last; see lslu/profiling.py",
              "target_ratio_tensor_path": TARGET, "torch": torch.__version__, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "launch_count.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
