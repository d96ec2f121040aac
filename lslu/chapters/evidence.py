"""The evidence page: what the committed runs of the evidence profile (Fashion-MNIST, results/)
show so far, computed with the chapters' own code from the stored runs. It trains nothing: runs
the profile asks for that are not stored yet are listed as missing, and a model is compared only
once both of its arms have at least two stored seeds."""
from __future__ import annotations

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

#: Where the page saves its top-1 figure for the landing page (book/intro.md shows it), relative
#: to notebooks/, where the book runs its notebooks. Written at every build (.gitignore'd).
LANDING_FIGURE = "../book/_static/evidence_top1.png"


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


def configs(**params) -> list:
    """This page trains nothing (it reads chapter 2's runs of the evidence profile)."""
    return []
