# lhcml: `make demo` runs the small end-to-end flavour-tagging chain, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# ONNX Runtime C/C++ headers for cpp/ (tests/test_cpp_inference.py), fetched once by cpp/fetch_deps.sh
ORT_HDR := build/cpp/deps/onnxruntime/usr/include/onnxruntime/onnxruntime_cxx_api.h

.PHONY: install demo test lint clean benchmarks

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch and pythia8mc are pinned and installed first: an unpinned torch pulls a multi-GB CUDA build,
# pythia8mc 8.318 compiles from source for 30+ minutes.
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0 pythia8mc==8.317.2
	$(BIN)/pip install -q -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lhcml demo --output demo_output

$(ORT_HDR):
	bash cpp/fetch_deps.sh

test: $(STAMP) $(ORT_HDR)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf demo_output .pytest_cache
