"""Functions behind chapters 02_cifar10 (E1), 03_cifar100 (E2) and 08_convergence (E7)."""
import math

import pandas as pd
import pytest
from matplotlib.figure import Figure

from lslu.chapters import cifar, common, convergence
from lslu.results import RunResult
from lslu.train import TrainConfig, run_grid


def fake_result(model="vanillanet_5_x0_25", activation=None, seed=0,
                val_acc=(0.5, 0.85, 0.92, 0.95), epoch_time=(1.0, 2.0, 3.0, 4.0),
                params=100, params_deploy=80, flops=2_000_000) -> RunResult:
    """A RunResult built by hand (no training)."""
    config = TrainConfig(model=model, activation=activation, seed=seed,
                         epochs=len(val_acc)).to_dict()
    history = [{"epoch": i + 1, "train_loss": 2.0 / (i + 1), "val_loss": 1.5 / (i + 1),
                "val_acc": a, "val_acc_ema": None, "lr": 1e-3, "lam": 1.0, "epoch_time": t,
                "theta": {}, "omega": {}} for i, (a, t) in enumerate(zip(val_acc, epoch_time))]
    final = {"val_acc": val_acc[-1], "val_loss": history[-1]["val_loss"],
             "best_val_acc": max(val_acc), "val_acc_ema": None, "epochs_run": len(val_acc),
             "train_time_s": sum(epoch_time)}
    return RunResult(run_id=f"{model}-{activation}-{seed}", config=config, history=history,
                     final=final, params=params, params_deploy=params_deploy, flops=flops)


# ------------------------------------------------------------------------ time_to_accuracy
def test_time_to_accuracy_first_epoch_reaching_target_and_cumulative_seconds():
    r = fake_result()
    assert convergence.time_to_accuracy(r, 0.9) == (3, 6.0)
    assert convergence.time_to_accuracy(r, 0.92) == (3, 6.0)  # reaching it exactly counts
    assert convergence.time_to_accuracy(r, 0.5) == (1, 1.0)
    assert convergence.time_to_accuracy(r, 0.95) == (4, 10.0)


def test_time_to_accuracy_not_reached_and_bad_target():
    r = fake_result()
    assert convergence.time_to_accuracy(r, 0.99) == (None, None)
    for bad in (0, -0.1, 90, 1.5, "0.9", True):
        with pytest.raises(ValueError, match="fraction"):
            convergence.time_to_accuracy(r, bad)
    assert convergence.check_target_accuracy(1) == 1.0


def test_convergence_table_and_verdict():
    results = [
        fake_result("vanillanet_5_x0_25", None, val_acc=(0.5, 0.8, 0.91)),
        fake_result("vanillanet_5_x0_25", "lslu", val_acc=(0.6, 0.95, 0.96)),
        fake_result("resnet18", None, val_acc=(0.5, 0.95, 0.96)),
        fake_result("resnet18", "lslu", val_acc=(0.5, 0.6, 0.7)),
    ]
    table = convergence.convergence_table(results, 0.9)
    assert table["epochs_to_target"].tolist()[:3] == [3, 2, 2]
    assert math.isnan(table["epochs_to_target"].iloc[3])
    shown = convergence.convergence_display(table)
    assert shown["epochs to target"].tolist() == ["3", "2", "2", "not reached"]
    assert "seconds to target" not in shown
    assert convergence.convergence_display(table, seconds=True)["seconds to target"].tolist() == [
        "6.0", "3.0", "3.0", "not reached"]
    rows = convergence.convergence_headline_rows(table, 0.9)
    assert rows[0].as_dict() == {"experiment": "E7", "quantity": "epochs to 90% top-1, "
                       "vanillanet_5_x0_25 + series on digits", "ours": 3.0, "paper": "not available",
                       "unit": "epochs"}
    assert rows[-1].ours == "not reached"
    assert table["act_fn"].tolist() == ["series", "lslu", "relu", "lslu"]
    verdict = convergence.convergence_verdict(table).set_index("model")
    assert verdict.loc["vanillanet_5_x0_25", "LSLU in fewer epochs"] == "yes"
    assert verdict.loc["vanillanet_5_x0_25", "LSLU in fewer seconds"] == "yes"  # 3 s < 6 s
    assert verdict.loc["resnet18", "LSLU in fewer epochs"] == "no"
    assert math.isinf(verdict.loc["resnet18", "LSLU epochs"])
    assert verdict.loc["resnet18", "seeds reached (baseline/LSLU)"] == "1/1 vs 0/1"
    assert convergence.convergence_display(verdict.reset_index())["LSLU epochs"].tolist() == [
        "2", "not reached"]
    neither = convergence.convergence_verdict(convergence.convergence_table(results, 0.99))
    assert set(neither["LSLU in fewer epochs"]) == {"neither reaches the target"}
    same = convergence.convergence_verdict(convergence.convergence_table(results[:1] * 2, 0.9)
                                        .assign(activation=["baseline", "lslu"]))
    assert same["LSLU in fewer epochs"].iloc[0] == "no, the same"


def test_seconds_are_not_judged_when_an_arm_was_trained_under_uneven_loads():
    results = [fake_result("vanillanet_5_x0_25", act, val_acc=(0.5, 0.95, 0.96), seed=seed)
               for act in (None, "lslu") for seed in (0, 1)]
    table = convergence.convergence_table(results, 0.9)
    even = convergence.convergence_verdict(table).iloc[0]
    assert even["LSLU in fewer seconds"] == "no, the same"
    # one baseline run took 1.5x as long per epoch (another job on the machine): its seconds
    # measure the load, and no verdict in seconds is given
    slow = table.index[(table.activation == "baseline") & (table.seed == 1)]
    table.loc[slow, ["seconds_to_target", "seconds_per_epoch"]] *= 1.5
    uneven = convergence.convergence_verdict(table).iloc[0]
    assert uneven["LSLU in fewer seconds"].startswith("not judged: an epoch took 2 to 3 s")
    assert uneven["LSLU in fewer epochs"] == "no, the same"  # epochs are unaffected


# --------------------------------------------------------------------------- experiments
SMALL = dict(dataset="digits", limit=64, epochs=1, batch_size=32, warmup_epochs=0,
             device="cpu")


def test_configs_are_validated_before_training():
    base = common.base_config(**SMALL)
    configs = cifar.with_and_without_lslu_configs(base, ["vanillanet_5_x0_25"], [0, 1])
    assert [(c.activation, c.seed) for c in configs] == [(None, 0), (None, 1), ("lslu", 0),
                                                          ("lslu", 1)]
    with pytest.raises(ValueError, match="non-empty list"):
        cifar.with_and_without_lslu_configs(base, "resnet18", [0])
    with pytest.raises(ValueError, match="non-empty list"):
        cifar.with_and_without_lslu_configs(base, ["resnet18"], [])
    with pytest.raises(ValueError, match="unknown model"):
        cifar.with_and_without_lslu_configs(base, ["resnet19"], [0])


def test_with_and_without_lslu_tiny_runs(tmp_path):
    configs = cifar.configs(models=["vanillanet_5_x0_25"], seeds=[0], extra=SMALL)
    out = cifar.with_and_without_lslu(run_grid(configs, results_dir=tmp_path, progress=False))
    assert len(out.results) == 2 and out.seeds == [0] and out.datasets == ["digits"]
    assert out.frame["label"].tolist() == ["vanillanet_5_x0_25 + series",
                                           "vanillanet_5_x0_25 + lslu"]
    assert out.table["seeds"].tolist() == [1, 1]
    assert (out.table["params"] > out.table["params_deploy"]).all()
    assert (out.table["mflops"] > 0).all()
    assert out.gains["model"].tolist() == ["vanillanet_5_x0_25"]
    assert math.isnan(out.gains["p_value"].iloc[0])  # one seed: no test
    assert out.gain("vanillanet_5_x0_25") == pytest.approx(
        out.frame["top1"].iloc[1] - out.frame["top1"].iloc[0])
    assert len(out.history) == 2 and len(out.curves) == 2
    shown = out.display_gains()
    assert shown["Welch p"].tolist() == ["n/a"]
    assert out.display_table()["top-1 (%)"].str.match(r"^\d+\.\d\d$").all()  # common.PP_DECIMALS
    again = cifar.with_and_without_lslu(run_grid(configs, results_dir=tmp_path, progress=False))
    assert all(r.cached for r in again.results)  # the shared runs come from the store


def comparison_from(results) -> "cifar.LsluComparison":
    frame = common.results_frame(results)
    frame.insert(2, "label", [common.run_label(r.config) for r in results])
    history = cifar.history_frame(results)
    return cifar.LsluComparison(results, frame, pd.DataFrame(),
                                common.compare(frame, ["model"], "activation", "baseline"),
                                history, cifar.mean_curves(history))


def test_gains_over_two_seeds_have_p_value_and_interval(tmp_path, monkeypatch):
    results = [fake_result(activation=a, seed=s, val_acc=(v,))
               for a, vs in ((None, (0.80, 0.82)), ("lslu", (0.90, 0.93))) for s, v in
               enumerate(vs)]
    cmp = comparison_from(results)
    shown = cmp.display_gains()
    assert shown["LSLU gain (pp)"].iloc[0] == "+10.50"  # the shared rule: common.fmt_pp
    assert shown["Welch p"].iloc[0] != "n/a"
    assert shown["bootstrap 95% interval (pp)"].iloc[0].startswith("[")
    assert cmp.curves["seeds"].tolist() == [2, 2]
    assert "need" in common.significance_note([0]) and "1 seed" in \
        common.significance_note([0])
    assert "Welch" in common.significance_note([0, 1])
    cmp.table = common.summarize(cmp.frame, ["model", "activation", "act_fn", "label"]).assign(
        params=100, params_deploy=80, mflops=2.0)
    (line,) = cmp.summary_lines()
    assert " ".join(line.split()).startswith(
        "vanillanet_5_x0_25: series 81.00% -> LSLU 91.50% top-1, gain +10.50 pp (Welch p = ")
    assert max(map(len, line.split("\n"))) <= common.TEXT_WIDTH  # wrapped to the page
    table = cmp.paper_vs_ours("E2", "VanillaNet-5, CIFAR-100")  # the shipped file: E2 gain only
    assert table.loc[("vanillanet_5_x0_25", "LSLU gain (pp)"), "paper"] == \
        "+3.17 (VanillaNet-5, CIFAR-100)"
    assert table.loc[("vanillanet_5_x0_25", "LSLU gain (pp)"), "ours"] == "+10.50"
    assert (table["paper"] == "not available").sum() == len(table) - 1
    assert (cmp.paper_vs_ours("E1")["paper"] == "not available").all()
    # a value added to the paper file shows up in its row, and nowhere else
    extra = tmp_path / "paper.yaml"
    extra.write_text("E1:\n  vanillanet_5: {top1_baseline: 76.5}\n")
    monkeypatch.setenv("LSLU_PAPER_VALUES", str(extra))
    table = cmp.paper_vs_ours("E1")
    assert table.loc[("vanillanet_5_x0_25", "top-1, series (%)"), "paper"] == "76.50"
    assert (table["paper"] == "not available").sum() == len(table) - 1
    monkeypatch.delenv("LSLU_PAPER_VALUES")
    rows = cmp.headline_rows("E2", "VanillaNet-5, CIFAR-100")
    assert [r.unit for r in rows] == ["%", "%", "pp"]
    assert rows[-1].as_dict() == {"experiment": "E2", "quantity": "LSLU gain, vanillanet_5_x0_25 on digits "
                        "(paper: VanillaNet-5, CIFAR-100)", "ours": 10.5, "paper": "+3.17",
                        "unit": "pp",
                        # the per-seed evidence the summary's interval and deduplication use
                        "baseline_values": [80.0, 82.0], "values": [90.0, 93.0],
                        "runs": sorted(r.run_id for r in results)}
    assert "baseline_values" not in rows[0].as_dict()  # a top-1 row carries no evidence
    assert cmp.headline_rows("E1")[-1].quantity == "LSLU gain, vanillanet_5_x0_25 on digits"


def test_history_frame_running_seconds():
    h = cifar.history_frame([fake_result()])
    assert h["train_seconds"].tolist() == [1.0, 3.0, 6.0, 10.0]
    assert h["val_acc"].tolist() == pytest.approx([50, 85, 92, 95])


def test_paper_gain_comparability_and_dataset_note():
    ok, diffs = cifar.paper_gain_comparability(
        TrainConfig.reference_recipe().to_dict(), "vanillanet_5")
    assert ok and diffs == []
    ok, diffs = cifar.paper_gain_comparability(common.base_config(**SMALL),
                                                     "vanillanet_5_x0_25")
    assert not ok
    assert diffs[0] == "dataset: 'digits' vs 'cifar100'"
    assert any(d.startswith("input_size: 32 vs 224") for d in diffs)
    assert "stands in" in common.dataset_note("digits", "cifar10", "E1")
    assert "stands in" not in common.dataset_note("cifar10", "cifar10", "E1")
    # a real benchmark in CIFAR's place says what its numbers are, and that they are not the paper's
    real = " ".join(common.dataset_note("fashion_mnist", "cifar100", "E2").split())
    assert "a real benchmark that stands in" in real and "not the paper's quantity" in real
    assert "code path works" not in real
    assert "cifar10, cifar100 or imagefolder; this page runs on cifar100." in \
        " ".join(common.dataset_note("cifar100", ["cifar10", "cifar100", "imagefolder"],
                                     "E7").split())  # wrapped to the page: compare the words


def test_printed_notes_fit_the_text_column_and_keep_every_word():
    # the book clips stream outputs at about 90 characters instead of wrapping them
    long_hw = "NVIDIA H200 with a very long marketing name " * 3
    results = [fake_result(seed=s) for s in (0, 1)]
    for r in results:
        r.hardware = {"gpu": long_hw}
    texts = [common.run_header("paper", results),
             common.dataset_note("digits", ["cifar10", "cifar100", "imagefolder"], "E7"),
             common.significance_note([0]), common.significance_note([0, 1]),
             common.wrap("  1. " + "word " * 40)]
    for text in texts:
        assert max(map(len, text.splitlines())) <= common.TEXT_WIDTH, text
    header = common.run_header("paper", results)
    assert "2 seeds [0, 1]" in header and "2 runs" in header and " ".join(long_hw.split()) in \
        " ".join(header.split())
    one = common.run_header("paper", results[:1])
    assert "1 seed [0]" in one and "| 1 run\n" in one  # singular, no "1 seed(s)"
    item = common.wrap("  1. " + "word " * 40).splitlines()
    assert item[0].startswith("  1. word") and all(ln.startswith("     word") for ln in item[1:])
    assert common.wrap("short\nlines stay") == "short\nlines stay"


# --------------------------------------------------------------------------------- plots
def test_plots_with_and_without():
    results = [fake_result(m, a, val_acc=(0.5, 0.9)) for m in ("vanillanet_5_x0_25", "resnet18")
               for a in (None, "lslu")]
    cmp = comparison_from(results)
    fig = cifar.plot_with_and_without(cmp.curves, "val_acc", target=90)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 5  # 4 runs + target
    fig = convergence.plot_convergence(cmp.curves, target=90)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 3 and shown[1].get_legend() is None
    assert fig.get_size_inches()[0] <= 7.5  # the page: 2 panels per row, rows stacked
    assert len({round(ax.get_position().x0, 3) for ax in shown}) == 2
    fig = cifar.plot_top1_bars(cmp.frame)
    ax = fig.axes[0]
    assert len(ax.patches) == 4
    assert {t.get_text() for t in ax.texts} == {"90.0"}


# ------------------------------------------- what ran: dropout, pipeline, reference's best
def with_config(result, **fields):
    result.config = TrainConfig(**(result.config | fields)).to_dict()
    return result


def test_dropout_line_says_which_placement_and_rate_ran():
    ours = [with_config(fake_result(seed=s), drop_rate=0.1) for s in (0, 1)]
    ref = [with_config(fake_result("resnet18", seed=0), drop_rate=0.05,
                       dropout_placement="reference")]
    assert "rate 0.1, placement ours (ResNet18: in each block after the first" in \
        " ".join(common.dropout_line(ours).split())
    text = " ".join(common.dropout_line(ref).split())
    assert "rate 0.05, placement the reference's" in text and "before the fc" in text
    both = " ".join(common.dropout_line(ours + ref).split())
    assert "rates 0.05, 0.1" in both and "ours" in both and "the reference's" in both
    assert "(no dropout)" in common.dropout_line([fake_result()])
    assert max(map(len, common.dropout_line(ours + ref).splitlines())) <= common.TEXT_WIDTH


def test_run_header_says_which_data_pipeline_ran():
    ours = " ".join(common.run_header("smoke", [fake_result()]).split())
    assert "data pipeline: ours (train: random crop with stored size / 8 padding" in ours
    flips_only = " ".join(common.run_header("smoke", [with_config(fake_result(),
                                                                  crop_padding=0)]).split())
    assert "data pipeline: ours (train: no random crop, flips" in flips_only
    big = " ".join(common.run_header("paper", [with_config(
        fake_result(), pipeline="reference", input_size=224)]).split())
    assert "data pipeline: reference (train: RandomResizedCrop(224, scale 0.08-1, bicubic)" in big
    assert "ImageNet mean/std" in big and "CenterCrop(224)" in big
    small = " ".join(common.run_header("paper", [with_config(
        fake_result(), pipeline="reference", input_size=32)]).split())
    assert "small-input branch" in small and "RandomResizedCrop" not in small


def test_run_header_says_when_runs_trained_on_a_subset():
    assert "training images" not in common.run_header("smoke", [fake_result()])
    subset = " ".join(common.run_header("smoke", [with_config(fake_result(), limit=10000)]).split())
    assert "at 32 px | training images: a subset of 10,000 |" in subset
    mixed = " ".join(common.run_header("smoke", [with_config(fake_result(), limit=10000),
                                                 fake_result()]).split())
    assert "training images: a subset of 10,000, all |" in mixed


def test_display_table_shows_the_reference_best_only_for_the_reference_recipe():
    def runs(pipeline):
        out = []
        for m in ("vanillanet_5_x0_25", "resnet18"):
            for a in (None, "lslu"):
                for s, accs in ((0, (0.5, 0.9, 0.8)), (1, (0.5, 0.7, 0.6))):
                    r = with_config(fake_result(m, a, seed=s, val_acc=accs), pipeline=pipeline)
                    r.final["reference_best_val_acc"] = max(accs)
                    out.append(r)
        return out
    ref = cifar.with_and_without_lslu(runs("reference"))
    shown = ref.display_table()
    assert ref.has_reference_best
    assert shown["ref. best top-1 (%)"].tolist() == ["80.00 ± 14.14"] * 4  # max of 90 and 70
    assert shown["top-1 (%)"].tolist() == ["70.00 ± 14.14"] * 4  # final: 80 and 60
    assert "optimistic" in ref.reference_best_note()
    ours = cifar.with_and_without_lslu(runs("ours"))
    assert not ours.has_reference_best and ours.reference_best_note() == ""
    assert "ref. best top-1 (%)" not in ours.display_table()
    old = runs("reference")
    del old[0].final["reference_best_val_acc"]  # stored before the reference's best existed
    assert cifar.with_and_without_lslu(old).display_table()["ref. best top-1 (%)"].iloc[0] == "n/a"


def test_verdict_display_is_narrow_and_keeps_the_verdict():
    results = [fake_result("vanillanet_5_x0_25", None, val_acc=(0.5, 0.8, 0.91)),
               fake_result("vanillanet_5_x0_25", "lslu", val_acc=(0.6, 0.95, 0.96)),
               fake_result("resnet18", None, val_acc=(0.5, 0.95, 0.96)),
               fake_result("resnet18", "lslu", val_acc=(0.5, 0.6, 0.7))]
    verdict = convergence.convergence_verdict(convergence.convergence_table(results, 0.9))
    epochs = convergence.verdict_display(verdict)
    assert epochs["epochs: baseline"].tolist() == ["3", "2"]
    assert epochs["epochs: LSLU"].tolist() == ["2", "not reached"]
    assert epochs["LSLU sooner"].tolist() == ["yes", "no"]
    assert epochs["reached (base vs LSLU)"].tolist() == ["1/1 vs 1/1", "1/1 vs 0/1"]
    seconds = convergence.verdict_display(verdict, seconds=True)
    assert seconds["seconds: baseline"].tolist() == ["6.0", "3.0"]  # 1 + 2 + 3 s; 1 + 2 s
    assert not any("epochs" in c for c in seconds.columns)  # split: seconds only
    for shown in (epochs, seconds):  # the long names of convergence_display made it overflow
        assert len(shown.columns) <= 6 and max(map(len, shown.columns)) <= 22
