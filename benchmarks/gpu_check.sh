#!/usr/bin/env bash
# The GPU check, one script for a lent GPU machine (the device tool), within 10 minutes:
#   1. installs pseudolabel with its test tools (pip takes a CUDA build of torch==2.14.1 there);
#   2. runs the device tests (tests/test_scale.py: every tensor on the model's device, bf16 autocast,
#      models exported from the GPU load on the CPU) and the pretrained-weights tests;
#   3. times a short CIFAR-10 `run` + `retrain` with ImageNet weights (fabricated in a private cache:
#      the machine has no network) on CUDA, and the same commands' CPU figures measured on the 2-core
#      development machine (docs/measurements.md), side by side.
# Usage, from the repository root, with ../shared beside it or the data already linked into data/:
#   bash benchmarks/gpu_check.sh            # prints a table; also writes $OUT/gpu_check.txt when $OUT is set
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp}/gpu_check.txt
: > "$LOG"
say() { echo "$@" | tee -a "$LOG"; }

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e '.[test]'
fi
make data >/dev/null 2>&1 || true
PY=.venv/bin/python
say "== device: $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")')"

say "== device tests"
$PY -m pytest -q -m "slow or not slow" tests/test_scale.py tests/test_pretrained.py -x 2>&1 | tail -3 | tee -a "$LOG"

say "== CIFAR-10 run + retrain, pretrained: imagenet (fabricated weights), frozen, on cuda"
HOME_W=$(mktemp -d)
$PY - "$HOME_W" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, ".")
from tests.conftest import fabricate_timm, fabricate_yolo
home = Path(sys.argv[1])
fabricate_timm(home / "hf", "resnet50", "a1_in1k")
fabricate_yolo(home / "xdg" / "pseudolabel" / "ultralytics" / "weights")
EOF
export HF_HOME=$HOME_W/hf HF_HUB_OFFLINE=1 XDG_CACHE_HOME=$HOME_W/xdg PSEUDOLABEL_OFFLINE=1 PSEUDOLABEL_CACHE=$HOME_W/pools
t0=$(date +%s.%N)
$PY -m pseudolabel.cli run cifar10 --pretrained imagenet --train frozen --device cuda --out "$HOME_W/run" --quiet
t1=$(date +%s.%N)
$PY -m pseudolabel.cli retrain "$HOME_W/run" --backbone resnet50 --pretrained imagenet --train frozen --device cuda --quiet
t2=$(date +%s.%N)
CPU=$($PY -c 'import json; d=json.load(open("benchmarks/results/pretrained_cifar10.json")); print(d["run"], d["retrain"])' \
      2>/dev/null || echo "- -")
say "$(printf '%-10s %10s %10s\n' stage 'cuda s' 'cpu s (2 cores)')"
say "$(printf '%-10s %10.0f %10s\n' run "$(echo "$t1 - $t0" | bc)" "$(echo $CPU | cut -d' ' -f1)")"
say "$(printf '%-10s %10.0f %10s\n' retrain "$(echo "$t2 - $t1" | bc)" "$(echo $CPU | cut -d' ' -f2)")"
