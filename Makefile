# The two commands of the quick start (`make demo`, `make test`) set everything up themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PROTO_SRC := $(wildcard protos/controlplane/v1/*.proto) $(wildcard protos/pipelive/v1/*.proto)

.PHONY: setup test lint demo bench protos clean system-deps

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

protos: $(STAMP)
	$(PY) -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. --pyi_out=. $(PROTO_SRC)

clean:
	rm -rf $(VENV) build *.egg-info
