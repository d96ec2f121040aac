"""LSLU on a CUDA GPU: correctness against a float64 CPU reference, speed ratios, training speed.

    python benchmarks/gpu_check.py                 # on a CUDA machine; about 5-8 minutes
    python benchmarks/gpu_check.py --no-compile    # skip torch.compile (faster)
    python benchmarks/gpu_check.py --smoke-cpu --out /tmp/gpu_check_smoke.json
                                                   # every part on the CPU, tiny sizes

1. correctness: forward and backward of LSLU (per layer and per channel, fp32 and bf16) on the
   GPU against the same module in float64 on the CPU: max error relative to the reference's
   largest value, for the output and for the gradients of x, theta, omega and the conv weight;
   and the deployed module against the eval-mode train graph.
2. speed, bf16, channels_last, eager and torch.compile, shapes (128,512,8,8) and
   (64,128,32,32): forward+backward of LSLU, VanillaNet's series activation and the naive
   3n+1-pass series, interleaved in one process; the ratios of the CPU benchmark.
3. training steps of VanillaNet-5, LSLU against the series activation, bf16 autocast,
   channels_last, eager and compiled (as lslu.train compiles), at 32 px (batch 256) and 224 px
   (batch 64), on random uint8 images kept on the GPU and normalised there: a minimal
   self-contained loop (SGD with momentum), the two models' steps called in turn.  Step time
   ratio LSLU / series: targets <= 1.10 eager and <= 1.03 compiled; images/s and seconds per
   50,000-image epoch.
Every ratio is the median of the per-round ratios with a 90% bootstrap interval
(lslu.timing.paired_ratio).

Writes benchmarks/results/gpu_check.json.  Without CUDA it says so, runs the CPU-side parts
(correctness of the CPU paths against float64, a two-step smoke run of the training loop) and
writes nothing.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lslu.activations import LSLU, SeriesActivation, naive_series  # noqa: E402
from lslu.models import build_model  # noqa: E402
from lslu.timing import judge_ratio, ratio_fields, round_robin, summarize  # noqa: E402
from lslu.train import compile_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = [(128, 512, 8, 8), (64, 128, 32, 32)]
TARGETS = {"eager_lslu_over_series": ("<=", 1.25), "eager_naive_over_lslu": (">=", 1.30),
           "compiled_lslu_over_series": ("<=", 1.05),
           "training_step_eager_lslu_over_series": ("<=", 1.10),
           "training_step_compiled_lslu_over_series": ("<=", 1.03)}
# (input size, batch, classes) of the training-step comparison
TRAINING_CASES = [(32, 256, 100), (224, 64, 1000)]


class NaiveSeriesLSLU(LSLU):
    """LSLU evaluated as the reference code does: the series step by step (3n+1 passes)."""

    def elementwise(self, x):
        return naive_series(x, self.theta, self.omega)


def moved(module: nn.Module, seed: int = 0) -> nn.Module:
    """theta/omega away from init, with a negative theta (a falling piece, finite q)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, LSLU):
                m.theta.copy_(torch.empty(m.theta.shape).uniform_(0.5, 1.5, generator=gen))
                m.omega.copy_(torch.empty(m.omega.shape).uniform_(-0.3, 0.3, generator=gen))
    return module


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------
# 1. correctness
# ------------------------------------------------------------------------------------------
def correctness(device, dtypes) -> list:
    rows = []
    for per_channel in (False, True):
        for dtype in dtypes:
            torch.manual_seed(0)
            ref = LSLU(16, 3, per_channel=per_channel).double()
            # rising, then falling (a finite upper end), then rising: three live pieces
            theta = torch.tensor([1.2, -0.8, 1.1], dtype=torch.float64)
            omega = torch.tensor([-0.1, 1.0, 0.1], dtype=torch.float64)
            with torch.no_grad():
                if per_channel:
                    theta = theta[:, None] * (1 + 0.2 * torch.rand(3, 16, dtype=torch.float64))
                    omega = omega[:, None] + 0.1 * torch.randn(3, 16, dtype=torch.float64)
                ref.theta.copy_(theta)
                ref.omega.copy_(omega)
                ref.weight.normal_(0, 0.1)
            x64 = torch.randn(4, 16, 12, 12, dtype=torch.float64) * 2
            g64 = torch.randn(4, 16, 12, 12, dtype=torch.float64)
            mod = copy.deepcopy(ref).to(device=device, dtype=torch.float32)

            def run(m, x, g, autocast_dtype=None):
                x = x.detach().requires_grad_()
                m.zero_grad(set_to_none=True)
                if autocast_dtype is not None:
                    with torch.autocast(device.type, dtype=autocast_dtype):
                        y = m(x)
                else:
                    y = m(x)
                y.backward(g.to(y.dtype))
                return {"y": y.detach(), "x": x.grad, "theta": m.theta.grad,
                        "omega": m.omega.grad, "weight": m.weight.grad}

            expect = run(ref, x64, g64)
            xd = x64.to(device=device, dtype=torch.float32).contiguous(
                memory_format=torch.channels_last)
            gd = g64.to(device=device, dtype=torch.float32)
            got = run(mod, xd, gd, autocast_dtype=None if dtype == torch.float32 else dtype)
            errors = {k: float((got[k].double().cpu() - expect[k]).abs().max()
                               / expect[k].abs().max().clamp_min(1e-30)) for k in expect}
            tol = 1e-4 if dtype == torch.float32 else 6e-2
            # deploy on the device against the eval train graph
            mod.eval()
            with torch.no_grad():
                before = mod(xd)
                dep = copy.deepcopy(mod)
                dep.switch_to_deploy()
                after = dep(xd)
            deploy_err = float((after - before).abs().max() / before.abs().max())
            row = {"per_channel": per_channel, "dtype": str(dtype).replace("torch.", ""),
                   "max_rel_error": errors, "deploy_rel_error": deploy_err, "tolerance": tol,
                   "pass": max(errors.values()) < tol and deploy_err < 1e-4}
            rows.append(row)
            print(f"correctness {'per_channel' if per_channel else 'per_layer':11s} "
                  f"{row['dtype']:8s} " + " ".join(f"{k} {v:.1e}" for k, v in errors.items())
                  + f" deploy {deploy_err:.1e} {'PASS' if row['pass'] else 'FAIL'}", flush=True)
    return rows


# ------------------------------------------------------------------------------------------
# 2. speed ratios
# ------------------------------------------------------------------------------------------
def fwd_bwd(module, x, g):
    def step():
        xx = x.detach().requires_grad_()
        module(xx).backward(g)
    return step


def speed(device, dtype, shapes, reps, compile_too) -> dict:
    out = {"eager": [], "compiled": []}
    for shape in shapes:
        torch.manual_seed(0)
        c = shape[1]
        mods = {"series": SeriesActivation(c), "lslu": moved(LSLU(c)),
                "naive": moved(NaiveSeriesLSLU(c)),
                "lslu_per_channel": moved(LSLU(c, per_channel=True))}
        mods = {k: m.to(device=device, dtype=dtype).train() for k, m in mods.items()}
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(
            memory_format=torch.channels_last)
        with torch.no_grad():
            g = torch.randn_like(mods["series"](x))
        times = round_robin({k: fwd_bwd(m, x, g) for k, m in mods.items()}, reps, 3)
        res = {k: summarize(t) for k, t in times.items()}
        med = {k: v["median_ms"] for k, v in res.items()}
        row = {"shape": list(shape), "ms": res,
               **ratio_fields(times, "lslu_over_series", "lslu", "series"),
               **ratio_fields(times, "naive_over_lslu", "naive", "lslu"),
               **ratio_fields(times, "per_channel_over_series", "lslu_per_channel", "series")}
        out["eager"].append(row)
        print(f"eager    {str(shape):18s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in med.items())
              + f" | lslu/series {row['lslu_over_series']:.3f} naive/lslu "
                f"{row['naive_over_lslu']:.3f}", flush=True)
        if compile_too:
            torch._dynamo.reset()
            comp = {k: compile_model(mods[k], device) for k in ("series", "lslu")}
            first = {}
            for k, m in comp.items():
                t = time.perf_counter()
                fwd_bwd(m, x, g)()
                sync(device)
                first[k] = time.perf_counter() - t
            times = round_robin({k: fwd_bwd(m, x, g) for k, m in comp.items()}, reps, 3)
            res = {k: summarize(t) for k, t in times.items()}
            med = {k: v["median_ms"] for k, v in res.items()}
            row = {"shape": list(shape), "ms": res, "first_call_s": first,
                   **ratio_fields(times, "lslu_over_series", "lslu", "series")}
            out["compiled"].append(row)
            print(f"compiled {str(shape):18s} " + "  ".join(f"{k} {v:.3f} ms" for k, v in
                                                             med.items())
                  + f" | lslu/series {row['lslu_over_series']:.3f}", flush=True)
    return out


# ------------------------------------------------------------------------------------------
# 3. training steps (a minimal loop, independent of the project's trainer)
# ------------------------------------------------------------------------------------------
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def make_training_step(device, model_name, activation, size, batch, classes, use_compile,
                       amp_dtype, pool=1024):
    """One SGD step of ``model_name`` on a random batch of a uint8 image pool kept on the device,
    normalised there, channels_last, under ``amp_dtype`` autocast; returns step() -> loss."""
    torch.manual_seed(0)
    data = torch.randint(0, 256, (pool, 3, size, size), dtype=torch.uint8, device=device)
    labels = torch.randint(0, classes, (pool,), device=device)
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    model = build_model(model_name, classes, activation=activation).to(device).to(
        memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-5)
    fwd = compile_model(model, device) if use_compile else model

    def step():
        idx = torch.randint(0, pool, (batch,), device=device)
        x = ((data[idx].float() - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(fwd(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss
    return step


def training_steps(device, model_name, cases, reps, warmup, compiled, amp_dtype,
                   pool=1024) -> list:
    """Per (size, batch, classes): LSLU's and the series' training steps called in turn (first
    calls, where compiling happens, untimed and reported); step times, images/s, the time ratio
    LSLU / series with its interval."""
    rows = []
    for size, batch, classes in cases:
        torch._dynamo.reset()
        steps, first_call_s = {}, {}
        for act in ("series", "lslu"):
            steps[act] = make_training_step(device, model_name, act, size, batch, classes,
                                            compiled, amp_dtype, pool)
            t = time.perf_counter()
            steps[act]()
            sync(device)
            first_call_s[act] = time.perf_counter() - t
        times = round_robin(steps, reps, warmup)
        res = {k: summarize(t) for k, t in times.items()}
        ips = {k: batch / (v["median_ms"] / 1e3) for k, v in res.items()}
        row = {"model": model_name, "size": size, "batch": batch, "classes": classes,
               "compiled": compiled, "amp": str(amp_dtype), "ms_per_step": res,
               "first_call_s": first_call_s, "images_per_s": ips,
               "seconds_per_50k_images": {k: 50000 / v for k, v in ips.items()},
               **ratio_fields(times, "lslu_over_series", "lslu", "series")}
        rows.append(row)
        lo, hi = row["lslu_over_series_interval"]
        print(f"training {model_name} {size:3d} px batch {batch:3d} compiled={compiled!s:5s} "
              f"images/s: series {ips['series']:9.0f}  lslu {ips['lslu']:9.0f}  | step time "
              f"lslu/series {row['lslu_over_series']:.3f} [{lo:.3f}, {hi:.3f}]", flush=True)
    return rows


def verdict(name: str, rows: list, key: str = "lslu_over_series") -> dict:
    """The worst row's ratio against TARGETS[name] (lslu.timing.judge_ratio)."""
    return judge_ratio(rows, key, *TARGETS[name])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-compile", action="store_true", help="skip every torch.compile run")
    ap.add_argument("--reps", type=int, default=25, help="timed rounds of the activation speed")
    ap.add_argument("--train-reps", type=int, default=30, help="timed rounds of training steps")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="skip the remaining compiled training cases once this much time passed")
    ap.add_argument("--out", type=Path, default=RESULTS / "gpu_check.json")
    ap.add_argument("--smoke-cpu", action="store_true",
                    help="run every part on the CPU with tiny sizes (checks the script itself)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    shapes, model_name, cases, pool = SHAPES, "vanillanet_5", TRAINING_CASES, 1024

    if args.smoke_cpu:
        torch.set_num_threads(1)
        device = torch.device("cpu")
        shapes, model_name, cases, pool = [(4, 16, 8, 8)], "vanillanet_5_x0_25", \
            [(32, 4, 10), (64, 2, 10)], 16
        args.reps, args.train_reps = 2, 2
    elif not torch.cuda.is_available():
        print("No CUDA device: benchmarks/gpu_check.py is meant for a GPU machine.\n"
              "Running its CPU-side parts only (correctness of the CPU paths against float64, "
              "a smoke run of the training steps); nothing is written.", flush=True)
        cpu = torch.device("cpu")
        torch.set_num_threads(1)  # small tensors; avoids OpenMP spin-waits on busy machines
        rows = correctness(cpu, [torch.float32, torch.bfloat16])
        training_steps(cpu, "vanillanet_5_x0_25", [(32, 4, 10)], 1, 1, False, torch.bfloat16,
                       pool=16)
        ok = all(r["pass"] for r in rows)
        print(f"CPU-side parts {'passed' if ok else 'FAILED'}; no GPU results.")
        return 0 if ok else 1
    else:
        device = torch.device("cuda")
        torch.backends.cudnn.benchmark = True
    info = {"gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "none (smoke)",
            "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "compile": not args.no_compile}
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()), flush=True)

    result = {"machine": info}
    result["correctness"] = correctness(device, [torch.float32, torch.bfloat16])
    result["speed_bf16_channels_last"] = speed(device, torch.bfloat16, shapes, args.reps,
                                               compile_too=not args.no_compile)
    warmup = 1 if args.smoke_cpu else 5
    eager_steps = training_steps(device, model_name, cases, args.train_reps, warmup, False,
                                 torch.bfloat16, pool)
    compiled_steps = []
    if not args.no_compile:
        for case in cases:
            if time.perf_counter() - t0 > args.budget_s:
                print(f"time budget ({args.budget_s:.0f} s) reached: compiled training steps at "
                      f"{case[0]} px skipped", flush=True)
                continue
            compiled_steps += training_steps(device, model_name, [case], args.train_reps,
                                             warmup, True, torch.bfloat16, pool)
    result["training_steps"] = {"eager": eager_steps, "compiled": compiled_steps}

    speed_rows = result["speed_bf16_channels_last"]
    summary = {
        "correctness_pass": all(r["pass"] for r in result["correctness"]),
        "eager_lslu_over_series": verdict("eager_lslu_over_series", speed_rows["eager"]),
        "eager_naive_over_lslu": verdict("eager_naive_over_lslu", speed_rows["eager"],
                                         "naive_over_lslu"),
        "training_step_eager_lslu_over_series": verdict("training_step_eager_lslu_over_series",
                                                        eager_steps),
    }
    if speed_rows["compiled"]:
        summary["compiled_lslu_over_series"] = verdict("compiled_lslu_over_series",
                                                       speed_rows["compiled"])
    if compiled_steps:
        summary["training_step_compiled_lslu_over_series"] = verdict(
            "training_step_compiled_lslu_over_series", compiled_steps)
        summary["training_step_compiled_cases"] = [r["size"] for r in compiled_steps]
    result["summary"] = summary
    result["total_s"] = time.perf_counter() - t0
    print("\nsummary (worst case over shapes / input sizes; medians of per-round ratios, 90% "
          "intervals)")
    for k, v in summary.items():
        if isinstance(v, dict):
            print(f"  {k:45s} {v['value']:.3f} [{v['interval'][0]:.3f}, {v['interval'][1]:.3f}] "
                  f"target {v['target']} {'PASS' if v['pass'] else 'FAIL'}")
        else:
            print(f"  {k:45s} {v}")
    print(f"total {result['total_s']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
