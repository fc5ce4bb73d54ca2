#!/usr/bin/env bash
# Open the notebooks in JupyterLab (`make lab`): notebooks/*.py, jupytext percent-format text files, open as
# notebooks on a double click, run on this project's venv, and save back to the same .py file (outputs are not
# kept: the figures are saved as files, README "Notebooks").
#
# jupytext's server extension (installed with the notebooks extra) serves a .py file as a notebook through the
# contents API; JupyterLab's own default viewer for Python files is its text editor, so this makes "Jupytext
# Notebook" the default viewer. The setting goes into the venv's JupyterLab settings
# (<venv>/share/jupyter/lab/settings/overrides.json), never the user's; the server's root is notebooks/, so
# the library's .py files are not in its file browser.
#
# Usage: bash scripts/lab.sh [jupyter lab options], e.g. --no-browser --port=8899.
# VENV (default .venv) names the environment; in a conda env, VENV=$CONDA_PREFIX.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" - "$VENV/share/jupyter/lab/settings/overrides.json" <<'PYEOF'
import json, sys
from pathlib import Path

path = Path(sys.argv[1])
overrides = json.loads(path.read_text()) if path.exists() else {}
viewers = overrides.setdefault("@jupyterlab/docmanager-extension:plugin", {}).setdefault("defaultViewers", {})
if viewers.get("python") != "Jupytext Notebook":
    viewers["python"] = "Jupytext Notebook"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(overrides, indent=2) + "\n")
PYEOF
# Jupyter refuses to run as root unless told; containers and the project's CI machines run as root.
ROOT_OK=()
if [ "$(id -u)" = 0 ]; then ROOT_OK=(--allow-root); fi
exec "$VENV/bin/jupyter" lab --ServerApp.root_dir=notebooks "${ROOT_OK[@]}" "$@"
