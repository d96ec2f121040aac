# LSLU companion. The two commands:  make book   and   make test   (see README.md).
# Needs only Python >= 3.11 (python3.11, else python3) and make; everything else goes in .venv.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.requirements-installed
BOOTSTRAP_PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

# Execution profile of `make book` (profiles/<name>.yaml). The default, fashion_mnist, renders
# the evidence runs committed in results/ (trains nothing); smoke, fast and paper train.
PROFILE ?= fashion_mnist
# Where trained models / results are cached between runs of `make book`. The evidence profile
# renders the runs committed in results/ instead.
COMMITTED_RESULTS := $(CURDIR)/results
ifeq ($(PROFILE),fashion_mnist)
LSLU_RESULTS_DIR ?= $(COMMITTED_RESULTS)
endif
LSLU_RESULTS_DIR ?= $(HOME)/.cache/lslu/results
export LSLU_RESULTS_DIR
# `make test` and `make baselines` use their own, emptied cache: no other run's results leak in.
TEST_RESULTS_DIR := $(CURDIR)/_build/test-results

JB_BUILD := $(VENV)/bin/jupyter-book build . -W -n --all
NBVAL    := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg
BROWSERS := chromium chromium-browser google-chrome google-chrome-stable

.PHONY: help venv book book-smoke test baselines browser fashion-mnist clean distclean

help:
	@echo "make book                             render the committed Fashion-MNIST evidence (results/) into _build/html"
	@echo "make book PROFILE=smoke|fast|paper    train a profile's runs (cached) and build _build/html"
	@echo "make test                             smoke book + pytest (tests/ and nbval notebooks/)"
	@echo "make baselines                        re-execute notebooks/ in place (nbval baselines)"
	@echo "make book-smoke                       the smoke book with the hermetic cache (part of test)"
	@echo "make venv                             create/update .venv from requirements.txt"
	@echo "make fashion-mnist                    install Debian's dataset-fashion-mnist (root with apt)"
	@echo "make clean | distclean                remove build outputs | and .venv"

# ---------------------------------------------------------------------------------- venv
# Re-run when .venv is missing or requirements.txt / pyproject.toml is newer than the stamp.
venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@if [ ! -x "$(PY)" ]; then \
	  if [ -z "$(BOOTSTRAP_PYTHON)" ]; then echo "error: need python3.11 (or python3 >= 3.11) on PATH" >&2; exit 1; fi; \
	  "$(BOOTSTRAP_PYTHON)" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	    || { echo "error: $(BOOTSTRAP_PYTHON) is older than Python 3.11" >&2; exit 1; }; \
	  echo "creating $(VENV) with $(BOOTSTRAP_PYTHON)"; \
	  "$(BOOTSTRAP_PYTHON)" -m venv $(VENV); \
	fi
	$(PY) -m pip install --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -e . --no-deps
	@touch $(STAMP)

# ---------------------------------------------------------------------------------- book
book: $(STAMP) fashion-mnist
	@# a book rendered from the committed runs trains nothing: every run must be there already
	@if [ "$(abspath $(LSLU_RESULTS_DIR))" = "$(COMMITTED_RESULTS)" ]; then \
	  $(PY) -m lslu results --profile $(PROFILE) --results-dir "$(COMMITTED_RESULTS)" --complete; fi
	$(PY) -m lslu.book execute --profile $(PROFILE)
	$(JB_BUILD)
	@echo "book: open _build/html/index.html"

# The smoke book with the hermetic results cache (what `make test` checks).
book-smoke: $(STAMP)
	rm -rf "$(TEST_RESULTS_DIR)"
	LSLU_RESULTS_DIR="$(TEST_RESULTS_DIR)" $(PY) -m lslu.book execute --profile smoke
	$(JB_BUILD)

# ---------------------------------------------------------------------------------- data
# Fashion-MNIST (the evidence profile's data, 31 MB): as root on Debian/Ubuntu, Debian's package
# (its IDX files land in /usr/share/datasets/fashion-mnist, where lslu.data finds them). Else
# the files can be put in $$LSLU_DATA_DIR/fashion-mnist, or torchvision downloads them on first use.
fashion-mnist:
	@if dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || [ -n "$$(ls "$${LSLU_DATA_DIR:-$$HOME/.cache/lslu/data}"/fashion-mnist/train-images-idx3-ubyte* 2>/dev/null)" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's dataset-fashion-mnist (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
	    || echo "warning: apt-get install dataset-fashion-mnist failed; Fashion-MNIST will be downloaded by torchvision if there is a network" >&2; \
	else \
	  echo "warning: Fashion-MNIST not installed and not root with apt-get; run 'apt-get install dataset-fashion-mnist' as root, or put the IDX files in \$$LSLU_DATA_DIR/fashion-mnist" >&2; \
	fi

# ---------------------------------------------------------------------------------- test
# The browser tests need Chromium; as root on Debian/Ubuntu it is installed here. If that is
# impossible, tests/test_book_build.py fails (it never skips).
browser:
	@for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian chromium for the browser tests (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
	    || echo "warning: apt-get install chromium failed; tests/test_book_build.py will fail" >&2; \
	else \
	  echo "warning: no chromium on PATH and not root with apt-get; install chromium (or set LSLU_CHROMIUM) or tests/test_book_build.py will fail" >&2; \
	fi

test: $(STAMP) browser fashion-mnist book-smoke
	LSLU_RESULTS_DIR="$(TEST_RESULTS_DIR)" $(PY) -m pytest tests notebooks $(NBVAL) -p no:cacheprovider

# Regenerate the outputs stored in notebooks/*.ipynb that nbval compares against, under the same
# conditions as `make test` (its nbval run sees the cache the smoke book has just filled).
baselines: $(STAMP) book-smoke
	LSLU_RESULTS_DIR="$(TEST_RESULTS_DIR)" $(PY) -m lslu.book baselines

# ---------------------------------------------------------------------------------- clean
clean:
	rm -rf _build book/executed .pytest_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
