"""Training throughput of the real training path (lslu.train.train on synthetic data).

CPU: vanillanet_5_x0_25 at 32 px, LSLU vs VanillaNet's series activation (ratio in one run).
CUDA: vanillanet_5 at 32 px (50,000 images: one CIFAR-sized epoch) and 224 px, bf16 autocast +
channels_last, eager and torch.compile. The time of the LAST epoch is used (the first one pays
for compilation and warm-up). Goal on a GPU: a CIFAR-sized epoch of VanillaNet-5-LSLU < 2 s.

    python benchmarks/train_throughput.py [--quick]

Writes benchmarks/results/train_throughput_<cpu|cuda>.json. Finishes within 5 minutes.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lslu.train import TrainConfig, hardware_info, train

OUT = Path(__file__).parent / "results"


def measure(results_dir, **overrides) -> dict:
    cfg = TrainConfig(**(dict(dataset="synthetic", optimizer="sgd", lr=0.05, warmup_epochs=0,
                              decay_epochs=0) | overrides))
    t0 = time.perf_counter()
    result = train(cfg, results_dir=results_dir, force=True, progress=False)
    wall = time.perf_counter() - t0
    last = result.history[-1]
    images = cfg.limit // cfg.batch_size * cfg.batch_size
    return {"model": cfg.model, "activation": cfg.resolved_activation, "input_size": cfg.input_size,
            "batch_size": cfg.batch_size, "compile": cfg.compile, "images_per_epoch": images,
            "last_epoch_s": last["epoch_time"], "images_per_s": images / last["epoch_time"],
            "first_epoch_s": result.history[0]["epoch_time"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a check, not a measure)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if not cuda:
            limit = 512 if args.quick else 2048
            for activation in ("series", "lslu"):
                rows.append(measure(tmp, model="vanillanet_5_x0_25", activation=activation,
                                    limit=limit, batch_size=128, epochs=2, device="cpu"))
        else:
            for compile_ in (False, True):
                for activation in ("series", "lslu"):
                    rows.append(measure(tmp, model="vanillanet_5", activation=activation,
                                        limit=50_000, batch_size=512, epochs=3, compile=compile_))
            for activation in ("series", "lslu"):
                rows.append(measure(tmp, model="vanillanet_5", activation=activation,
                                    input_size=224, limit=8192, batch_size=128, epochs=2))
    by = {(r["activation"], r["input_size"], r["compile"]): r for r in rows}
    ratios = {}
    for (act, size, comp), r in by.items():
        if act == "lslu" and ("series", size, comp) in by:
            ratios[f"{size}px{'_compiled' if comp else ''}"] = \
                by[("series", size, comp)]["images_per_s"] / r["images_per_s"]
    report = {"device": "cuda" if cuda else "cpu",
              "hardware": hardware_info(torch.device("cuda" if cuda else "cpu")),
              "torch": torch.__version__, "rows": rows,
              "time_ratio_lslu_over_series": ratios}
    if cuda:
        epoch = [r["last_epoch_s"] for r in rows if r["activation"] == "lslu"
                 and r["input_size"] == 32]
        report["cifar_epoch_s_lslu_best"] = min(epoch)
        report["goal_cifar_epoch_under_2s"] = min(epoch) < 2.0
    for r in rows:
        print(f"{r['model']:>20} {r['activation']:>7} {r['input_size']:>4}px "
              f"compile={r['compile']!s:<5} {r['images_per_s']:>10.0f} img/s "
              f"(epoch {r['last_epoch_s']:.2f} s)")
    for k, v in ratios.items():
        print(f"time ratio LSLU / series at {k}: {v:.3f}")
    OUT.mkdir(exist_ok=True)
    path = OUT / f"train_throughput_{report['device']}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
