# The few verbs a newcomer needs. CI, the README and pre-commit use these and nothing else.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.9
# checkov runs isolated (uv tool run): its pins would downgrade boto3 and packaging in the project env
CHECKOV_VERSION := 3.3.30
VENV := .venv
BIN := $(VENV)/bin
RAW_DIR := data/01_raw
SAMPLE_DIR := $(RAW_DIR)/sample
# what `make clean` may delete: the generated sample set and the later layers (never other raw data)
GENERATED_LAYERS = $(wildcard data/02_* data/03_* data/04_* data/05_* data/06_* data/07_* data/08_*)
export KEDRO_LOGGING_CONFIG := conf/base/logging.yml
export KEDRO_DISABLE_TELEMETRY := 1
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export BENTOML_DO_NOT_TRACK := True
SERVICE := ai_image_detection.serving.service:Detector
CHROMIUM := /usr/bin/chromium
DOCKER_COMPOSE := /usr/bin/docker-compose
# Debian's Vulkan loader and LLVM OpenMP: the ncnn up-scalers of the sample set run on the CPU through them
MULTIARCH_LIB := /usr/lib/$(shell uname -m)-linux-gnu
NCNN_LIBS := $(MULTIARCH_LIB)/libvulkan.so.1 $(MULTIARCH_LIB)/libomp.so.5
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help setup run sample-data test lint format s3 s3-stop repro viz ui bench clean package serve bento monitor stack rollout

help:  ## list the verbs
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"

# --compile-bytecode: every process that imports TensorFlow (Kedro runs, spawned workers, the notebook's
# kernel, the services) then starts in ~11 s instead of ~28 s, also where PYTHONDONTWRITEBYTECODE is set
$(VENV)/.synced: $(BIN)/uv pyproject.toml uv.lock
	$(BIN)/uv sync --locked --compile-bytecode --python $(BIN)/python
	@touch $@

setup: $(VENV)/.synced  ## create .venv and install the locked dependencies

sample-data: setup $(NCNN_LIBS)  ## generate the sample set into data/01_raw/sample (unless there, or own data is configured)
	@if [ -f $(SAMPLE_DIR)/train.csv ]; then \
		echo "sample set present in $(SAMPLE_DIR): not generating it again"; \
	elif grep -rqsE '^[[:space:]]*raw_dir:' conf/local; then \
		echo "ingestion.raw_dir is set in conf/local (your own data): not generating the sample set"; \
	else \
		if [ -f $(RAW_DIR)/train.csv ] || [ -d $(RAW_DIR)/human ]; then \
			echo "note: data in $(RAW_DIR) is used only once conf/local sets ingestion.raw_dir: $(RAW_DIR)"; \
		fi; \
		$(BIN)/kedro run --pipelines sample_data; \
	fi

run: sample-data  ## install, generate sample data if absent, run every pipeline
	$(BIN)/kedro run
	@echo "Results:"
	@echo "  manifest          data/03_primary/image_manifest.parquet"
	@echo "  ingestion report  data/08_reporting/ingestion_report.json"
	@echo "  models            data/06_models/<candidate>.keras (histories in data/07_model_output/training_history/)"
	@echo "  evaluation        data/08_reporting/evaluation/ (per-candidate metrics and plots, candidates.csv)"
	@echo "  detector          data/06_models/detector.onnx (+ detector.int8.onnx), model card data/08_reporting/model_card.md"
	@echo "  submission        data/07_model_output/submission.csv"
	@echo "  augmentation      data/08_reporting/augmentation_grid.png"
	@echo "  runs              make ui  (MLflow on http://127.0.0.1:5000)"
	@echo "  sample pairs      data/08_reporting/sample_contact_sheet.png"
	@echo "  pipelines         make viz  (Kedro-Viz on http://127.0.0.1:4141)"

$(CHROMIUM):  # Debian's Chromium drives the web-page test (Playwright never downloads a browser)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(DOCKER_COMPOSE):  # Debian's docker-compose checks compose.yaml (`docker-compose config`; no Docker engine)
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose

$(NCNN_LIBS) &:
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libvulkan1 libomp5

test: setup $(CHROMIUM) $(NCNN_LIBS) $(DOCKER_COMPOSE)  ## install and run the whole test suite
	$(BIN)/python -m pytest

lint: setup  ## ruff, mypy, and the shipping files: hadolint, shellcheck, actionlint, zizmor, cfn-lint, checkov
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck ops/*.sh
	$(BIN)/actionlint
	$(BIN)/zizmor --offline --quiet .github/workflows
	$(BIN)/cfn-lint deploy/cloudformation.yaml
	BC_SKIP_MAPPING=TRUE $(BIN)/uv tool run --from "checkov==$(CHECKOV_VERSION)" checkov --quiet --compact --framework cloudformation -f deploy/cloudformation.yaml

format: setup  ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

s3: setup  ## start the local S3 server (SeaweedFS on 127.0.0.1:8333, data in .s3/) and set DVC keys
	ops/local-s3.sh start

s3-stop:  ## stop the local S3 server
	ops/local-s3.sh stop

repro: setup  ## reproduce the DVC stages (dvc.yaml)
	$(BIN)/dvc repro

viz: setup  ## Kedro-Viz of the pipelines on 127.0.0.1:4141
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

ui: setup  ## the MLflow UI on 127.0.0.1:5000
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

bench: sample-data  ## benchmarks (not tests): figures to data/08_reporting/benchmarks.json
	@[ -f data/06_models/detector.int8.onnx ] || $(BIN)/kedro run
	$(MAKE) package
	$(BIN)/python -m benchmarks

# Always asks the registry (the champion may have moved, the store may be another machine's); the
# import itself happens only when the champion's bytes differ from the store's latest model. With a
# shared tracking server (MLFLOW_TRACKING_URI, e.g. the release job) the registry is not mlflow.db.
package: setup $(if $(MLFLOW_TRACKING_URI),,mlflow.db)  ## import the registry's champion into the BentoML model store
	$(BIN)/kedro run --pipelines package

# Feedback goes to the local S3 of `make s3` by default: its keys are loaded as for `make monitor`.
serve: package  ## the service on http://127.0.0.1:3000 (web page /ui/, API docs /)
	@$(LOAD_LOCAL_S3_KEYS) $(BIN)/bentoml serve $(SERVICE) --host 127.0.0.1 --port 3000

bento: package  ## build the Bento offline (service, web page, champion model, Dockerfile)
	$(BIN)/uv export --frozen --only-group serving --no-emit-project --no-hashes -q -o src/requirements-serving.txt
	$(BIN)/bentoml build -f bentofile.yaml src

# Watches the served model: the prediction log (logs/predictions/) and the feedback store against the
# champion's validation scores. The store is on the local S3 of `make s3` by default, so its keys
# (.s3/credentials) are loaded unless the environment already holds AWS keys (yours, for AWS; none
# with an instance role). With a shared tracking server (MLFLOW_TRACKING_URI) the registry is not mlflow.db.
LOCAL_S3_DIR ?= .s3
LOAD_LOCAL_S3_KEYS = if [ -z "$${AWS_ACCESS_KEY_ID:-}" ] && [ -f $(LOCAL_S3_DIR)/credentials ]; then \
		set -a; . "$(abspath $(LOCAL_S3_DIR))/credentials"; set +a; \
	fi;
monitor: setup $(if $(MLFLOW_TRACKING_URI),,mlflow.db)  ## drift, verdict and feedback report of the served model (data/08_reporting/monitoring/)
	@$(LOAD_LOCAL_S3_KEYS) $(BIN)/kedro run --pipelines monitoring
	@echo "Report: data/08_reporting/monitoring/report.html (every figure in drift.json; also in MLflow, make ui)"

# The AWS stack (docs/deploy.md): deploy/cloudformation.yaml with your parameters (copy
# deploy/parameters.example.env to deploy/parameters.env), and a rollout of an image tag.
STACK_NAME ?= ai-image-detection
STACK_PARAMETERS ?= deploy/parameters.env

stack: setup  ## create or update the AWS stack (aws cloudformation deploy) with STACK_PARAMETERS
	STACK_NAME=$(STACK_NAME) ops/stack.sh $(STACK_PARAMETERS)

rollout: setup  ## roll image TAG=... out to the stack (instance refresh with automatic rollback)
	STACK_NAME=$(STACK_NAME) ops/rollout.sh $(TAG)

mlflow.db:
	@echo "no MLflow registry yet: run 'make run' first" >&2; exit 1

clean:  ## remove generated data: data/01_raw/sample and data/02-08 (keeps other raw data, .venv, caches)
	rm -rf $(SAMPLE_DIR)
	$(if $(GENERATED_LAYERS),find $(GENERATED_LAYERS) -mindepth 1 ! -name .gitkeep -delete)
