# latentlab: `make demo` runs the whole chain on the embedded toy faces, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build on local disk; CUDA users install their own torch before `make install`.
TORCH_PIN ?= torch==2.13.0

.PHONY: install test demo lint bench clean

$(BIN)/latentlab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/latentlab

test: install
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/latentlab train --max-steps 400 --out models/demo --force
	$(BIN)/latentlab sample --model models/demo --n 36 --temperature 0.7 --out models/demo/demo-samples.png
	@echo "demo outputs: models/demo/ (checkpoint, metrics.jsonl, demo-samples.png)"

lint: install
	$(BIN)/ruff check latentlab tests
	$(BIN)/ruff format --check latentlab tests

bench: install
	$(BIN)/latentlab bench

clean:
	rm -rf $(VENV) build *.egg-info
