# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint clean constraints

# torch is installed first and pinned: its CPU wheel is on this machine's disk, while an unpinned
# `torch` pulled in by another package would download a multi-GB CUDA build.
# pyproject.toml holds version ranges; constraints.txt the exact set that was tested, installed here.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distill run recipes/quickstart.yaml

test: $(STAMP) test-optimum
	$(BIN)/python -m pytest -q

# the unit tests alone (no recipe runs, no wheel builds): under two minutes; make test stays the full gate
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# after changing a dependency: rebuild .venv, run make test, then record the set it installed
constraints: $(STAMP)
	{ sed -n 1,2p constraints.txt; $(BIN)/pip freeze --exclude-editable --disable-pip-version-check \
		| sed 's/+cpu$$//'; } > constraints.txt.tmp && mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) $(OPT_VENV) $(OPT_ARTIFACTS) runs

# optimum loading proof. optimum-onnx 0.1.0 requires transformers<4.58 and optimum~=2.1, which cannot share
# .venv (transformers 5): it gets its own venv, used only to load artifacts that .venv exported. torch is
# installed first and pinned for the same reason as above (optimum depends on torch).
OPT_VENV := .venv-optimum
OPT_STAMP := $(OPT_VENV)/.installed
OPT_ARTIFACTS := build/optimum-artifacts
OPT_PINS := transformers==4.57.6 optimum-onnx==0.1.0 optimum==2.1.0 onnxruntime==1.31.1 onnx==1.23.2 numpy==2.4.6 \
	pytest==9.2.0

.PHONY: test-optimum

$(OPT_STAMP):
	$(PYTHON) -m venv $(OPT_VENV)
	echo '*' > $(OPT_VENV)/.gitignore
	$(OPT_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile torch==2.13.0
	$(OPT_VENV)/bin/pip install --quiet --disable-pip-version-check --no-compile $(OPT_PINS)
	touch $(OPT_STAMP)

# artifacts and expected labels come from .venv; the test itself runs under .venv-optimum only
test-optimum: $(STAMP) $(OPT_STAMP)
	$(BIN)/python tests/optimum_artifacts.py $(OPT_ARTIFACTS)
	OPTIMUM_ARTIFACTS=$(OPT_ARTIFACTS) $(OPT_VENV)/bin/python -m pytest -q --noconftest -p no:cacheprovider \
		-m optimum tests/test_optimum.py
