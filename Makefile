# Two commands a newcomer needs (README): `make main` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup main test test-gpu bench lab clean

setup:
	bash scripts/setup.sh

# The main job: the accuracy figures into results/ (measured under load on 2 cores: 20 min, plus 10 for the
# peers study, whose FP22 accumulator is emulated in float64), and where CUDA is present the
# benchmark (python -m intfa.bench --suite paper) and the speed figure from it.
main: setup
	$(PY) -m intfa.experiments --size full --out results --bench

# The tests: sim's properties, the kernels under TRITON_INTERPRET=1, the notebooks at small size.
# GPU tests are skipped without CUDA.
test: setup
	$(PY) -m pytest -n 2 -q

test-gpu: setup
	$(PY) -m pytest -m gpu -q

bench: setup
	$(PY) -m intfa.bench --suite full

# JupyterLab on notebooks/: the jupytext .py files open as notebooks (scripts/lab.sh says how). Small size
# unless INTFA_NOTEBOOK_SIZE=full; full-size figures go to results/scratch/ unless INTFA_UPDATE_RESULTS=1.
lab: setup
	VENV=$(VENV) bash scripts/lab.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
