"""examples/quickstart.ipynb runs in a Jupyter kernel and shows its build's progress as a widget."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_quickstart_notebook_runs_and_shows_a_progress_widget() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    pytest.importorskip("ipywidgets")
    pytest.importorskip("tqdm")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    errors = [out for out in outputs if out.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    widgets = [out for out in outputs if WIDGET in out.get("data", {})]
    assert widgets, json.dumps([out.get("data", out.get("text", "")) for out in outputs], default=str)[:3000]
    stderr = "".join(out.get("text", "") for out in outputs if out.get("name") == "stderr")
    assert "Warning" not in stderr, stderr
    printed = "".join(out.get("text", "") for out in outputs if out.output_type == "stream")
    assert "recall@10 = 0.9" in printed and "Index(dim=32, metric='cosine'" in printed
