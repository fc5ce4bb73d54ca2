#!/usr/bin/env bash
# Create .venv and install the project with every extra. Idempotent: a second run only re-checks.
#
# torch: torch==2.13.0 is installed, which on the project's CPU machines is a local CPU build (a plain
# `torch` requirement would pull a multi-GB CUDA build). On a GPU machine whose Python already has a
# CUDA torch (and its triton 3.6), set INTFA_SYSTEM_SITE_PACKAGES=1 to build the venv on top of it.
# triton is pinned to 3.6 (pyproject.toml): the bit-exact interpreter tests depend on its interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "${INTFA_SYSTEM_SITE_PACKAGES:-}" ]; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
if ! "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "torch==2.13.0"
fi
"${PIP[@]}" -e ".[all]"
"$PY" - <<'PYEOF'
import numpy, torch, triton, sim
print(f"set up: numpy {numpy.__version__}, torch {torch.__version__}, triton {triton.__version__}, "
      f"cuda {'yes' if torch.cuda.is_available() else 'no'}")
PYEOF
