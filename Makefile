# Slipway: `make run` runs the whole training pipeline locally; `make test` runs the tests.
# Both build what they need first: the `core` environment in .venv/core from the pinned
# requirements/core.txt, the `tfdv` environment in .venv/tfdv from requirements/tfdv.txt and the
# `drift` environment in .venv/drift from requirements/drift.txt (each rebuilt only when its lock or
# the package metadata changes; DESIGN.md §3), and the Chicago taxi sample in data/ (fetched once
# from the tfx wheel on PyPI, sha256-verified). `make test` also builds the `docs` environment in
# .venv/docs from requirements/docs.txt, which `make docs` builds the site with.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv/core
PY := $(VENV)/bin/python
SLIPWAY := $(VENV)/bin/slipway
CORE_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test
TFDV_VENV := .venv/tfdv
TFDV_PY := $(TFDV_VENV)/bin/python
TFDV_STAMP := $(TFDV_VENV)/.installed-tfdv
TFDV_DEPS_STAMP := $(TFDV_VENV)/.installed-deps
TFDV_PIP := $(TFDV_PY) -m pip --quiet --disable-pip-version-check
DRIFT_VENV := .venv/drift
DRIFT_PY := $(DRIFT_VENV)/bin/python
DRIFT_STAMP := $(DRIFT_VENV)/.installed-drift
DRIFT_DEPS_STAMP := $(DRIFT_VENV)/.installed-deps
DRIFT_PIP := $(DRIFT_PY) -m pip --quiet --disable-pip-version-check
DOCS_VENV := .venv/docs
DOCS_PY := $(DOCS_VENV)/bin/python
DOCS_STAMP := $(DOCS_VENV)/.installed-docs
DOCS_PIP := $(DOCS_PY) -m pip --quiet --disable-pip-version-check
# mkdocs and mkdocs-material each print a banner about MkDocs' future on every build; these turn them off.
MKDOCS := DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(DOCS_VENV)/bin/mkdocs

# The environments build side by side: their installs are mostly downloads and unpacking.
MAKEFLAGS += --jobs=2
SAMPLE := data/chicago_taxi/data.csv
PIP := $(PY) -m pip --quiet --disable-pip-version-check

.PHONY: help run test bench compile images manifests data docs env tfdv-env drift-env docs-env lock clean

# The images `make images` builds and the compiled pipelines reference (slipway/runtimes.py reads the
# same two values as SLIPWAY_IMAGE_REGISTRY and SLIPWAY_IMAGE_TAG). The tag defaults to the version.
IMAGE_REGISTRY ?= ghcr.io/slipway-ml
IMAGE_TAG ?= $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' slipway/__init__.py)
IMAGES ?= core tfdv drift serving train-gpu
export SLIPWAY_IMAGE_REGISTRY := $(IMAGE_REGISTRY)
export SLIPWAY_IMAGE_TAG := $(IMAGE_TAG)

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

run: env tfdv-env drift-env data  ## run the training pipeline locally on the sample, then compile every pipeline into dist/
	$(SLIPWAY) run training --data $(SAMPLE)
	$(SLIPWAY) compile --output-dir dist

test: $(TEST_STAMP) $(TFDV_STAMP) $(DRIFT_STAMP) $(DOCS_STAMP) data  ## lint, then run the test suite
	command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)  # the online feature store tests run a real Redis
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(TEST_STAMP) $(TFDV_STAMP) $(DRIFT_STAMP) data  ## run the benchmarks; figures land in bench/results/
	$(PY) bench/kfp_local_overhead.py
	$(PY) bench/train_throughput.py
	$(PY) bench/serving.py
	$(PY) bench/inference_cache.py
	$(PY) bench/features.py
	$(PY) bench/validation.py
	$(PY) bench/tuning.py
	$(PY) bench/drift.py
	$(PY) bench/drift_monitor.py
	$(PY) bench/batch_scoring.py
	$(PY) bench/hostile_load.py
	$(PY) bench/task_startup.py
	$(PY) bench/model_quality.py
	$(PY) bench/scale.py
	$(PY) bench/scale.py --feature-steps

compile: env  ## compile every pipeline to KFP IR in dist/, referencing $(IMAGE_REGISTRY)/slipway-*:$(IMAGE_TAG)
	$(SLIPWAY) compile --output-dir dist

# One image per runtime (images/<runtime>.Dockerfile), each from its pinned lock; linux/amd64, as TFDV
# and the CUDA torch wheels are published for it. `make images IMAGES="core serving"` builds a subset.
images:  ## build the runtime images, tagged $(IMAGE_REGISTRY)/slipway-<runtime>:$(IMAGE_TAG)
	for runtime in $(IMAGES); do \
	  docker build --platform linux/amd64 --file images/$$runtime.Dockerfile \
	    --build-arg IMAGE_REGISTRY=$(IMAGE_REGISTRY) --build-arg IMAGE_TAG=$(IMAGE_TAG) \
	    --tag $(IMAGE_REGISTRY)/slipway-$$runtime:$(IMAGE_TAG) . ; \
	done

manifests: env  ## render manifests/base from the SDK model classes (kubectl kustomize manifests/overlays/<name> builds them)
	$(PY) -m slipway.pipelines.cluster_manifests manifests/base

data: env  ## fetch and verify the Chicago taxi sample (a no-op when cached)
	$(PY) scripts/fetch_sample_data.py

# The reference is written from the components by core (which has kfp), then built by mkdocs in the docs
# environment; --strict fails on a broken link or an API object griffe cannot find, and --check on a
# component without a built page that lists its inputs.
docs: $(CORE_STAMP) $(DOCS_STAMP)  ## build the docs site into site/ (the component reference is generated first)
	$(PY) -m slipway.pipelines.component_docs docs/reference
	$(MKDOCS) build --strict --site-dir site
	$(PY) -m slipway.pipelines.component_docs --check site/reference
	@echo "browse it: python3 -m http.server -d site 8000, then http://localhost:8000"

env: $(CORE_STAMP)  ## build the core environment

# torch first, from the CPU wheel pip finds on disk, so that nothing can pull a CUDA build.
$(CORE_STAMP): requirements/core.txt setup.cfg pyproject.toml
	@echo "building $(VENV) from requirements/core.txt (about 2 minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$$(grep '^torch==' requirements/core.txt)"
	$(PIP) install -r requirements/core.txt
	$(PIP) install --no-deps -e .
	$(PY) -m pip check
	touch $@

tfdv-env: $(TFDV_STAMP)  ## build the tfdv environment (TFDV and what it pins; about 2 minutes, 2.8 GB)

# The validation components run in core and call TFDV through this environment's interpreter
# (slipway/runtime_call.py); it holds Slipway itself (no dependencies) and the Facets bundle.
$(TFDV_DEPS_STAMP): requirements/tfdv.txt
	@echo "building $(TFDV_VENV) from requirements/tfdv.txt (about 2 minutes the first time)"
	test -x $(TFDV_PY) || $(PYTHON) -m venv $(TFDV_VENV)
	$(TFDV_PIP) install -r requirements/tfdv.txt
	touch $@

# Slipway goes in after core's editable install: both write the checkout's slipway.egg-info.
$(TFDV_STAMP): $(TFDV_DEPS_STAMP) $(CORE_STAMP) setup.cfg pyproject.toml
	$(TFDV_PIP) install --no-deps -e .
	$(TFDV_PY) -m pip check
	$(TFDV_PY) -m slipway.components.facets
	touch $@

drift-env: $(DRIFT_STAMP)  ## build the drift environment (alibi-detect 0.11.4 and its pins; about 2 minutes)

# The drift component runs in core and calls alibi-detect's tests through this environment's interpreter
# (slipway/runtime_call.py). torch first, from the CPU wheel pip finds on disk, as for core.
$(DRIFT_DEPS_STAMP): requirements/drift.txt
	@echo "building $(DRIFT_VENV) from requirements/drift.txt (about 2 minutes the first time)"
	test -x $(DRIFT_PY) || $(PYTHON) -m venv $(DRIFT_VENV)
	$(DRIFT_PIP) install "$$(grep '^torch==' requirements/drift.txt)"
	$(DRIFT_PIP) install -r requirements/drift.txt
	touch $@

# Slipway goes in after core's editable install, as for tfdv.
$(DRIFT_STAMP): $(DRIFT_DEPS_STAMP) $(CORE_STAMP) setup.cfg pyproject.toml
	$(DRIFT_PIP) install --no-deps -e .
	$(DRIFT_PY) -m pip check
	touch $@

docs-env: $(DOCS_STAMP)  ## build the docs environment (mkdocs, its theme and mkdocstrings; about 15 seconds)

# Slipway itself is not installed here: mkdocstrings reads its sources from the checkout (mkdocs.yml).
$(DOCS_STAMP): requirements/docs.txt
	test -x $(DOCS_PY) || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_PIP) install -r requirements/docs.txt
	$(DOCS_PY) -m pip check
	touch $@

$(TEST_STAMP): $(CORE_STAMP) requirements/test.txt
	$(PIP) install -r requirements/test.txt -c requirements/core.txt
	touch $@

lock: env  ## re-resolve requirements/*.txt from requirements/*.in
	$(PY) scripts/lock_requirements.py core
	$(PY) scripts/lock_requirements.py test --constraint requirements/core.txt
	$(PY) scripts/lock_requirements.py tfdv
	$(PY) scripts/lock_requirements.py drift
	$(PY) scripts/lock_requirements.py docs

clean:  ## remove runs, compiled pipelines, the docs site and build leftovers (keeps .venv and data)
	rm -rf runs dist build *.egg-info site docs/reference
