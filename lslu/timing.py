"""One timing loop for every speed comparison: the benchmarks and the efficiency chapter.

On a shared machine absolute times swing with background load, so the functions compared are
called round-robin (one call each, in turn) and only their ratio, measured side by side, is
reported. Each call is timed with ``_clock``: the GPU is synchronised before the time is read
(CUDA work is asynchronous), as torch.utils.benchmark's timer does. Its ``Timer`` class does not
fit: every ``timeit`` call first runs the statement twice untimed, which would break the turns.
Spread: a ratio is the median of the per-round ratios (the calls of one round shared its load),
its interval a bootstrap over the rounds (and over copies, where several copies of each thing
were timed: paired_ratio), and a verdict "faster"/"slower" is given only when that interval
excludes 1.
"""
from __future__ import annotations

import numbers
import time
from typing import Callable

import numpy as np
import torch

__all__ = ["round_robin", "interleaved", "summarize", "median_interval", "paired_ratio",
           "ratio_fields", "worst_ratio", "judge_ratio", "speed_verdict"]


def round_robin(fns: dict[str, Callable[[], object]], repeats: int,
                warmup: int = 1) -> dict[str, np.ndarray]:
    """Seconds per call of every function in ``fns``: ``warmup`` untimed rounds, then ``repeats``
    timed rounds, each calling every function once in turn. Returns name -> array (repeats,)."""
    if not isinstance(fns, dict) or not fns or not all(callable(f) for f in fns.values()):
        raise ValueError(f"fns needs a non-empty dict of name -> callable, got {fns!r}")
    for name, value, low in (("repeats", repeats, 1), ("warmup", warmup, 0)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: np.empty(repeats) for k in fns}
    for i in range(repeats):
        for k, fn in fns.items():
            t0 = _clock()
            fn()
            times[k][i] = _clock() - t0
    return times


def _clock() -> float:
    """perf_counter after the GPU has finished its queued work (what torch.utils.benchmark's timer
    does; that module is not imported: it loads torch's C++ extension builder, which warns on
    stderr on machines with a CUDA toolkit and no GPU, and every book page would show it)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def summarize(seconds) -> dict:
    """Median, 10th/90th percentile and minimum of a series of times, in milliseconds."""
    t = 1e3 * np.asarray(seconds, dtype=float)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"summarize needs a non-empty 1-d series of times, got shape {t.shape}")
    p10, median, p90 = np.percentile(t, [10, 50, 90])
    return {"median_ms": float(median), "p10_ms": float(p10), "p90_ms": float(p90),
            "min_ms": float(t.min())}


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict:
    """round_robin, each function's times summarized (name -> summarize's dict, in ms)."""
    return {k: summarize(t) for k, t in round_robin(fns, repeats, warmup).items()}


def median_interval(values, confidence: float = 0.9, resamples: int = 2000,
                    seed: int = 0) -> dict:
    """Median of ``values`` (e.g. per-round time ratios) with a ``confidence`` bootstrap interval.
    Returns {"median", "lo", "hi", "confidence", "n"}."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"median_interval needs a non-empty 1-d series, got shape {v.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    boot = np.median(v[np.random.default_rng(seed).integers(0, v.size, (resamples, v.size))], 1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"median": float(np.median(v)), "lo": float(lo), "hi": float(hi),
            "confidence": confidence, "n": int(v.size)}


def paired_ratio(times: dict, numerator: str, denominator: str, confidence: float = 0.9,
                 resamples: int = 2000, seed: int = 0) -> dict:
    """times[numerator] / times[denominator] from round_robin's times: the median over rounds of
    the per-round time ratio (the calls of one round share the machine's load, so drift between
    rounds cancels), with a ``confidence`` bootstrap interval.

    Each entry is a series over rounds, or an array (copies, rounds): several copies of each
    thing timed in the same rounds (copies of one model built one after the other run up to 5%
    apart on a CPU: where their memory lies), a round's time being the mean over copies; the
    bootstrap then resamples copies (in pairs) as well as rounds, so the interval holds that
    spread too. Returns {"value", "interval"}."""
    a = np.asarray(times[numerator], dtype=float)
    b = np.asarray(times[denominator], dtype=float)
    if a.ndim == 1 and b.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_ratio needs two series (rounds,) or arrays (copies, rounds) of "
                         f"the same rounds, got shapes {a.shape} and {b.shape}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    copies, rounds = a.shape
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, copies, size=(resamples, copies))[:, :, None]
    boot_a = np.take_along_axis(a[None], pick, axis=1).mean(1)    # (resamples, rounds)
    boot_b = np.take_along_axis(b[None], pick, axis=1).mean(1)
    rows = rng.integers(0, rounds, size=(resamples, rounds))
    boot = np.median(np.take_along_axis(boot_a / boot_b, rows, axis=1), axis=1)
    lo, hi = np.quantile(boot, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"value": float(np.median(a.mean(0) / b.mean(0))), "interval": [float(lo), float(hi)]}


def ratio_fields(times: dict, name: str, numerator: str, denominator: str) -> dict:
    """paired_ratio as the fields of a result row: {name: ratio, name + "_interval": [lo, hi]},
    what worst_ratio and judge_ratio read."""
    r = paired_ratio(times, numerator, denominator)
    return {name: r["value"], f"{name}_interval": r["interval"]}


def worst_ratio(rows: list, key: str, op: str) -> dict:
    """Of ``rows`` (dicts holding ``key`` and ``key + "_interval"``), the worst ratio for a target
    ``op``: the largest for "<=", the smallest for ">=". Returns {"value", "interval"}."""
    if op not in ("<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', got {op!r}")
    if not rows:
        raise ValueError(f"no rows to take the worst {key!r} of")
    row = (max if op == "<=" else min)(rows, key=lambda r: r[key])
    return {"value": row[key], "interval": row[f"{key}_interval"]}


def judge_ratio(rows: list, key: str, op: str, target: float) -> dict:
    """worst_ratio against a target, judged on the ratio itself; the interval stays beside it to
    show how firm the verdict is. Returns {"value", "interval", "target", "pass"}."""
    entry = worst_ratio(rows, key, op)
    ok = entry["value"] <= target if op == "<=" else entry["value"] >= target
    return {**entry, "target": f"{op} {target}", "pass": bool(ok)}


def speed_verdict(lo: float, hi: float, name: str = "LSLU", other: str = "series") -> str:
    """A time ratio's verdict from its interval: slower/faster only when it excludes 1."""
    if lo > 1:
        return f"{name} slower than {other}"
    if hi < 1:
        return f"{name} faster than {other}"
    return "no difference measurable at this precision"
