"""The results store refuses wrong files in one line that names the file and what to do, and
files a chapter's headlines under the parameters that produced them."""
import json

import pytest
import torch
import yaml

from lslu import book
from lslu.chapters import summary
from lslu.results import ResultFileError, ResultsStore, RunResult
from lslu.train import TrainConfig, load_model

RUN = "0123456789abcdef"


def _stored(tmp_path) -> tuple[ResultsStore, dict]:
    store = ResultsStore(tmp_path)
    store.save(RunResult(run_id=RUN, config=TrainConfig().to_dict(),
                         history=[{"epoch": 1, "val_acc": 0.5}],
                         final={"val_acc": 0.5, "val_loss": 1.25, "best_val_acc": 0.5,
                                "train_loss": 1.5, "epochs_run": 1}))
    return store, json.loads(store.result_path(RUN).read_text())


def test_a_stored_result_loads_back(tmp_path):
    store, data = _stored(tmp_path)
    loaded = store.load(RUN)
    assert loaded.cached and loaded.final["val_loss"] == 1.25 and "sha256" in data


def _one_line_refusal(store, path):
    with pytest.raises(ResultFileError) as err:
        store.load(RUN)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "force=True" not in message
    assert "delete" in message and "--force" in message
    return message


@pytest.mark.parametrize("damage, expected", [
    (lambda d: [], "holds a JSON list"),
    (lambda d: d | {"final": None}, "has no final"),
    (lambda d: d | {"final": {"val_acc": 0.5}}, "lacks the metrics"),
    (lambda d: d | {"history": []}, "has no history"),
    (lambda d: d | {"final": d["final"] | {"val_acc": 0.99}}, "digest mismatch"),
    (lambda d: {k: v for k, v in d.items() if k != "sha256"}, "no content digest"),
    (lambda d: d | {"run_id": "other"}, "names run 'other'"),
])
def test_wrong_result_files_are_refused(tmp_path, damage, expected):
    store, data = _stored(tmp_path)
    path = store.result_path(RUN)
    path.write_text(json.dumps(damage(data)))
    assert expected in _one_line_refusal(store, path)


def test_truncated_result_file_is_refused(tmp_path):
    store, _ = _stored(tmp_path)
    path = store.result_path(RUN)
    path.write_text(path.read_text()[:40])
    assert "not valid JSON" in _one_line_refusal(store, path)


def test_missing_and_corrupt_weights_name_the_file(tmp_path):
    store, _ = _stored(tmp_path)
    result = store.load(RUN)
    with pytest.raises(FileNotFoundError) as missing:
        load_model(result, results_dir=tmp_path)
    text = str(missing.value)
    assert str(store.model_path(RUN)) in text and "force=True" not in text
    assert str(store.result_path(RUN)) in text and "--force" in text
    store.model_path(RUN).parent.mkdir(parents=True)
    store.model_path(RUN).write_bytes(b"not a torch file")
    with pytest.raises(ResultFileError) as corrupt:
        load_model(result, results_dir=tmp_path)
    assert str(store.model_path(RUN)) in str(corrupt.value) and "\n" not in str(corrupt.value)


def test_saved_weights_load(tmp_path):
    store, _ = _stored(tmp_path)
    store.model_path(RUN).parent.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, store.model_path(RUN))
    assert torch.equal(store.load_weights(RUN)["w"], torch.ones(2))


# ----------------------------------------------------------------------------- headlines
@pytest.fixture
def profiles(tmp_path):
    d = tmp_path / "profiles"
    d.mkdir()
    (d / "smoke.yaml").write_text(yaml.safe_dump({
        "description": "test", "defaults": {"profile": "smoke", "epochs": 6},
        "notebooks": {"04_n": {"act_nums": [1, 3]}}}))
    return d


def _save(store, epochs, value, act_nums=(1, 3)):
    defaults = {"profile": "smoke", "epochs": 6, "act_nums": [1, 3], "results_dir": None}
    params = defaults | {"epochs": epochs, "act_nums": list(act_nums)}
    return store.save_headline("smoke", "04_n", [{"quantity": "q", "ours": value}], params,
                               defaults)


def test_a_hand_run_does_not_replace_the_profiles_headlines(tmp_path, profiles):
    store = ResultsStore(tmp_path / "results")
    _save(store, 6, 1.0)
    _save(store, 1, 2.0)                   # papermill -p epochs 1 by hand, same profile name
    _save(store, 6, 3.0, act_nums=[1])     # a parameter the profile does not set, changed
    shown = summary.load_headlines("smoke", tmp_path / "results", profiles)
    assert shown == {"04_n": [{"quantity": "q", "ours": 1.0}]}


def test_only_hand_runs_means_no_headlines(tmp_path, profiles):
    store = ResultsStore(tmp_path / "results")
    _save(store, 1, 2.0)
    with pytest.raises(RuntimeError, match="saved with the profile's parameters"):
        summary.load_headlines("smoke", tmp_path / "results", profiles)


def test_an_edited_headline_is_refused(tmp_path, profiles):
    store = ResultsStore(tmp_path / "results")
    path = _save(store, 6, 1.0)
    record = json.loads(path.read_text())
    record["rows"][0]["ours"] = 9.0
    path.write_text(json.dumps(record))
    with pytest.raises(ResultFileError, match="digest mismatch"):
        summary.load_headlines("smoke", tmp_path / "results", profiles)


def test_profile_values_are_what_a_notebook_receives(profiles):
    prof = book.load_profile("smoke", profiles)
    assert book.profile_values(prof, "04_n", ["profile", "act_nums", "seed"]) == {
        "profile": "smoke", "act_nums": [1, 3]}
