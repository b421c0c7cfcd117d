"""The tutorials run top to bottom on the suite's budget and are kept without outputs.

Each notebook runs in a fresh folder with ``CONSTRAINED_ALIGN_NOTEBOOK_QUICK=1`` (the smallest
data sizes its first cell offers; tiny presets, no download), must finish without an error
output, and must leave the files its cells display: every plot a reader is shown exists and is
a PNG.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

FOLDER = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
PNG = b"\x89PNG\r\n\x1a\n"

#: What each notebook writes (relative to the folder it runs in).
WRITES = {
    "01_quickstart.ipynb": [
        "quickstart-run/compare/report.md",
        "quickstart-run/compare/plots/frontier.png",
    ],
    "02_the_exact_answer.ipynb": [
        f"exact-answer/{name}.png" for name in ("dual", "gibbs", "lambdas", "placement", "one_shot")
    ],
    "03_reward_and_cost_models.ipynb": [
        "score-models/my-cost/model/score_model.json",
        "score-models/boundary.png",
        "score-models/eval/results.json",
        "score-models/eval/scatter.png",
        "score-models/proxy_vs_judge.png",
    ],
    "04_online_vs_offline.ipynb": [
        "online-vs-offline/tiny/report.md",
        "online-vs-offline/tiny/plots/frontier.png",
        "online-vs-offline/tiny/plots/lambda.png",
    ],
    "05_trl_plugins.ipynb": [
        "trl-plugins/dpo/checkpoint-3/primal_dual.json",
        "trl-plugins/grpo/checkpoint-3/primal_dual.json",
        "trl-plugins/dpo_lambda.png",
        "trl-plugins/grpo_lambda.png",
    ],
    "06_your_own_constraint.ipynb": [
        "my_costs.py",
        "own-constraint-run/grpo_lag-two-constraints/metrics.jsonl",
        "own-constraint-run/lambdas.png",
        "own-constraint-run/testbed_lambdas.png",
    ],
}


def test_the_series_is_the_one_listed():
    assert [p.name for p in NOTEBOOKS] == sorted(WRITES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("CONSTRAINED_ALIGN_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("CONSTRAINED_ALIGN_NOTEBOOK_QUICK", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    for name in WRITES[path.name]:
        written = tmp_path / name
        assert written.is_file(), f"{path.name} did not write {name}"
        if written.suffix == ".png":
            assert written.read_bytes()[:8] == PNG, f"{name} is not a PNG"
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    plots = [n for n in WRITES[path.name] if n.endswith(".png")]
    assert len(shown) >= len(plots), f"{path.name} shows fewer plots than it writes"


def _renderer():
    spec = importlib.util.spec_from_file_location(
        "render_notebooks", FOLDER.parent / "tools/render_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook(path: Path, *sources: str) -> Path:
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)
    return path


def test_render_keeps_the_outputs_and_runs_in_its_own_folder(tmp_path):
    """The rendered copy holds each cell's output; files the notebook writes land in
    ``out/work/<name>``; html comes along where nbconvert is installed."""
    source = _notebook(
        tmp_path / "07_demo.ipynb", "print(6 * 7)", "open('made.txt', 'w').write('x')"
    )
    out = tmp_path / "rendered"
    written = _renderer().render(source, out)
    rendered = nbformat.read(out / "07_demo.ipynb", as_version=4)
    assert rendered.cells[0].outputs[0]["text"] == "42\n"
    assert (out / "work" / "07_demo" / "made.txt").read_text() == "x"
    has_html = importlib.util.find_spec("nbconvert") is not None
    assert [p.name for p in written] == ["07_demo.ipynb"] + ["07_demo.html"] * has_html


def test_render_writes_nothing_when_a_cell_fails(tmp_path):
    source = _notebook(tmp_path / "07_broken.ipynb", "raise ValueError('no')")
    out = tmp_path / "rendered"
    with pytest.raises(CellExecutionError, match="no"):
        _renderer().render(source, out)
    assert not (out / "07_broken.ipynb").exists()
