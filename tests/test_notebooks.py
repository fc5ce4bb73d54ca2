"""Every notebook runs, top to bottom, at small size (jupytext text -> nbformat -> nbclient, ipykernel).

Figures go to a temporary directory (INTFA_RESULTS_DIR), never over the committed results.
"""

from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]-*.py"))


def test_the_five_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01-step-through.py", "02-error-vs-block-and-granularity.py", "03-paper-figures.py",
        "04-real-activations.py", "05-minilm-end-to-end.py",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_small_size(path, tmp_path, monkeypatch):
    monkeypatch.setenv("INTFA_NOTEBOOK_SIZE", "small")
    monkeypatch.setenv("INTFA_RESULTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    errors = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if out.get("output_type") == "error"]
    assert not errors
    # The notebook saved its figures through the library: PNG, CSV and provenance side by side.
    pngs = sorted(tmp_path.rglob("*.png"))
    if path.stem.startswith("03") and not any(tmp_path.rglob("speed/*.png")):
        assert any("paper_error_vs_seq_len" in p.name for p in pngs)
    assert pngs, f"{path.name} saved no figure under INTFA_RESULTS_DIR"
    for png in pngs:
        assert png.with_suffix(".csv").exists() and png.with_suffix(".json").exists()
