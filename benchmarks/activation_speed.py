"""Speed of LSLU against VanillaNet's series activation and the naive 3n+1-pass series.

Everything is measured in ONE process, modules interleaved round-robin: CPU timings swing with
background load, so only ratios measured side by side mean anything.  A ratio is the median over
rounds of the per-round ratio (the calls of one round share the machine's load, so drift between
rounds cancels), with a 90% bootstrap interval over the rounds; per-module times are medians.

Ratios and targets (issue "Speed"; worst case over the shapes and memory layouts):
  eager  forward+backward  LSLU / series        <= 1.25
  eager  forward+backward  naive / LSLU         >= 1.30
  compiled (torch.compile) LSLU / series        <= 1.05   (compiled as lslu.train compiles)
  deployed VanillaNet-5 batch-1 latency  LSLU / series <= 1.05
and, reported without a target: per-channel LSLU, the elementwise g alone (fwd+bwd, without the
depthwise conv and BN that dominate the module's time), the compiled ratio with torch.compile's
default inductor options, training images/s of vanillanet_5_x0_25 (eager and compiled).

    python benchmarks/activation_speed.py             # full run (about 5 minutes on 2 CPU cores)
    python benchmarks/activation_speed.py --quick     # a smoke run (seconds; results not written)

Writes benchmarks/results/activation_speed_<device>.json (device: cpu or cuda).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# On a small shared machine, OpenMP's default spin-waiting makes every parallel region wait for a
# descheduled worker (we saw 180 ms for a forward+backward that takes 0.6 ms with passive
# waiting).  Must be set before torch starts its thread pool; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lslu.activations import LSLU, SeriesActivation, naive_series  # noqa: E402
from lslu.models import build_model  # noqa: E402
from lslu.timing import (judge_ratio, ratio_fields, round_robin, summarize,  # noqa: E402
                         worst_ratio)
from lslu.train import compile_model, compile_options  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(128, 512, 8, 8), (64, 128, 32, 32)]
TARGETS = {
    "eager_lslu_over_series": ("<=", 1.25),
    "eager_naive_over_lslu": (">=", 1.30),
    "compiled_lslu_over_series": ("<=", 1.05),
    "deployed_latency_lslu_over_series": ("<=", 1.05),
}


class NaiveSeriesLSLU(LSLU):
    """LSLU evaluated as the reference code does: the series step by step (3n+1 passes)."""

    def elementwise(self, x):
        return naive_series(x, self.theta, self.omega)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {
        "device": device.type,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def moved(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every LSLU theta/omega away from their initial values (a trained-looking state)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, LSLU):
                m.theta.copy_(torch.empty(m.theta.shape).uniform_(0.5, 1.5, generator=gen))
                m.omega.copy_(torch.empty(m.omega.shape).uniform_(-0.3, 0.3, generator=gen))
    return module


def measure(fns: dict, reps: int, warmup: int):
    """round_robin over ``fns``: (name -> summarize's dict in ms, name -> seconds per round)."""
    times = round_robin(fns, reps, warmup)
    return {k: summarize(t) for k, t in times.items()}, times


def fwd_bwd(module, x, g):
    def step():
        xx = x.detach().requires_grad_()
        module(xx).backward(g)
    return step


def activation_modules(channels: int, device, dtype, per_channel=True) -> dict:
    mods = {"series": SeriesActivation(channels), "lslu": moved(LSLU(channels)),
            "naive": moved(NaiveSeriesLSLU(channels))}
    if per_channel:
        mods["lslu_per_channel"] = moved(LSLU(channels, per_channel=True))
    return {k: m.to(device=device, dtype=dtype).train() for k, m in mods.items()}


def bench_eager(device, dtype, reps, warmup, shapes, layouts):
    rows = []
    for shape in shapes:
        for layout in layouts:
            torch.manual_seed(0)
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            mods = activation_modules(shape[1], device, dtype)
            x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
            with torch.no_grad():
                g = torch.randn_like(mods["series"](x))
            fns = {k: fwd_bwd(m, x, g) for k, m in mods.items()}
            # the elementwise g alone (no conv, no BN): the part the activation's code decides
            fns.update({f"{k}_elementwise": fwd_bwd(mods[k].elementwise, x, x)
                        for k in ("series", "lslu", "naive")})
            res, times = measure(fns, reps, warmup)
            med = {k: v["median_ms"] for k, v in res.items()}
            rows.append({"shape": list(shape), "layout": layout, "ms": res,
                         **ratio_fields(times, "lslu_over_series", "lslu", "series"),
                         **ratio_fields(times, "naive_over_lslu", "naive", "lslu"),
                         **ratio_fields(times, "per_channel_over_series", "lslu_per_channel",
                                        "series"),
                         **ratio_fields(times, "elementwise_lslu_over_series",
                                        "lslu_elementwise", "series_elementwise"),
                         **ratio_fields(times, "elementwise_naive_over_lslu",
                                        "naive_elementwise", "lslu_elementwise")})
            print_row("eager", shape, layout, med, rows[-1])
    return rows


def bench_compiled(device, dtype, reps, warmup, shapes, layouts, options="engine"):
    """options: "engine" compiles as lslu.train does (lslu.train.compile_options; the target is
    judged on these), "inductor_default" with torch.compile's defaults (reported, no target)."""
    inductor_options = compile_options(device) if options == "engine" else {}
    rows = []
    for shape in shapes:
        for layout in layouts:
            torch.manual_seed(0)
            torch._dynamo.reset()
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            mods = activation_modules(shape[1], device, dtype, per_channel=False)
            mods.pop("naive")
            x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=fmt)
            with torch.no_grad():
                g = torch.randn_like(mods["series"](x))
            compiled, compile_s = {}, {}
            for k, m in mods.items():
                compiled[k] = torch.compile(m, options=inductor_options)
                t = time.perf_counter()
                fwd_bwd(compiled[k], x, g)()
                sync(device)
                compile_s[k] = time.perf_counter() - t
            res, times = measure({k: fwd_bwd(m, x, g) for k, m in compiled.items()}, reps,
                                 warmup)
            med = {k: v["median_ms"] for k, v in res.items()}
            rows.append({"shape": list(shape), "layout": layout, "options": options,
                         "inductor_options": inductor_options, "ms": res,
                         "first_call_s": compile_s,
                         **ratio_fields(times, "lslu_over_series", "lslu", "series")})
            print_row(f"compiled ({options})", shape, layout, med, rows[-1])
    return rows


def print_row(kind, shape, layout, med, row):
    cells = "  ".join(f"{k} {v:8.1f}" for k, v in med.items())
    ratios = "  ".join(f"{k} {v:.3f} [{row[k + '_interval'][0]:.3f}, {row[k + '_interval'][1]:.3f}]"
                       for k, v in row.items() if k.endswith(("_over_series", "_over_lslu")))
    print(f"{kind:8s} {str(tuple(shape)):18s} {layout:13s} ms: {cells}   | {ratios}", flush=True)


def deployed_model(activation: str, device, dtype, fmt):
    model = moved(build_model("vanillanet_5", 1000, activation=activation)).eval()
    model.switch_to_deploy()
    return model.to(device=device, dtype=dtype, memory_format=fmt)


def bench_deployed(device, dtype, reps, warmup, sizes, instances=4):
    """Batch-1 latency of deployed VanillaNet-5, series against LSLU.  Two models of the same
    activation built one after the other differ by up to 5% here (measured: where their ~60 MB
    of weights land in memory), more than the LSLU elementwise costs, so ``instances`` models of
    each are built in alternation and all are called in turn: a round's time of an activation is
    the mean over its instances, and the ratio's interval resamples instances as well as rounds
    (lslu.timing.paired_ratio)."""
    fmt = torch.channels_last
    rows = []
    models = {(a, k): deployed_model(a, device, dtype, fmt)
              for k in range(instances) for a in ("series", "lslu")}
    for size in sizes:
        x = torch.randn(1, 3, size, size, device=device, dtype=dtype).contiguous(
            memory_format=fmt)

        def run(m):
            def f():
                with torch.inference_mode():
                    m(x)
            return f
        per_model = round_robin({key: run(m) for key, m in models.items()}, reps, warmup)
        times = {a: np.stack([per_model[(a, k)] for k in range(instances)])
                 for a in ("series", "lslu")}             # (instances, rounds)
        res = {a: summarize(t.mean(0)) for a, t in times.items()}
        med = {k: v["median_ms"] for k, v in res.items()}
        rows.append({"model": "vanillanet_5", "batch": 1, "size": size, "instances": instances,
                     "ms": res, "instance_median_ms": {
                         a: [summarize(per_model[(a, k)])["median_ms"] for k in range(instances)]
                         for a in ("series", "lslu")},
                     **ratio_fields(times, "lslu_over_series", "lslu", "series")})
        print(f"deployed vanillanet_5 batch 1 {size:3d} px  ms: series {med['series']:.2f}  "
              f"lslu {med['lslu']:.2f}  | lslu/series {rows[-1]['lslu_over_series']:.3f} "
              f"({instances} models each)", flush=True)
    return rows


def bench_training(device, dtype, reps, warmup, batch, compiled=False):
    """One SGD training step of vanillanet_5_x0_25 at 32 px, series against LSLU; compiled:
    as lslu.train compiles (lslu.train.compile_model), the first calls untimed."""
    fmt = torch.channels_last
    torch.manual_seed(0)
    torch._dynamo.reset()
    x = torch.randn(batch, 3, 32, 32, device=device, dtype=dtype).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    steps, first_call_s = {}, {}
    for act in ("series", "lslu"):
        model = build_model("vanillanet_5_x0_25", 10, activation=act).to(
            device=device, dtype=dtype, memory_format=fmt).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        forward = compile_model(model, device) if compiled else model

        def step(forward=forward, opt=opt):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(forward(x), y).backward()
            opt.step()
        if compiled:
            t = time.perf_counter()
            step()
            sync(device)
            first_call_s[act] = time.perf_counter() - t
        steps[act] = step
    res, times = measure(steps, reps, warmup)
    ips = {k: batch / (v["median_ms"] / 1e3) for k, v in res.items()}
    row = {"model": "vanillanet_5_x0_25", "batch": batch, "size": 32, "compiled": compiled,
           "ms_per_step": res, "images_per_s": ips,     # images/s ratio = series/LSLU time ratio
           **ratio_fields(times, "lslu_over_series_images_per_s", "series", "lslu")}
    if compiled:
        row["first_call_s"] = first_call_s
    print(f"training{' compiled' if compiled else ''} vanillanet_5_x0_25 batch {batch} 32 px  "
          f"images/s: series {ips['series']:.1f}  lslu {ips['lslu']:.1f}  | lslu/series "
          f"{row['lslu_over_series_images_per_s']:.3f}", flush=True)
    return row


def verdict(name: str, rows: list, key: str) -> dict:
    """The worst row's ratio against TARGETS[name] (lslu.timing.judge_ratio)."""
    return judge_ratio(rows, key, *TARGETS[name])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few reps, nothing written")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-224", action="store_true", help="deployed latency at 32 px only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32
    t0 = time.perf_counter()
    info = machine_info(device)
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    shapes, reps, warmup = SHAPES, args.reps, 2
    layouts = ["channels_last", "contiguous"]
    sizes = [32] if args.no_224 else [224, 32]
    if args.quick:
        shapes, reps, warmup, sizes = [(4, 16, 8, 8)], 3, 1, [32]

    eager = bench_eager(device, dtype, reps, warmup, shapes, layouts)
    compiled, compiled_default = [], []
    if not args.no_compile:
        # twice the repeats: the compiled ratio's target (1.05) is as close as this machine's
        # run-to-run spread of a 9-repeat median (about +-0.03 measured)
        compiled_reps = 3 if args.quick else 2 * reps + 1
        compiled = bench_compiled(device, dtype, compiled_reps, warmup, shapes, ["channels_last"])
        compiled_default = bench_compiled(device, dtype, compiled_reps, warmup, shapes,
                                          ["channels_last"], options="inductor_default")
    deployed = bench_deployed(device, dtype, reps + 4, warmup, sizes,
                              instances=2 if args.quick else 4)
    training = bench_training(device, dtype, reps, warmup, 8 if args.quick else 128)
    training_compiled = None
    if not args.no_compile:
        training_compiled = bench_training(device, dtype, reps, warmup,
                                           8 if args.quick else 128, compiled=True)

    summary = {
        "eager_lslu_over_series": verdict("eager_lslu_over_series", eager, "lslu_over_series"),
        "eager_naive_over_lslu": verdict("eager_naive_over_lslu", eager, "naive_over_lslu"),
        "deployed_latency_lslu_over_series": verdict("deployed_latency_lslu_over_series",
                                                     deployed, "lslu_over_series"),
        "eager_per_channel_over_series_worst": worst_ratio(eager, "per_channel_over_series", "<="),
        "eager_elementwise_lslu_over_series_worst": worst_ratio(
            eager, "elementwise_lslu_over_series", "<="),
        "eager_elementwise_naive_over_lslu_worst": worst_ratio(
            eager, "elementwise_naive_over_lslu", ">="),
        "training_lslu_over_series_images_per_s": worst_ratio(
            [training], "lslu_over_series_images_per_s", "<="),
    }
    if compiled:
        summary["compiled_lslu_over_series"] = verdict("compiled_lslu_over_series", compiled,
                                                       "lslu_over_series")
        summary["compiled_inductor_default_lslu_over_series"] = worst_ratio(
            compiled_default, "lslu_over_series", "<=")
        summary["training_compiled_lslu_over_series_images_per_s"] = worst_ratio(
            [training_compiled], "lslu_over_series_images_per_s", "<=")

    print("\nsummary (worst case over shapes and layouts; medians of per-round ratios, "
          "90% intervals)")
    for k, v in summary.items():
        cells = f"  {k:48s} {v['value']:.3f} [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}]"
        if "target" in v:
            print(f"{cells}  target {v['target']:7s} {'PASS' if v['pass'] else 'FAIL'}")
        else:
            print(f"{cells}  (no target)")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s")
    result = {"machine": info, "settings": {"reps": reps, "warmup": warmup, "dtype": str(dtype),
                                            "compiled_reps": None if args.no_compile else
                                            compiled_reps,
                                            "compiled_layouts": ["channels_last"]},
              "eager": eager, "compiled": compiled, "compiled_inductor_default": compiled_default,
              "deployed": deployed, "training": training, "training_compiled": training_compiled,
              "summary": summary, "total_s": total}
    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if not args.quick:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"activation_speed_{device.type}.json"
        path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return result


if __name__ == "__main__":
    main()
