"""E6 (task-specific image folder) and E8 (class selectivity): the digits image-folder export, the
confusion matrix, the activation-based selectivity index and the reference code's weight measure.
CPU, offline, fast."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure
from PIL import Image

from lslu.chapters import plots, selectivity, task_specific
from lslu import probes
from lslu import data, exports
from lslu.activations import make_activation
from lslu.models import build_model


# ---------------------------------------------------------------------------------------------
# the digits image folder
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    return data.export_digits_imagefolder(str(tmp_path_factory.mktemp("export") / "digits"))


def _pngs(folder):
    return {cls: sorted(n for n in os.listdir(os.path.join(folder, cls)) if n.endswith(".png"))
            for cls in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, cls))}


def test_digits_export_writes_every_digit_as_a_png(digits_folder):
    from sklearn.datasets import load_digits
    files = _pngs(digits_folder)
    assert sorted(files) == [str(d) for d in range(10)]
    assert sum(len(v) for v in files.values()) == 1797
    digits = load_digits()
    assert {k: len(v) for k, v in files.items()} == \
        {str(d): int((digits.target == d).sum()) for d in range(10)}
    with Image.open(os.path.join(digits_folder, str(digits.target[5]), "0005.png")) as im:
        assert im.size == (8, 8)
        pixels = np.asarray(im)
    np.testing.assert_array_equal(pixels, np.round(digits.images[5] * 255 / 16).astype(np.uint8))


def test_digits_export_is_reused(digits_folder, monkeypatch):
    before = {p: os.stat(os.path.join(digits_folder, c, p)).st_mtime_ns
              for c, names in _pngs(digits_folder).items() for p in names[:3]}

    def fail():
        raise AssertionError("a complete export must be reused, not written again")
    monkeypatch.setattr("sklearn.datasets.load_digits", fail)
    assert data.export_digits_imagefolder(digits_folder) == digits_folder
    after = {p: os.stat(os.path.join(digits_folder, c, p)).st_mtime_ns
             for c, names in _pngs(digits_folder).items() for p in names[:3]}
    assert before == after


def test_the_image_folder_is_the_data_whatever_extra_says(digits_folder):
    # a profile's extra reaches every chapter: its dataset and data_dir are not this chapter's
    configs = task_specific.configs(image_folder=digits_folder, models=["vanillanet_5_x0_25"],
                                    seeds=[0], epochs=1, extra={"dataset": "cifar10",
                                                                "data_dir": "/elsewhere",
                                                                "batch_size": 32})
    assert {(c.dataset, c.data_dir, c.batch_size) for c in configs} == {
        ("imagefolder", digits_folder, 32)}


def test_digits_export_trains_through_the_imagefolder_loader(digits_folder):
    ds = data.load_dataset("imagefolder", data_dir=digits_folder, input_size=16)
    assert ds.num_classes == 10 and ds.classes == [str(d) for d in range(10)]
    assert len(ds.train_labels) + len(ds.val_labels) == 1797
    assert ds.train_images.shape[1:] == (3, 16, 16)
    counts = task_specific.imagefolder_counts(digits_folder)
    assert counts["total"].sum() == 1797
    assert counts["val"].sum() == len(ds.val_labels)


def test_interrupted_or_foreign_folder_is_not_taken_for_an_export(tmp_path, monkeypatch):
    target = tmp_path / "digits"
    saved = []
    real_save = Image.Image.save

    def save_then_die(self, *args, **kwargs):
        if len(saved) == 50:
            raise KeyboardInterrupt
        saved.append(1)
        return real_save(self, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        data.export_digits_imagefolder(str(target))
    monkeypatch.undo()
    assert not target.exists() and os.listdir(tmp_path) == []  # no half export, no leftovers

    (target / "3").mkdir(parents=True)  # a folder with some images but no completion marker
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(target / "3" / "0001.png")
    with pytest.raises(ValueError, match="not a complete digits export"):
        data.export_digits_imagefolder(str(target))


def test_default_location_is_under_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LSLU_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(exports, "_export_complete", lambda *args: True)  # no writing
    assert data.export_digits_imagefolder() == str(tmp_path / "digits_imagefolder")


# ---------------------------------------------------------------------------------------------
# confusion matrix
# ---------------------------------------------------------------------------------------------
def test_per_class_accuracy_of_a_known_matrix():
    m = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])  # row = true class, column = predicted
    table = task_specific.per_class_accuracy(m, ["a", "b", "c"])
    assert table["accuracy (%)"].tolist() == [50.0, 100.0, 66.7]


# ---------------------------------------------------------------------------------------------
# class selectivity (Morcos et al. 2018)
# ---------------------------------------------------------------------------------------------
def test_selectivity_index_known_values():
    # rows: classes, columns: units
    means = np.array([[4.0, 2.0, 1.0],
                      [1.0, -1.0, 1.0],
                      [1.0, 0.0, 1.0]])
    raw = probes.selectivity_index(means, "exclude")
    assert raw[0] == pytest.approx((4 - 1) / (4 + 1))
    assert np.isnan(raw[1])          # a negative class mean: excluded
    assert raw[2] == 0.0             # all classes equal
    shifted = probes.selectivity_index(means, "shift")
    assert shifted[0] == pytest.approx(1.0)      # (3, 0, 0): one class only
    assert shifted[1] == pytest.approx(2.5 / 3.5)  # (3, 0, 1)
    assert shifted[2] == 0.0
    # shift form: unchanged by a constant added to a unit, and always in [0, 1]
    np.testing.assert_allclose(probes.selectivity_index(means + 7.5, "shift"), shifted)
    rand = np.random.default_rng(0).normal(size=(10, 500))
    si = probes.selectivity_index(rand)
    assert (si >= 0).all() and (si <= 1).all()
    with pytest.raises(ValueError):
        probes.selectivity_index(means, "clip")


def _stored_selectivity(model, loader, num_classes):
    """The selectivity stored with a run (lslu.probes), read back as the chapter reads it."""
    stored = probes.compute_probes(model, loader, [str(k) for k in range(num_classes)])
    return probes.selectivity_arrays(SimpleNamespace(probes=stored, run_id="toy"))


def test_stored_selectivity_from_hooks():
    # 1x1 identity conv then ReLU: the hooked ReLU output per class is known exactly
    model = nn.Sequential(nn.Conv2d(2, 2, 1), make_activation("relu", 2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        model[0].bias.zero_()
    values = {0: (3.0, -1.0), 1: (1.0, 2.0), 2: (1.0, 0.0)}  # channel values per class
    labels = torch.tensor([0, 1, 2, 2, 1, 0, 0])
    x = torch.stack([torch.tensor(values[int(y)]).view(2, 1, 1).expand(2, 3, 3) for y in labels])
    x[0, 0, 0, 0] = 12.0  # one pixel of one class-0 image: its spatial mean is 3 + 9/9 = 4
    loader = [(x[:4], labels[:4]), (x[4:], labels[4:])]
    out = _stored_selectivity(model, loader, 3)
    assert list(out) == ["1"]
    # class means (10/3, 1, 1) and (0, 2, 0): SI = (mu_max - mu_rest) / (mu_max + mu_rest)
    np.testing.assert_allclose(out["1"]["si"], [(10 / 3 - 1) / (10 / 3 + 1), 1.0], atol=1e-4)
    assert out["1"]["si_shuffled"].shape == (2,)  # the chance-level control (labels permuted)
    assert not out["1"]["output_negative"].any()  # ReLU: output = elementwise, non-negative
    table = selectivity.selectivity_table({"toy": [out]})
    assert table.loc[0, "units"] == 2 and table.loc[0, "depth"] == 1
    assert table.loc[0, "undefined (dead) units"] == 0
    assert "mean SI, shuffled labels" in table


def test_series_activation_is_read_before_and_after_its_bn():
    from lslu.activations import LSLU
    torch.manual_seed(0)
    act = LSLU(2, act_num=1).eval()
    with torch.no_grad():
        act.theta.fill_(2.0)
        act.omega.fill_(-0.5)  # g(x) = relu(2 relu(x) - 0.5)
        act.bn.running_mean.copy_(torch.tensor([5.0, -5.0]))  # outputs clearly non-zero
    model = nn.Sequential(nn.Identity(), act, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(6, 2, 4, 4)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    loader = [(x, labels)]
    g = torch.relu(2 * torch.relu(x) - 0.5).mean(dim=(2, 3)).double().numpy()
    y = act(x).mean(dim=(2, 3)).double().detach().numpy()
    expect = lambda v: np.stack([v[labels.numpy() == k].mean(0) for k in (0, 1)])  # noqa: E731
    out = _stored_selectivity(model, loader, 2)["1"]
    np.testing.assert_allclose(out["si"], probes.selectivity_index(expect(g), "exclude"),
                               atol=1e-4)  # read at g(x), before the depthwise conv and BN
    np.testing.assert_allclose(out["si_output_shift"],
                               probes.selectivity_index(expect(y), "shift"), atol=1e-4)
    assert out["output_negative"].tolist() == [True, False]  # channel 0: BN pushed it below 0


def test_activation_modules_of_vanillanet():
    names = list(probes.activation_modules(build_model("vanillanet_5_x0_25", 10, "lslu")))
    assert names == ["stem_act", "stages.0.act", "stages.1.act", "stages.2.act"]


# ---------------------------------------------------------------------------------------------
# the reference code's weight-based measure and its loading defect
# ---------------------------------------------------------------------------------------------
def test_weight_measure_known_values():
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 6.0]]).view(2, 3, 1, 1))
    # max over input channels minus their mean: 3 - 2 = 1 and 6 - 2 = 4; signed weights
    np.testing.assert_allclose(selectivity.reference_weight_selectivity(conv.weight, False), [1, 4])
    np.testing.assert_allclose(selectivity.reference_weight_selectivity(conv.weight), [0, 1])
    with torch.no_grad():
        conv.weight.neg_()  # signed weights: (0, 0, -6) -> max 0, mean -2 -> 2 (|w| would give 4)
    np.testing.assert_allclose(selectivity.reference_weight_selectivity(conv.weight, False), [1, 2])


def test_weight_measure_on_a_tiny_model():
    model = build_model("vanillanet_5_x0_25", 10, "lslu")
    measures = selectivity.weight_selectivity(model)
    assert list(measures) == ["stem1.0", "stem2.0", "stages.0.conv1.0", "stages.0.conv2.0",
                              "stages.1.conv1.0", "stages.1.conv2.0", "stages.2.conv1.0",
                              "stages.2.conv2.0", "cls1.0", "cls2"]
    assert measures["stem1.0"].size == 128 * 4 * 4  # per output channel and kernel position
    for values in measures.values():
        assert values.min() == 0.0 and values.max() == 1.0
    table = selectivity.weight_measure_table({"a": measures, "b": measures})
    assert (table["KS distance: a vs b"] == 0).all()


def test_reference_style_load_loads_nothing(tmp_path):
    torch.manual_seed(0)
    untrained = build_model("vanillanet_5_x0_25", 10, "lslu")
    torch.manual_seed(1)
    trained = build_model("vanillanet_5_x0_25", 10, "lslu")  # stands for trained weights
    path = tmp_path / "checkpoint-best.pth"
    torch.save(selectivity.reference_checkpoint(trained), path)
    outcome = selectivity.reference_style_load(untrained, torch.load(path, map_location="cpu"))
    assert outcome["tensors changed"] == 0
    assert outcome["parameters not found"] == outcome["parameters"] > 0
    assert outcome["checkpoint keys not used"] == ["model", "epoch"]
    # what the script should have done: load the "model" entry; then the measure follows it
    fresh = selectivity.weight_selectivity(untrained)
    untrained.load_state_dict(torch.load(path, map_location="cpu")["model"])
    loaded = selectivity.weight_selectivity(untrained)
    np.testing.assert_array_equal(loaded["stem1.0"],
                                  selectivity.weight_selectivity(trained)["stem1.0"])
    assert not np.array_equal(loaded["stem1.0"], fresh["stem1.0"])


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------
def test_figures(digits_folder):
    samples = task_specific.imagefolder_samples(digits_folder, per_class=3, seed=0)
    assert list(samples) == [str(d) for d in range(10)]
    assert all(len(v) == 3 and v[0].shape == (8, 8, 3) for v in samples.values())
    assert isinstance(task_specific.plot_image_grid(samples), Figure)
    m = np.array([[1, 0], [1, 1]])  # true 0,1,1 predicted 0,1,0
    assert isinstance(task_specific.plot_confusion_matrix(m, ["x", "y"]), Figure)
    assert isinstance(task_specific.plot_confusion_matrix(m, ["x", "y"], normalize=False), Figure)
    panels = {f"l{i}": {"a": [0.1, 0.2 * i], "b": [0.3]} for i in range(5)}
    fig = plots.plot_histogram_grid(panels)
    assert isinstance(fig, Figure) and len([a for a in fig.axes if a.get_visible()]) == 5
    # the page: 2 panels per row (3 rows stacked), at most 7.5 in wide at 100 dpi
    assert fig.axes[0].get_subplotspec().get_gridspec().get_geometry() == (3, 2)
    assert fig.get_size_inches()[0] <= 7.5
    with pytest.raises(ValueError, match="ncols must be an integer from 1 to 2"):
        plots.plot_histogram_grid(panels, ncols=4)
    table = selectivity.selectivity_table({"m": [{"l1": {
        "si": np.array([0.1, np.nan]), "si_shuffled": np.array([0.0, 0.1]),
        "output_negative": np.array([True, False]), "si_output_shift": np.array([0.4, 0.4])}}]})
    assert table.loc[0, "undefined (dead) units"] == 1 and table.loc[0, "mean SI"] == 0.1
    fig = selectivity.plot_selectivity_by_depth(table)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2


def test_selectivity_tables_split_the_wide_table_in_two_narrow_ones():
    table = selectivity.selectivity_table({"m": [{"l1": {
        "si": np.array([0.1, np.nan]), "si_shuffled": np.array([0.0, 0.1]),
        "output_negative": np.array([True, False]), "si_output_shift": np.array([0.4, 0.2])}}]})
    at_g, at_output = selectivity.selectivity_tables(table)
    assert at_g.columns.tolist() == ["model", "layer", "units", "dead", "mean SI", "median SI",
                                     "chance"]
    assert (at_g.loc[0, "dead"], at_g.loc[0, "mean SI"], at_g.loc[0, "chance"]) == (1, 0.1, 0.05)
    assert at_output.columns.tolist() == ["model", "layer", "neg. mean (%)", "mean SI (shift)"]
    assert (at_output.loc[0, "neg. mean (%)"], at_output.loc[0, "mean SI (shift)"]) == (50.0, 0.3)
    # the long names made the single table 247 px wider than the column
    assert all(len(t.columns) <= 7 and max(map(len, t.columns)) <= 16 for t in (at_g, at_output))


def test_layer_comparison_tests_the_per_seed_means():
    rng = np.random.default_rng(0)

    def arm(shift, seeds):
        # layer "a": LSLU's units more selective by `shift`; layer "b": the same, one dead unit
        return [{"a": {"si": rng.normal(0.2 + shift, 0.01, 40)},
                 "b": {"si": np.r_[rng.normal(0.3, 0.01, 40), np.nan]}} for _ in range(seeds)]

    si = {"vn + series": arm(0.0, 3), "vn + lslu": arm(0.1, 3)}
    per_seed = selectivity.per_seed_means(si)
    assert len(per_seed) == 2 * 3 * 2 and not per_seed["mean SI"].isna().any()
    table = selectivity.layer_comparison(si, "vn + series").set_index("layer")
    assert table.loc["a", "difference"] == pytest.approx(0.1, abs=0.01)
    assert table.loc["a", "p_value"] < 1e-4 and table.loc["a", "seeds"] == "3/3"
    assert abs(table.loc["b", "difference"]) < 0.01 and table.loc["b", "p_value"] > 0.05
    lines = selectivity.comparison_lines(si, "vn + series")
    assert lines[0].startswith("a: vn + series 0.20, vn + lslu 0.30, difference +0.10")
    assert lines[0].endswith("seeds 3/3: a difference the seeds support)")
    assert lines[1].endswith("not distinguishable from zero)")
    # one seed per arm: the means, and no test
    one = selectivity.comparison_lines({"x": arm(0.0, 1), "y": arm(0.1, 1)}, "x")
    assert all(line.endswith("(seeds 1/1: no test with one seed per arm)") for line in one)


def test_reference_script_replay_with_and_without_stored_weights(tmp_path):
    from lslu.results import ResultsStore, RunResult
    from lslu.train import TrainConfig
    config = TrainConfig(model="vanillanet_5_x0_25", activation="lslu", seed=3).to_dict()
    run = RunResult(run_id="0123456789abcdef", config=config, history=[],
                    final={"num_classes": 10, "val_acc": 0.5})
    fresh = selectivity.weight_selectivity(selectivity.untrained_model(run))
    # a committed store: JSON only; the checkpoint holds another initialisation of the model
    assert not selectivity.trained_weights_stored(run, tmp_path)
    model, outcome = selectivity.reference_script_load(run, results_dir=tmp_path)
    assert outcome["checkpoint"].startswith("another initialisation")
    assert outcome["tensors changed"] == 0 and outcome["checkpoint keys not used"] == [
        "model", "epoch"]
    seen = selectivity.weight_selectivity(model)
    assert all(np.array_equal(seen[k], fresh[k]) for k in fresh)
    # a store with the run's weights: the checkpoint holds them, and the load still ignores them
    torch.manual_seed(7)
    weights = build_model("vanillanet_5_x0_25", 10, "lslu").state_dict()
    ResultsStore(tmp_path).model_path(run.run_id).parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights, ResultsStore(tmp_path).model_path(run.run_id))
    assert selectivity.trained_weights_stored(run, tmp_path)
    model, outcome = selectivity.reference_script_load(run, results_dir=tmp_path)
    assert outcome["checkpoint"] == "trained weights" and outcome["tensors changed"] == 0
    assert all(np.array_equal(selectivity.weight_selectivity(model)[k], fresh[k]) for k in fresh)
