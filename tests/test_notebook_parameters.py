"""Bad parameters given through papermill fail in the first cells after the parameters, with a
clear message, before any training (nothing is written to the results store); a parameter that
a notebook does not declare fails in the cell right after its parameters."""
from pathlib import Path

import nbformat
import papermill
import pytest
from IPython.core.interactiveshell import InteractiveShell
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from lslu import notebook as lnotebook

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
    # after[0] is check_parameters(), which lets declared names pass; after[1] checks values
    after = [i for i in code if i > injected]
    errors = [i for i in code if any(o.get("output_type") == "error"
                                     for o in executed.cells[i].get("outputs", []))]
    assert errors == [after[1]]
    assert not results.exists() or not any(results.rglob("*.json"))


def test_an_undeclared_parameter_fails_right_after_the_parameters(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("LSLU_RESULTS_DIR", str(results))
    out = tmp_path / "02.ipynb"
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(NOTEBOOKS / "02_cifar10.ipynb"), str(out),
                                   parameters={"epoch": 1}, kernel_name="python3",
                                   cwd=str(NOTEBOOKS), progress_bar=False)
    assert failure.value.ename == "ValueError"
    assert "unknown parameter(s) ['epoch']" in failure.value.evalue
    assert "'epochs' for 'epoch'" in failure.value.evalue
    executed = nbformat.read(out, as_version=4)
    injected = next(i for i, c in enumerate(executed.cells)
                    if "injected-parameters" in c.metadata.get("tags", []))
    code = [i for i, c in enumerate(executed.cells) if c.cell_type == "code"]
    errors = [i for i in code if any(o.get("output_type") == "error"
                                     for o in executed.cells[i].get("outputs", []))]
    assert errors == [next(i for i in code if i > injected)]
    assert not results.exists() or not any(results.rglob("*.json"))


def _cells_around_parameters(path: Path, parameters: dict) -> list[str]:
    """The cell before `parameters`, the parameters cell, papermill's injected cell (when
    ``parameters``), and the cell after: what a papermill run executes first."""
    nb = load_notebook_node(str(path))  # as papermill reads it (every cell gets a tags list)
    if parameters:
        nb = parameterize_notebook(nb, parameters, report_mode=False)
    i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    j = i + 2 if parameters else i + 1
    return [c.source for c in nb.cells[i - 1:j + 1]]


def _run(sources: list[str], store_history: bool = True):
    shell = InteractiveShell.instance()
    for source in sources:
        outcome = shell.run_cell(source, store_history=store_history)
        if outcome.error_before_exec or outcome.error_in_exec:
            return outcome.error_before_exec or outcome.error_in_exec
    return None


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_every_notebook_refuses_an_undeclared_parameter(path):
    error = _run(_cells_around_parameters(path, {"profile": "fast", "no_such_parameter": 1}))
    assert isinstance(error, ValueError) and "['no_such_parameter']" in str(error)
    assert _run(_cells_around_parameters(path, {"profile": "fast"})) is None
    checked = lnotebook.current_parameters()
    assert checked["parameters"]["profile"] == "fast"
    assert checked["defaults"]["profile"] == "smoke"  # what the parameters cell itself says
    assert _run(_cells_around_parameters(path, {})) is None


def test_check_needs_the_cells_in_order():
    assert _run(["from lslu.notebook import start_parameters\nstart_parameters()",
                 "epochs = 1"]) is None
    assert _run(["lnb = __import__('lslu.notebook').notebook\nlnb.check_parameters()"]) is None
    error = _run(["lnb.check_parameters()"])  # a second check without start_parameters()
    assert isinstance(error, RuntimeError) and "in order" in str(error)


def test_check_works_when_cells_are_not_kept_in_the_history():
    """nbval executes cells without storing them in IPython's history (In)."""
    path = sorted(NOTEBOOKS.glob("*.ipynb"))[0]
    error = _run(_cells_around_parameters(path, {"profile": "fast", "no_such_parameter": 1}),
                 store_history=False)
    assert isinstance(error, ValueError) and "['no_such_parameter']" in str(error)
    assert _run(_cells_around_parameters(path, {"profile": "fast"}), store_history=False) is None
    assert lnotebook.current_parameters()["parameters"]["profile"] == "fast"
