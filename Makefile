# Agentplane — one command per task. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TS := sdk-typescript-gen
BUF := $(TS)/node_modules/.bin/buf
IMAGE := .build/agentplane.binpb
BASELINE := contract/baseline.binpb
PY_SETUP := $(VENV)/.setup-stamp
# Triton and the models' own dependencies live apart from the server's environment.
TRITON_VENV := .venv-triton
TRITON_PY := $(TRITON_VENV)/bin/python
TRITON_SETUP := $(TRITON_VENV)/.setup-stamp
TINY_LM := triton-models/generate/1/tiny-lm
NPM_SETUP := $(TS)/node_modules/.setup-stamp
CONSOLE := console
CONSOLE_NPM := $(CONSOLE)/node_modules/.setup-stamp
# The built console; its index.html is rewritten by every build, so it doubles as the stamp.
CONSOLE_DIST := $(CONSOLE)/dist/index.html
CONSOLE_SOURCES = $(shell find $(CONSOLE)/src $(TS)/src -type f) \
	$(addprefix $(CONSOLE)/,index.html vite.config.ts tsconfig.json)
PYTEST_ARGS ?=
# Container images (deploy/*.Dockerfile); any Docker-compatible engine.
CONTAINER_ENGINE ?= docker
IMAGE_TAG ?= 0.1.0
OVERLAYS := $(wildcard deploy/kubernetes/overlays/*)
# The google/rpc .proto files that googleapis-common-protos installs (for the TypeScript SDK's
# error details; see sdk-typescript-gen/buf.gen.google-rpc.yaml).
GOOGLEAPIS = $(shell $(PY) -c 'import google.rpc, pathlib; print(pathlib.Path(google.rpc.__path__[0]).parents[1])')

.PHONY: help setup console serve triton-env triton test gen check-gen image images deploy-check lint format breaking baseline bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY_SETUP): server/pyproject.toml sdk-python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e ./sdk-python -e './server[dev]'
	touch $@

$(NPM_SETUP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CONSOLE_NPM): $(CONSOLE)/package.json $(CONSOLE)/package-lock.json
	cd $(CONSOLE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(CONSOLE_DIST): $(CONSOLE_NPM) $(CONSOLE_SOURCES)
	cd $(CONSOLE) && npm run --silent build

console: $(CONSOLE_DIST) ## Build the web console into console/dist (served at / by the HTTP listener)

setup: $(PY_SETUP) $(NPM_SETUP) $(CONSOLE_DIST) ## Create .venv, install the server, SDKs and tools, build the console

serve: $(PY_SETUP) $(CONSOLE_DIST) ## Start the server: gRPC 127.0.0.1:50051, console http://127.0.0.1:8080/
	$(VENV)/bin/agentplane serve

# torch is installed on its own as exactly `torch==2.13.0`: that resolves to the local CPU
# wheel, where any other spelling pulls gigabytes of CUDA packages.
$(TRITON_SETUP): triton-models/requirements.txt
	test -x $(TRITON_PY) || $(PYTHON) -m venv $(TRITON_VENV)
	echo '*' > $(TRITON_VENV)/.gitignore
	$(TRITON_PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(TRITON_PY) -m pip install -q --disable-pip-version-check -r triton-models/requirements.txt torch==2.13.0
	$(TRITON_PY) tests/tritonproc.py --prepare
	touch $@

$(TINY_LM)/.built: $(TRITON_SETUP) triton-models/generate/make_tiny_lm.py
	$(TRITON_PY) triton-models/generate/make_tiny_lm.py $(TINY_LM)
	touch $@

triton-env: $(TRITON_SETUP) $(TINY_LM)/.built ## Create .venv-triton: tritonserver, model dependencies, test LM

triton: triton-env ## Start Triton on triton-models/ (gRPC 8001, HTTP 8000, metrics 8002)
	$(TRITON_PY) tests/tritonproc.py

test: setup triton-env ## Run the whole test suite (SQLite and PostgreSQL, Python and TypeScript)
	$(PY) -m pytest tests $(PYTEST_ARGS)
	cd $(TS) && npm test

image: setup ## Compile proto/ into the contract image .build/agentplane.binpb
	$(PY) tools/build_image.py --out $(IMAGE)

gen: image ## Regenerate the Python and TypeScript code from proto/
	find sdk-python/src/agentplane -name '*_pb2*.py*' -delete
	rm -rf sdk-python/src/buf $(TS)/src/gen
	$(BUF) generate
	$(BUF) generate $(GOOGLEAPIS) --template $(TS)/buf.gen.google-rpc.yaml \
		--path $(GOOGLEAPIS)/google/rpc/error_details.proto
	$(PY) tools/build_image.py --validate-python sdk-python/src
	$(PY) tools/build_image.py --out $(IMAGE) --contract-module sdk-python/src/agentplane/_contract.py \
		--contract-ts $(TS)/src/gen/contract.ts
	$(PY) sdk-python/scripts/gen_services.py

check-gen: gen ## Fail when the committed generated code is stale
	@if [ -n "$$(git status --porcelain -- sdk-python/src $(TS)/src/gen)" ]; then \
		git status --short -- sdk-python/src $(TS)/src/gen; \
		echo "generated code is stale: run 'make gen' and commit the result"; exit 1; \
	fi

images: ## Build the server and Triton container images (CONTAINER_ENGINE=docker, IMAGE_TAG=0.1.0)
	@command -v $(CONTAINER_ENGINE) >/dev/null || { echo "no $(CONTAINER_ENGINE) here: set CONTAINER_ENGINE (docker, podman)"; exit 1; }
	$(CONTAINER_ENGINE) build -f deploy/server.Dockerfile -t agentplane/server:$(IMAGE_TAG) .
	$(CONTAINER_ENGINE) build -f deploy/triton.Dockerfile -t agentplane/triton:$(IMAGE_TAG) .

deploy-check: $(PY_SETUP) ## Lint the Dockerfiles; render and validate every Kubernetes overlay
	$(VENV)/bin/hadolint deploy/*.Dockerfile
	@mkdir -p .build/deploy
	@for overlay in $(OVERLAYS); do \
		out=.build/deploy/$$(basename $$overlay).yaml; \
		kubectl kustomize $$overlay > $$out && \
		$(VENV)/bin/kubernetes-validate --strict --quiet $$out && \
		echo "$$overlay: $$(grep -c '^kind:' $$out) resources valid" || exit 1; \
	done

format: setup ## Format the .proto files in place
	$(BUF) format -w proto

lint: image ## buf format + buf lint (STANDARD, COMMENTS) on the contracts, ruff and import-linter on Python
	$(BUF) format -d --exit-code proto
	$(BUF) lint $(IMAGE) --path agentplane --config buf.yaml
	$(VENV)/bin/ruff check server tests bench tools sdk-python/src/agentplane sdk-python/scripts sdk-python/examples
	$(VENV)/bin/ruff format --check server tests bench tools sdk-python/src/agentplane sdk-python/scripts sdk-python/examples
	cd server && ../$(VENV)/bin/lint-imports pyproject.toml

breaking: image ## buf breaking (FILE) against the released baseline and the previous commit
	$(BUF) breaking $(IMAGE) --against $(BASELINE) --path agentplane --config buf.yaml
	@if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:proto 2>/dev/null; then \
		rm -rf .build/previous && mkdir -p .build/previous && \
		git archive HEAD~1 proto | tar -x -C .build/previous && \
		$(PY) tools/build_image.py --proto-dir .build/previous/proto --out .build/previous.binpb && \
		$(BUF) breaking $(IMAGE) --against .build/previous.binpb --path agentplane --config buf.yaml && \
		echo "no breaking change against HEAD~1"; \
	else echo "no previous commit with proto/: skipped the HEAD~1 check"; fi

baseline: image ## Record the current contract as the released baseline (on release only)
	cp $(IMAGE) $(BASELINE)

bench: setup triton-env ## Run the benchmarks; each prints JSON figures beside its baseline
	$(PY) -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	cd bench/cerbos && npm install --no-audit --no-fund  # not ci: npm locks one platform's optional binary only
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean: ## Remove build output (keeps .venv and data)
	rm -rf .build
