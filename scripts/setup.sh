#!/usr/bin/env bash
# Create .venv and install the project with every extra. Idempotent: a second run only re-checks.
#
# torch: exactly TORCH_REQUIREMENT, installed together with the project so that pip resolves them as one set.
# On the project's CPU machines pip finds a CPU build of that release on disk; elsewhere it takes the public
# wheel (a CUDA build, which runs on a CPU too), whose own Triton pin (triton==3.7.1 for 2.13.0) the project's
# Triton range admits (pyproject.toml). A looser requirement would take the newest CUDA build (several GB) even
# where the CPU build lies on disk. On a GPU machine whose Python already has a CUDA torch (and its Triton),
# set INTFA_SYSTEM_SITE_PACKAGES=1 to build the venv on top of it: a torch that imports is kept.
#
# `bash scripts/setup.sh --print-requirements` prints the requirements this script installs, one per line,
# and installs nothing: tests/test_setup.py resolves exactly those lines on the public package index.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_REQUIREMENT="torch==2.13.0"
PROJECT_REQUIREMENT=(-e ".[all]")
if [ "${1:-}" = "--print-requirements" ]; then
  printf '%s\n' "$TORCH_REQUIREMENT" "${PROJECT_REQUIREMENT[*]}"
  exit 0
fi

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
if "$PY" -c "import torch" 2>/dev/null; then
  "${PIP[@]}" "${PROJECT_REQUIREMENT[@]}"
else
  "${PIP[@]}" "$TORCH_REQUIREMENT" "${PROJECT_REQUIREMENT[@]}"
fi
"$PY" - <<'PYEOF'
import numpy, torch, triton, sim
print(f"set up: numpy {numpy.__version__}, torch {torch.__version__}, triton {triton.__version__}, "
      f"cuda {'yes' if torch.cuda.is_available() else 'no'}")
PYEOF
