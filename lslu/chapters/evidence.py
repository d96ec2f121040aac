"""The evidence page: what the committed runs of the evidence profile (Fashion-MNIST, results/)
show so far, computed with the chapters' own code from the stored runs. It trains nothing: runs
the profile asks for that are not stored yet are listed as missing, and a model is compared only
once both of its arms have at least two stored seeds."""
from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..grid import chapter_parameters
from ..results import ResultsStore
from . import cifar
from .common import plural

#: the chapter whose runs the page shows: with vs without LSLU (E1; E2 and E4, E7, E8 share them)
COMPARISON_CHAPTER = "02_cifar10"

#: Where the page saves its top-1 figure and its summary for the landing page (book/intro.md
#: shows both), relative to notebooks/, where the book runs its notebooks. Written at every
#: build (.gitignore'd).
LANDING_FIGURE = "../book/_static/evidence_top1.png"
LANDING_SUMMARY = "../book/_static/evidence_summary.md"

#: what no profile that fits a CPU covers, said wherever the evidence is summarised
NOT_COVERED = ("It does not cover the paper's setting: CIFAR-10/100 (the paper's +3.17% is on "
               "CIFAR-100), 224 px inputs, 300 epochs of the reference recipe.")


def stored_runs(profile: str, results_dir, stem: str = COMPARISON_CHAPTER):
    """(stored RunResults, missing TrainConfigs) of chapter ``stem`` under ``profile``."""
    params = chapter_parameters(profile, stem)
    configs = cifar.configs(**params)
    store = ResultsStore(results_dir)
    stored = [store.load(c.run_id) for c in configs if store.has_result(c.run_id)]
    missing = [c for c in configs if not store.has_result(c.run_id)]
    return stored, missing


def comparable(results) -> list:
    """The runs of the models whose two arms (baseline, LSLU) each have >= 2 stored seeds."""
    arms = Counter((r.config["model"], r.config["activation"]) for r in results)
    models = {m for (m, a) in arms if arms[(m, None)] >= 2 and arms[(m, "lslu")] >= 2}
    return [r for r in results if r.config["model"] in models]


def progress_table(stored, missing) -> pd.DataFrame:
    """Seeds stored and still missing per model and activation."""
    rows = Counter()
    for kind, items in (("stored", [r.config for r in stored]),
                        ("missing", [c.to_dict() for c in missing])):
        for c in items:
            rows[(c["model"], c["activation"] or "baseline", kind)] += 1
    keys = sorted({(m, a) for m, a, _ in rows})
    return pd.DataFrame([{"model": m, "activation": a, "seeds stored": rows[(m, a, "stored")],
                          "seeds missing": rows[(m, a, "missing")]} for m, a in keys])


def status_line(stored, missing) -> str:
    total = len(stored) + len(missing)
    return (f"{plural(len(stored), 'run')} of {total} stored for the with/without-LSLU comparison"
            + (f"; {plural(len(missing), 'run')} still to train" if missing else ""))


def save_landing_figure(fig: Figure | None, path=LANDING_FIGURE) -> Path:
    """Save ``fig`` (the page's bar figure of final top-1 per arm) to ``path`` for the landing
    page, creating its folder; without a comparison (``fig`` None) a small figure that says so
    instead, so that the landing page's image always exists after a build. Returns the path."""
    if fig is not None and not isinstance(fig, Figure):
        raise ValueError(f"save_landing_figure needs a matplotlib Figure or None, got "
                         f"{type(fig).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig is None:
        fig = Figure(figsize=(6.4, 1.2))
        fig.text(0.5, 0.5, "no comparison yet: no model has two stored seeds in both arms",
                 ha="center", va="center", fontsize="large")
    fig.savefig(path, dpi=100)
    return path


def budget_text(results) -> str:
    """The data and budget of stored runs, in words: dataset, training images, epochs, seeds."""
    if not results:
        return "no runs stored"
    configs = [r.config for r in results]
    datasets = ", ".join(sorted({c["dataset"] for c in configs}))
    limits = sorted({c.get("limit") or 0 for c in configs})
    images = ("all training images" if limits == [0] else
              " / ".join("all" if n == 0 else f"{n:,}" for n in limits) + " training images")
    epochs = "/".join(str(e) for e in sorted({c["epochs"] for c in configs}))
    sizes = "/".join(str(s) for s in sorted({c["input_size"] for c in configs}))
    return f"{datasets}, {images} at {sizes} px, {epochs} epochs, official test set"


def summary_lines(profile: str, results_dir) -> list[str]:
    """What the committed evidence says so far, one sentence per line (the landing page and the
    summary chapter print it): the budget, then per model its two arms, the gain with its 95%
    interval and Welch p-value, or how many seeds are still missing, then what it does not
    cover."""
    stored, missing = stored_runs(profile, results_dir)
    runs = comparable(stored)
    e1 = cifar.with_and_without_lslu(runs) if runs else None
    lines = [f"Evidence profile {profile} ({budget_text(stored)}): {status_line(stored, missing)}."]
    seeds = Counter((r.config["model"], r.config["activation"]) for r in stored)
    asked = Counter((c.model, c.activation) for c in missing) + seeds
    compared = [] if e1 is None else list(e1.gains["model"])
    if e1 is not None:  # summary_lines: one line per row of gains, in its order
        lines += [" ".join(line.split()) + f"; seeds: {seeds[(model, None)]} without, "
                  f"{seeds[(model, 'lslu')]} with LSLU." for model, line
                  in zip(compared, e1.summary_lines())]
    for model in dict.fromkeys(m for m, _ in asked):
        if model not in compared:
            have = min(seeds[(model, None)], seeds[(model, "lslu")])
            lines.append(f"{model}: not compared yet ({have} of "
                         f"{min(asked[(model, None)], asked[(model, 'lslu')])} seeds stored in "
                         f"both arms; two are needed).")
    return lines + [NOT_COVERED]


def save_landing_summary(lines: list[str], path=LANDING_SUMMARY) -> Path:
    """Write ``lines`` (summary_lines) as a Markdown list for the landing page; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(textwrap.fill(line, 96, initial_indent="- ", subsequent_indent="  ")
                            + "\n" for line in lines), encoding="utf-8")
    return path


def configs(**params) -> list:
    """This page trains nothing (it reads chapter 2's runs of the evidence profile)."""
    return []
