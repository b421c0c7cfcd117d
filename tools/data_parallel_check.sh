#!/usr/bin/env bash
# Every registry key's tiny preset in one process and in two (accelerate launch, gloo on CPU):
# prints, per key, the largest difference of the trained adapters and of λ between the two.
#
#   bash tools/data_parallel_check.sh [OUT_DIR] [KEY ...]
#
# About 40 s per key on 2 CPU cores. The suite tests c_dpo, ppo_lag and safe_dpo this way
# (tests/runner/test_lm_distributed.py); this script covers the rest.
set -euo pipefail
OUT_DIR="${1:-$(mktemp -d -t data_parallel.XXXXXX)}"
shift || true
KEYS=("$@")
if [[ ${#KEYS[@]} -eq 0 ]]; then
    KEYS=(dpo c_dpo mocan pecan caid sacpo safe_dpo bfpo ppo_lag ppo_shaping grpo_lag)
fi
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS=1 CUDA_VISIBLE_DEVICES=""
port=29611
for key in "${KEYS[@]}"; do
    rm -rf "$OUT_DIR/$key-1" "$OUT_DIR/$key-2"
    python -m constrained_align train "$key:tiny" --quiet --output-dir "$OUT_DIR/$key-1" \
        >"$OUT_DIR/$key-1.log" 2>&1
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no --main_process_port "$port" -m constrained_align train "$key:tiny" \
        --quiet --output-dir "$OUT_DIR/$key-2" >"$OUT_DIR/$key-2.log" 2>&1
    port=$((port + 1))
    python - "$OUT_DIR" "$key" <<'PY'
import json
import sys

from safetensors.torch import load_file

out, key = sys.argv[1:]
runs = [f"{out}/{key}-{n}" for n in (1, 2)]
a, b = (load_file(f"{run}/final/adapter_model.safetensors") for run in runs)
weights = max(float((a[k] - b[k]).abs().max()) for k in a)
lams = [
    [json.loads(line).get("dual/lambda", 0.0) for line in open(f"{run}/metrics.jsonl")]
    for run in runs
]
assert len(lams[0]) == len(lams[1]), "different numbers of records"
lam = max((abs(x - y) for x, y in zip(*lams)), default=0.0)
print(f"{key:12s} records {len(lams[0]):2d}  max |Δ adapter| {weights:.1e}  max |Δ λ| {lam:.1e}")
PY
done
