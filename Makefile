# latentlab: `make demo` runs the whole chain on the embedded toy faces, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on local disk; CUDA users install their own torch before `make install`.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test demo demo-celeba lint bench wheel clean

$(BIN)/latentlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev,face,studio]"
	touch $@

install: $(BIN)/latentlab

test: install
	$(BIN)/python -m pytest -q

demo: install
	LATENTLAB=$(BIN)/latentlab scripts/demo.sh toy

demo-celeba: install
	LATENTLAB=$(BIN)/latentlab scripts/demo.sh celeba

lint: install
	$(BIN)/ruff check latentlab tests benchmarks
	$(BIN)/ruff format --check latentlab tests benchmarks
	$(BIN)/lint-imports

bench: install
	$(BIN)/latentlab bench

# dist/latentlab-*.whl, presets inside; offline, with the setuptools `make install` put into the environment
wheel: install
	$(BIN)/pip wheel . --no-deps --no-build-isolation --no-index -w dist

clean:
	rm -rf $(VENV) build dist *.egg-info
