#!/usr/bin/env bash
# The one-seed screen of false-negative controls (issue 20) on one dataset: `bench/explore.sh scifact [ARMS]`.
# Finished cells are kept in bench/results/<dataset>/ and skipped on rerun (any machine); the work dir is
# runs/bench/<dataset>/. Needs `make install`. Same budget as the 2026-12-02 grid (bf16, max length 128, bi family).
set -euo pipefail
cd "$(dirname "$0")/.."
ds=${1:?usage: bench/explore.sh <dataset under ../shared/data> [arms]}
arms=${2:-random,rule-pp95-mix,st-default,hnm-default,rule-pp95,pp95,rule-mix,pp95-vote,rule-pp95-vote-mix,win10-50,topk-mix,paper}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python bench/quality.py --data "../shared/data/$ds" \
  --embed-precision bf16 --embed-backend openvino --precision bf16 --max-length 128 --families bi --seeds 1 \
  --section "quality-explore-$ds" --arms "$arms" \
  --explore 'pp95=ensemble:--strategy topk --num-negatives 3 --relative-margin 0.05' \
  --explore 'win10-50=ensemble:--strategy topk --num-negatives 3 --range-min 10 --range-max 50 --sampling-strategy random' \
  --explore 'rule-pp95=ensemble:--strategy rule --num-negatives 3 --fallback next --fill short --relative-margin 0.05' \
  --explore 'rule-pp95-mix=ensemble:--strategy rule --num-negatives 3 --fallback next --fill short --relative-margin 0.05 --random-negatives 1' \
  --explore 'pp95-vote=ensemble:--strategy topk --num-negatives 3 --relative-margin 0.05 --vote majority' \
  --explore 'rule-pp95-vote-mix=ensemble:--strategy rule --num-negatives 3 --fallback next --fill short --relative-margin 0.05 --vote majority --random-negatives 1' \
  --explore 'topk-mix=ensemble:--strategy topk --num-negatives 3 --random-negatives 1' \
  --explore 'rule-mix=ensemble:--strategy rule --num-negatives 3 --fallback next --fill short --random-negatives 1'
