"""Bad parameters given through papermill fail in the first cell after the parameters, with a
clear message, before any training (nothing is written to the results store)."""
from pathlib import Path

import nbformat
import papermill
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("notebook, parameters, message", [
    ("02_cifar10", {"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
    ("04_num_activations", {"act_nums": [0]}, "act_num"),
    ("06_dropout", {"drop_rates": [1.5]}, "drop_rate must be in [0, 1)"),
    ("07_task_specific", {"image_folder": "no/such/folder"}, "no/such/folder"),
    ("11_activation_zoo", {"activations": ["lslu", "gelu"]}, "unknown activation 'gelu'"),
])
def test_bad_parameter_fails_in_the_first_cell(notebook, parameters, message, tmp_path,
                                               monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("LSLU_RESULTS_DIR", str(results))
    out = tmp_path / f"{notebook}.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS / f"{notebook}.ipynb"), str(out),
                                   parameters=parameters, kernel_name="python3",
                                   cwd=str(NOTEBOOKS), progress_bar=False)
    assert message in failure.value.evalue
    executed = nbformat.read(out, as_version=4)
    code = [i for i, c in enumerate(executed.cells) if c.cell_type == "code"]
    injected = next(i for i, c in enumerate(executed.cells)
                    if "injected-parameters" in c.metadata.get("tags", []))
    first_after = next(i for i in code if i > injected)
    errors = [i for i in code if any(o.get("output_type") == "error"
                                     for o in executed.cells[i].get("outputs", []))]
    assert errors == [first_after]
    assert not results.exists() or not any(results.rglob("*.json"))
