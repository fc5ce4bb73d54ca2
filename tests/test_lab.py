"""`make lab`: JupyterLab serves every notebooks/*.py as a notebook, the way a researcher opens them; and where
the notebooks save their figures.

One headless server, started by scripts/lab.sh exactly as `make lab` starts it (plus a free loopback port, a
token and --no-browser), answers through its REST API: the contents endpoint must return each text notebook as
a notebook (jupytext's contents manager), and the lab settings must make "Jupytext Notebook" the viewer a
double click opens. A kernel of this venv must draw tqdm's progress bars as widgets (ipywidgets), not warn
"IProgress not found". Those tests skip where the notebooks extra is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from intfa import experiments as ex

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]-*.py"))
START_TIMEOUT_S = 90  # ~10 s here; 46 s seen while other jobs loaded the 2 cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Lab:
    """A running server: ``get(path)`` returns the JSON of ``GET <base><path>`` with the token."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token

    def get(self, path: str):
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """scripts/lab.sh on this venv, headless on a free loopback port; stopped (SIGTERM, then SIGKILL) after."""
    pytest.importorskip("jupyterlab", reason="the notebooks extra (JupyterLab) is not installed")
    pytest.importorskip("jupytext", reason="the notebooks extra (jupytext) is not installed")
    port, token = free_port(), os.urandom(16).hex()
    scratch = tmp_path_factory.mktemp("jupyter")
    env = dict(os.environ, VENV=sys.prefix, JUPYTER_RUNTIME_DIR=str(scratch / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(scratch / "workspaces"))
    log = (scratch / "server.log").open("w")
    server = subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "lab.sh"), "--no-browser", "--ServerApp.ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    served = Lab(f"http://127.0.0.1:{port}", token)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"scripts/lab.sh exited with {server.returncode}:\n{(scratch / 'server.log').read_text()}")
            try:
                served.get("/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer in {START_TIMEOUT_S} s:\n"
                                f"{(scratch / 'server.log').read_text()}")
                time.sleep(0.25)
        yield served
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # lab.sh execs jupyter in its own session: stop that group only
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_contents_api_serves_the_text_notebook_as_a_notebook(lab, path):
    model = lab.get(f"/api/contents/{path.name}?type=notebook&content=1")
    assert model["type"] == "notebook" and model["format"] == "json", f"{path.name}: {model['type']}, {model['format']}"
    served = model["content"]["cells"]
    expected = pytest.importorskip("jupytext").read(path).cells  # what the .py file says, read by jupytext itself
    assert [(c["cell_type"], c["source"]) for c in served] == [(c.cell_type, c.source) for c in expected]
    # The size and output knobs stand in the first code cell, tagged as parameters (README "Notebooks").
    first_code = next(c for c in served if c["cell_type"] == "code")
    assert "parameters" in first_code["metadata"].get("tags", [])
    assert "INTFA_NOTEBOOK_SIZE" in first_code["source"] and "INTFA_UPDATE_RESULTS" in first_code["source"]


def test_python_files_open_as_jupytext_notebooks(lab):
    settings = lab.get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
    assert settings["schema"]["properties"]["defaultViewers"]["default"].get("python") == "Jupytext Notebook"
    extensions = {extension["name"] for extension in lab.get("/lab/api/extensions")}
    assert "jupyterlab-jupytext" in extensions, f"the jupytext JupyterLab extension is missing: {sorted(extensions)}"


def test_progress_bars_are_widgets_in_a_kernel():
    """tqdm.auto in a kernel of this venv draws an ipywidgets bar; without ipywidgets it warns 'IProgress not found'."""
    nbclient = pytest.importorskip("nbclient", reason="the notebooks extra (nbclient) is not installed")
    nbformat = pytest.importorskip("nbformat", reason="the notebooks extra (nbformat) is not installed")
    pytest.importorskip("ipykernel", reason="the notebooks extra (ipykernel) is not installed")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from tqdm.auto import tqdm\nfor _ in tqdm(range(3)):\n    pass")])
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    said = "".join(out.get("text", "") for out in outputs)
    assert "IProgress" not in said, said
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {}) for out in outputs), outputs


def test_full_size_notebook_runs_write_to_scratch_unless_asked(monkeypatch):
    monkeypatch.delenv("INTFA_RESULTS_DIR", raising=False)
    results = ROOT / "results"
    assert ex.notebook_out_dir("full") == results / "scratch"
    assert ex.notebook_out_dir("full", update_results=True) == results
    assert ex.notebook_out_dir("small") == results / "small"
    with pytest.raises(ValueError, match="update_results: only a full-size run may update results/"):
        ex.notebook_out_dir("small", update_results=True)
    with pytest.raises(ValueError, match="size: expected one of"):
        ex.notebook_out_dir("huge")
    monkeypatch.setenv("INTFA_RESULTS_DIR", str(ROOT / "elsewhere"))
    assert ex.notebook_out_dir("full") == ROOT / "elsewhere"


def test_scratch_and_small_results_stay_out_of_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for folder in ("scratch", "small"):
        ignored = subprocess.run(["git", "check-ignore", "-q", f"results/{folder}/figure.png"], cwd=ROOT)
        assert ignored.returncode == 0, f"results/{folder}/ is not ignored by git"
