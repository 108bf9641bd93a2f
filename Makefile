# One command sets up and runs the demo; one sets up and runs the tests.
# torch==2.13.0 is installed first so that nothing pulls a multi-GB CUDA build (see DEVELOPERS.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test clean

$(BIN)/dspseg: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# real-microscopy test data; --no-deps: its bioio readers pull ~40 packages dspseg does not need
	$(BIN)/pip install -q --no-deps ndev-sampledata==0.0.3
	touch $(BIN)/dspseg

setup: $(BIN)/dspseg
	@bash scripts/install_display_libs.sh  # Xvfb + Qt/OpenGL libraries for the napari tests (as root)

demo: setup
	$(BIN)/dspseg demo --out demo-output

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo-output .pytest_cache
