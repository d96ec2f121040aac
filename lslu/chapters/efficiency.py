"""Chapter 10 (E9): train vs deploy graphs of VanillaNet with the series activation and with LSLU:
parameters, FLOPs, latency; and the speed benchmarks' results (benchmarks/results/*.json)."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from ..models import VANILLANET_MODELS, VanillaNet, build_model, count_parameters
from ..train import count_flops, resolve_device
from ..paper import paper_text
from ..timing import paired_ratio, round_robin, speed_verdict
from .common import Headline, check_positive_int, deployed_copy, paper_number
from .lslu_function import parameter_table
from .plots import as_frame, style_axes


def configs(**params) -> list:
    """Chapter 10 trains nothing (it builds untrained models and times them)."""
    return []


# VanillaNet-5 as its own paper publishes it (ImageNet, 1000 classes, 224 px, deploy graph), for
# context only: these are NOT numbers of the LSLU paper. Its "FLOPs" count a multiply-add once.
VANILLANET5_PUBLISHED = {"params_M": 15.5, "GMACs": 5.2, "latency_ms": 1.61,
                         "latency_setting": "batch 1 on an A100"}


def efficiency_graphs(name: str, num_classes: int, activations=("series", "lslu"),
                      act_num: int = 3, seed: int = 0) -> dict:
    """(activation, graph) -> model in eval mode, graph 'train' (as trained, lambda = 1) or
    'deploy' (deployed_copy). Weights are initialised after torch.manual_seed(seed): latency and
    counts do not depend on their values."""
    graphs = {}
    for act in activations:
        torch.manual_seed(seed)
        model = build_model(name, num_classes, act, act_num).eval()
        if hasattr(model, "change_act"):
            model.change_act(1.0)
        graphs[(act, "train")] = model
        graphs[(act, "deploy")] = deployed_copy(model)
    return graphs


def cost_table(graphs: dict, input_sizes) -> pd.DataFrame:
    """Parameters and FLOPs of every activation's train and deploy graph (``graphs`` from
    efficiency_graphs: (activation, 'train'|'deploy') -> model) at every input size: one row per
    (input size, activation), with the columns of parameter_table. FLOPs per image from
    lslu.train.count_flops (FlopCounterMode: convolutions and matrix products, a multiply-add
    counted as 2; elementwise work such as BN or the activation's g(x) is not counted)."""
    acts = list(dict.fromkeys(act for act, _ in graphs))
    rows = []
    for size in input_sizes:
        for act in acts:
            train, deploy = graphs[(act, "train")], graphs[(act, "deploy")]
            n = getattr(train, "act_num", None)
            rows.append({"input_size": size, "activation": act, "n": n,
                         "kernel": f"{2 * n + 1}x{2 * n + 1}" if n else "",
                         "params (train)": count_parameters(train),
                         "params (deploy)": count_parameters(deploy),
                         "MFLOPs (train)": round(count_flops(train, size) / 1e6, 2),
                         "MFLOPs (deploy)": round(count_flops(deploy, size) / 1e6, 2)})
    return pd.DataFrame(rows)


def _latency_probe(model: nn.Module, batch: int, input_size: int, device):
    """A function running one forward of a copy of ``model`` (eval mode, channels_last; on CUDA
    bf16 autocast) on a fixed random batch; lslu.timing.round_robin times it."""
    check_positive_int("batch", batch)
    check_positive_int("input_size", input_size)
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    cuda = device.type == "cuda"
    model = copy.deepcopy(model).eval().to(device, memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, input_size, input_size, generator=gen).to(
        device, memory_format=torch.channels_last)

    def forward():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=cuda):
            model(x)

    return forward


def _latency_stats(seconds) -> dict:
    t = 1e3 * np.asarray(seconds, dtype=float)
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    # the raw times stay: latency_ratios bootstraps the ratio's interval from them
    return {"median_ms": float(median), "p10": float(p10), "p90": float(p90),
            "times_ms": [float(v) for v in t]}


def measure_latency(model: nn.Module, batch: int, input_size: int, device="auto",
                    repeats: int = 5, warmup: int = 1) -> dict:
    """Latency of one forward pass of ``model`` in eval mode on a batch of ``batch`` random
    images of ``input_size`` px: ``warmup`` untimed passes, then ``repeats`` timed ones.

    Returns {"median_ms", "p10", "p90", "times_ms"} (milliseconds: median and 10th/90th
    percentiles over the repeats, and every repeat). Runs on a copy in channels_last; on CUDA
    under bf16 autocast, synchronised around each pass (lslu.timing). ``model`` itself is not
    moved or changed.
    """
    check_positive_int("repeats", repeats)
    check_positive_int("warmup", warmup, minimum=0)
    forward = _latency_probe(model, batch, input_size, device)
    return _latency_stats(round_robin({"model": forward}, repeats, warmup)["model"])


def latency_table(graphs: dict, input_sizes, batch_sizes, device="auto", repeats: int = 5,
                  warmup: int = 1, skip=(), copies: int = 3) -> pd.DataFrame:
    """measure_latency for every (activation, graph) of ``graphs`` (from efficiency_graphs) at
    every input size x batch size, except the (input_size, batch) pairs in ``skip``.

    Within one (input size, batch) the models are timed round-robin (lslu.timing), one pass each
    in turn, so that a change of background load hits all of them alike (ratios stay meaningful
    on a shared machine). Each model is timed as ``copies`` copies, made in alternation with the
    other models' copies: two copies of one model run up to 5% apart on a CPU (where their
    weights lie in memory), more than LSLU's elementwise costs, so one copy each would compare
    placements, not activations. One row per measurement: activation, graph, input_size, batch,
    median_ms, p10, p90 and times_ms of the per-round mean over copies, and copy_times_ms
    (copies x rounds).
    """
    check_positive_int("repeats", repeats)
    check_positive_int("warmup", warmup, minimum=0)
    check_positive_int("copies", copies)
    skip = {tuple(pair) for pair in skip}
    rows = []
    for size in input_sizes:
        for batch in batch_sizes:
            if (size, batch) in skip:
                continue
            probes = {(key, k): _latency_probe(m, batch, size, device)
                      for k in range(copies) for key, m in graphs.items()}
            times = round_robin(probes, repeats, warmup)
            for act, graph in graphs:
                per_copy = np.stack([times[((act, graph), k)] for k in range(copies)])
                rows.append({"activation": act, "graph": graph, "input_size": size,
                             "batch": batch} | _latency_stats(per_copy.mean(0))
                            | {"copy_times_ms": (1e3 * per_copy).tolist()})
            del probes
    return pd.DataFrame(rows)


def _latency_ratio(by_act: pd.DataFrame, numerator: str, denominator: str,
                   confidence: float = 0.9) -> dict:
    """lslu.timing.paired_ratio of two activations' rows of a latency table (over copies and
    rounds where the table has copy_times_ms, else over rounds)."""
    col = "copy_times_ms" if "copy_times_ms" in by_act.columns else "times_ms"
    return paired_ratio({"n": by_act.loc[numerator, col], "d": by_act.loc[denominator, col]},
                        "n", "d", confidence)


def latency_ratios(table: pd.DataFrame, numerator: str = "lslu",
                   denominator: str = "series", confidence: float = 0.9) -> pd.DataFrame:
    """Per graph, input size and batch: latency of ``numerator`` / ``denominator`` (the median
    of the per-round ratios), its ``confidence`` bootstrap interval over rounds and copies
    (lslu.timing.paired_ratio: columns lo, hi) and a verdict that says faster/slower only when
    the interval excludes 1."""
    rows = []
    for (graph, size, batch), sub in table.groupby(["graph", "input_size", "batch"], sort=False):
        by_act = sub.set_index("activation")
        for act in (numerator, denominator):
            if act not in by_act.index:
                raise ValueError(f"latency table has no activation {act!r} at {graph}, {size} px, "
                                 f"batch {batch}; it has {list(by_act.index)}")
        r = _latency_ratio(by_act, numerator, denominator, confidence)
        lo, hi = r["interval"]
        rows.append({"graph": graph, "input_size": size, "batch": batch,
                     f"{numerator} / {denominator}": r["value"], "lo": lo, "hi": hi,
                     "verdict": speed_verdict(lo, hi, numerator, denominator)})
    return pd.DataFrame(rows)


def latency_display(table: pd.DataFrame) -> pd.DataFrame:
    """latency_table for the page: one row per graph, input size and batch; median (p10-p90) ms
    per activation, and the latency ratio of the second activation over the first with its 90%
    bootstrap interval and verdict (latency_ratios)."""
    acts = list(dict.fromkeys(table["activation"]))
    rows = []
    for (graph, size, batch), sub in table.groupby(["graph", "input_size", "batch"], sort=False):
        row = {"graph": graph, "input (px)": size, "batch": batch}
        by_act = sub.set_index("activation")
        for act in acts:
            r = by_act.loc[act]
            row[f"{act}: median ms (p10-p90)"] = (f"{r.median_ms:.1f} "
                                                  f"({r.p10:.1f}-{r.p90:.1f})")
        if len(acts) >= 2:
            r = _latency_ratio(by_act, acts[1], acts[0])
            lo, hi = r["interval"]
            row[f"{acts[1]} / {acts[0]}"] = round(r["value"], 3)
            row["90% interval"] = f"{lo:.2f}-{hi:.2f}"
            row["verdict"] = speed_verdict(lo, hi, acts[1], acts[0])
        rows.append(row)
    return pd.DataFrame(rows)


def _load_json_files(folder, pattern: str) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"benchmark results folder {folder} does not exist (relative paths are "
                         f"relative to the notebook: ../benchmarks/results)")
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(folder.glob(pattern))}


def machine_text(machine: dict) -> str:
    """One line naming the machine of a benchmark file ('cpu: AMD EPYC, 2 cores, 2 threads')."""
    if not machine:
        return "unknown machine"
    if machine.get("gpu"):
        return f"{machine.get('device', 'cuda')}: {machine['gpu']}"
    parts = [machine.get("cpu") or machine.get("processor") or "unknown CPU"]
    if machine.get("cpu_count"):
        parts.append(f"{machine['cpu_count']} cores")
    if machine.get("torch_threads"):
        parts.append(f"{machine['torch_threads']} threads")
    return f"{machine.get('device', 'cpu')}: " + ", ".join(parts)


def _summary_rows(stem: str, data: dict) -> list[dict]:
    """A benchmark file's summary as table rows: per entry its value (floats to 2 decimals), its
    90% interval where it has one, its target and verdict where it has one."""
    machine = machine_text(data.get("machine", {}))
    rows = []
    for name, entry in data.get("summary", {}).items():
        if not isinstance(entry, dict):
            entry = {"value": entry}
        value, interval = entry.get("value"), entry.get("interval")
        if isinstance(value, float):
            value = round(value, 2)
        rows.append({"file": stem, "machine": machine, "ratio": name.replace("_", " "),
                     "value": value,
                     "90% interval": ("" if not interval else
                                      f"{interval[0]:.2f} to {interval[1]:.2f}"),
                     "target": entry.get("target", ""),
                     "verdict": {True: "pass", False: "FAIL"}.get(entry.get("pass"), "")})
    return rows


SUMMARY_COLUMNS = ["file", "machine", "ratio", "value", "90% interval", "target", "verdict"]


def speed_benchmark_table(folder) -> pd.DataFrame:
    """The ratios of every benchmarks/results/activation_speed_<device>.json against their
    targets: one row per (file, ratio), with the machine it was measured on and the ratio's 90%
    interval over the timing rounds where the file has one. Ratios reported without a target get
    an empty target. No file: an empty table."""
    rows = [row for stem, data in _load_json_files(folder, "activation_speed_*.json").items()
            for row in _summary_rows(stem, data)]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def launch_count_table(folder) -> pd.DataFrame | None:
    """benchmarks/results/launch_count.json (benchmarks/launch_count.py) as a table: per model,
    path (tensor: what a GPU, tracing and torch.compile run; fast: the eager CPU path) and LSLU
    form, the kernel-launching operations of one training step, the series activation's, their
    ratio and the target. None if the file does not exist."""
    files = _load_json_files(folder, "launch_count.json")
    if not files:
        return None
    data = files["launch_count"]
    target = data.get("target_ratio_tensor_path")
    rows = [{"model": r["model"], "path": r["path"],
             "LSLU form": "per channel" if r["activation"].endswith("per_channel") else "per layer",
             "ops": r["ops"], "series ops": r["series_ops"],
             "ratio": round(r["ops"] / r["series_ops"], 2),
             "target": f"<= {target}" if r["path"] == "tensor" and target else ""}
            for r in data.get("rows", [])]
    return pd.DataFrame(rows)


def gpu_check_table(folder) -> pd.DataFrame | None:
    """benchmarks/results/gpu_check.json's summary (benchmarks/gpu_check.py) as the speed table
    shows activation_speed's: correctness, activation and training-step ratios with their
    intervals, targets and verdicts; None if the file does not exist (the check has not been run
    on a GPU yet). The file itself holds every measurement."""
    files = _load_json_files(folder, "gpu_check.json")
    if not files:
        return None
    return pd.DataFrame(_summary_rows("gpu_check", files["gpu_check"]), columns=SUMMARY_COLUMNS)


def check_efficiency_parameters(model: str, num_classes: int, act_num: int, input_sizes,
                                batch_sizes, latency_skip, repeats: int, warmup: int,
                                device: str, benchmarks_dir) -> list[tuple[int, int]]:
    """Validate chapter 10's parameters (before any model is built) and return the (input size,
    batch) pairs whose latency is measured."""
    if model not in VANILLANET_MODELS:
        raise ValueError(f"model must be a VanillaNet (the graphs E9 compares), got {model!r}; "
                         f"valid: {', '.join(VANILLANET_MODELS)}")
    check_positive_int("num_classes", num_classes, minimum=2)
    check_positive_int("act_num", act_num)
    check_positive_int("repeats", repeats)
    check_positive_int("warmup", warmup, minimum=0)
    for name, values in (("input_sizes", input_sizes), ("batch_sizes", batch_sizes)):
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"{name} needs a non-empty list, got {values!r}")
        for v in values:
            check_positive_int(name[:-1], v)
    small = [s for s in input_sizes if s < 32]
    if small:
        raise ValueError(f"input sizes {small} are below 32 px: VanillaNet-5 downsamples 32x")
    if not isinstance(latency_skip, (list, tuple)) or any(
            not isinstance(p, (list, tuple)) or len(p) != 2 for p in latency_skip):
        raise ValueError(f"latency_skip needs a list of [input_size, batch] pairs, got "
                         f"{latency_skip!r}")
    pairs = [(s, b) for s in input_sizes for b in batch_sizes]
    unknown = [list(p) for p in latency_skip if tuple(p) not in pairs]
    if unknown:
        raise ValueError(f"latency_skip names pairs {unknown} that are not input_sizes x "
                         f"batch_sizes {[list(p) for p in pairs]}")
    kept = [p for p in pairs if list(p) not in [list(q) for q in latency_skip]]
    if not kept:
        raise ValueError("latency_skip leaves no (input size, batch) pair to time")
    resolve_device(device)
    if not Path(benchmarks_dir).is_dir():
        raise ValueError(f"benchmarks_dir {benchmarks_dir!r} is not a folder (relative paths are "
                         f"relative to the notebook: ../benchmarks/results)")
    return kept


def published_vanillanet5_check(name: str = "vanillanet_5", act_num: int = 3) -> pd.DataFrame:
    """Our VanillaNet-5 with its own activation, ImageNet head (1000 classes), 224 px, deploy
    graph, against the parameters and multiply-adds VanillaNet's paper publishes for it
    (VANILLANET5_PUBLISHED; context, not the LSLU paper). FlopCounterMode counts a multiply-add
    as 2 FLOPs: multiply-adds = FLOPs / 2."""
    costs = parameter_table({name: lambda: build_model(name, 1000, "series", act_num)}, 224)
    row = costs.iloc[0]
    return pd.DataFrame([
        {"quantity": "params, deploy graph (M)",
         "VanillaNet paper (ImageNet)": VANILLANET5_PUBLISHED["params_M"],
         "ours": round(row["params (deploy)"] / 1e6, 1)},
        {"quantity": "multiply-adds per 224 px image, deploy graph (G)",
         "VanillaNet paper (ImageNet)": VANILLANET5_PUBLISHED["GMACs"],
         "ours": round(row["MFLOPs (deploy)"] / 2e3, 1)},
    ]).set_index("quantity")


def efficiency_headlines(costs: pd.DataFrame, latency: pd.DataFrame, model: str,
                         device_name: str) -> list[dict]:
    """Chapter 10's headline rows (save_headline): LSLU's deploy params and GFLOPs at
    the largest input size, LSLU's extra parameters over the series activation, and the deploy
    batch-1 latency ratio LSLU / series at the largest size timed (flagged as a timing), each
    beside the paper's (E9 of lslu.paper; NOT_AVAILABLE where it has none)."""
    paper = {q: paper_number("E9", model, q) for q in
             ("params_m_baseline", "params_m_lslu", "gflops_lslu", "latency_ms_baseline",
              "latency_ms_lslu")}

    def difference(a, b, scale=1.0):  # None if either paper value is missing
        return None if paper[a] is None or paper[b] is None else (paper[a] - paper[b]) * scale

    ratio = None if None in (paper["latency_ms_lslu"], paper["latency_ms_baseline"]) \
        else paper["latency_ms_lslu"] / paper["latency_ms_baseline"]
    size = max(costs["input_size"])
    at = costs[costs["input_size"] == size].set_index("activation")
    rows = [
        Headline(experiment="E9", quantity=f"{model} + LSLU: deploy params",
                 ours=round(float(at.loc["lslu", "params (deploy)"]) / 1e6, 2), unit="M",
                 paper=paper_text(paper["params_m_lslu"])),
        Headline(experiment="E9", quantity=f"{model} + LSLU: extra params over series (deploy)",
                 ours=int(at.loc["lslu", "params (deploy)"] - at.loc["series", "params (deploy)"]),
                 unit="params",
                 paper=paper_text(difference("params_m_lslu", "params_m_baseline", 1e6),
                                  decimals=0)),
        Headline(experiment="E9", quantity=f"{model} + LSLU: deploy GFLOPs at {size} px",
                 ours=round(float(at.loc["lslu", "MFLOPs (deploy)"]) / 1e3, 2), unit="GFLOPs",
                 paper=paper_text(paper["gflops_lslu"])),
    ]
    ratios = latency_ratios(latency)
    one = ratios[(ratios["graph"] == "deploy") & (ratios["batch"] == 1)]
    if not one.empty:
        best = one[one["input_size"] == one["input_size"].max()].iloc[0]
        rows.append(Headline(experiment="E9",
                             quantity=f"deploy latency LSLU / series, batch 1, "
                                      f"{int(best['input_size'])} px, {device_name}",
                             ours=round(float(best["lslu / series"]), 2), unit="ratio",
                             paper=paper_text(ratio), timing=True))
    return rows


def plot_latency(table, ncols: int = 3):
    """Latency per graph and activation (from latency_table): one panel per (input
    size, batch), one bar per graph x activation at the median, whiskers from p10 to p90."""
    df = as_frame(table)
    panels = list(dict.fromkeys(zip(df["input_size"], df["batch"])))
    labels = list(dict.fromkeys(zip(df["graph"], df["activation"])))
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (size, batch) in zip(axes, panels):
        part = df[(df["input_size"] == size) & (df["batch"] == batch)]
        for j, (graph, act) in enumerate(labels):
            row = part[(part["graph"] == graph) & (part["activation"] == act)]
            if row.empty:
                continue
            r = row.iloc[0]
            err = [[r["median_ms"] - r["p10"]], [r["p90"] - r["median_ms"]]]
            ax.bar(j, r["median_ms"], 0.7, yerr=err, capsize=3, color=f"C{j}",
                   label=f"{graph}, {act}")
        ax.set_xticks(range(len(labels)), [f"{g}\n{a}" for g, a in labels], fontsize="small")
        style_axes(ax, None, "latency (ms)", f"{size} px, batch {batch}", legend=False)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return fig
