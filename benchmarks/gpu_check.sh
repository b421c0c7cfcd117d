#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one script (a few minutes on one H200; every command has
# a timeout, and the timeouts add up to 455 s with their kill grace):
#
#   1. train  c_dpo:tiny and ppo_lag:tiny on CUDA, once with fp32 weights under bf16 autocast
#             (engine.mixed_precision=bf16) and once with bf16 weights (model.dtype=bfloat16);
#   2. packed the packed (fast-path) and padded log-probs of the tiny policy agree on CUDA, in
#             fp32 and in bf16, for fixed responses and for sampled ones (3 per prompt);
#   3. speed  benchmarks/run.py --quick on the generation cases (new tokens/s, ours vs
#             transformers' generate, measured in the same run).
#
# Usage (from anywhere; one process, one GPU):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
# OUT_DIR (default: a new temporary folder) receives one log per command, the run folders and
# the benchmark's JSON. Every part runs even when an earlier one failed; the exit status is 1
# when any failed. GPU_CHECK_DEVICE=cpu runs the same commands on the CPU (to try the script on
# a machine without CUDA; slow in bf16).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT_DIR="${1:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$OUT_DIR"
export GPU_CHECK_DEVICE="${GPU_CHECK_DEVICE:-cuda}"
export PYTHONUNBUFFERED=1
FAILED=()

header() {
    printf '\n==== %s ====\n' "$1"
}

# check NAME SECONDS COMMAND...: run COMMAND under a timeout, its output to the screen and to
# OUT_DIR/NAME.log; record NAME as failed on a non-zero status (124: timed out).
check() {
    local name="$1" seconds="$2"
    shift 2
    echo "\$ $*"
    local status=0
    timeout --kill-after=5 "$seconds" "$@" 2>&1 | tee "$OUT_DIR/$name.log" || status=$?
    if [[ $status -eq 0 ]]; then
        echo "[ok] $name"
    else
        echo "[FAILED] $name (exit $status$([[ $status -eq 124 ]] && echo ', timed out'))"
        FAILED+=("$name")
    fi
}

header "machine"
if [[ "$GPU_CHECK_DEVICE" == cuda ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
fi
timeout 30 python - <<'EOF'
import os
import sys

import torch

print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
if os.environ["GPU_CHECK_DEVICE"] == "cuda":
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this script checks the GPU paths (GPU_CHECK_DEVICE=cpu: on CPU)")
    name, bf16 = torch.cuda.get_device_name(0), torch.cuda.is_bf16_supported()
    print(f"device: {name}, bf16 supported: {bf16}")
EOF

header "1. train c_dpo:tiny and ppo_lag:tiny on $GPU_CHECK_DEVICE"
for key in c_dpo ppo_lag; do
    check "train_${key}_autocast" 60 \
        python -m constrained_align train "$key:tiny" --quiet \
        --output-dir "$OUT_DIR/runs/${key}_autocast" \
        --set "model.device=$GPU_CHECK_DEVICE" --set engine.mixed_precision=bf16
    check "train_${key}_bf16_weights" 60 \
        python -m constrained_align train "$key:tiny" --quiet \
        --output-dir "$OUT_DIR/runs/${key}_bf16_weights" \
        --set "model.device=$GPU_CHECK_DEVICE" --set model.dtype=bfloat16
done
for run in "$OUT_DIR"/runs/*/; do
    if [[ -s "$run/metrics.jsonl" ]]; then
        echo "$(basename "$run"): $(wc -l < "$run/metrics.jsonl") records, last:"
        tail -n 1 "$run/metrics.jsonl" | cut -c 1-300
    fi
done

header "2. packed and padded log-probs agree on $GPU_CHECK_DEVICE"
# Built with the library's public builder and policy API (not the tests' helpers). The
# tiny model's random weights give nearly uniform log-probs (spread ~0.2 nats), which would hide
# a misplaced position or mask, so both copies get the same ×8 scaling of every weight (spread
# ~7 nats). The gap is judged against that spread: fp32 layouts differ by summation order only,
# bf16 ones also by rounding (on CPU: 3e-2 nats of a 1.3-nat spread).
check packed_vs_padded 75 python - <<'EOF'
import os
import sys

import torch

from constrained_align.algorithms import load_run_config
from constrained_align.backends.causal_lm import PromptBatch, SamplingSettings
from constrained_align.runner.build import build_policy

DEVICE = os.environ["GPU_CHECK_DEVICE"]
PROMPTS = PromptBatch(["hi", "hello there, how are you?", "x", "hi"], [[], [], [], []])
RESPONSES = ["yes", "no way at all", "z", "sure, why not"]
TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1}  # largest gap, as a share of the spread


def policy(dtype, fast):
    overrides = [f"device={DEVICE}", f"dtype={dtype}", f"fast_paths={str(fast).lower()}"]
    backend = build_policy(load_run_config("c_dpo:tiny", overrides))
    with torch.no_grad():
        for p in backend.weights.model.parameters():
            p.mul_(8.0)
    return backend


failed = False
for dtype, tol in TOLERANCE.items():
    packed, padded = policy(dtype, True), policy(dtype, False)
    fixed = packed.encode(PROMPTS, RESPONSES)
    sampled = packed.sample(PROMPTS, 3, seed=0, sampling=SamplingSettings(16, 1.0, 1.0))
    cases = [("policy", fixed, False), ("reference", fixed, True)]
    cases.append(("3 samples/prompt", sampled.sequences, False))
    for name, seqs, reference in cases:
        with torch.no_grad():
            a = packed.logprobs(seqs, reference=reference)
            b = padded.logprobs(seqs, reference=reference)
        mask = a.mask.bool().cpu()
        x, y = a.token.float().cpu()[mask], b.token.float().cpu()[mask]
        gap, spread = (x - y).abs().max().item(), y.std().item()
        ok = torch.equal(a.mask, b.mask) and bool(x.isfinite().all()) and gap <= tol * spread
        failed |= not ok
        print(f"{dtype:9s} {name:17s} tokens {int(mask.sum()):4d}  "
              f"max|packed-padded| {gap:.2e} nats  spread {spread:.2e}  {'ok' if ok else 'FAILED'}")
sys.exit(1 if failed else 0)
EOF

header "3. generation speed (benchmarks/run.py --quick, ours vs transformers' generate)"
check generation_speed 80 \
    python benchmarks/run.py --quick --only generation_b16 generation_b64 --repeats 5 \
    --json "$OUT_DIR/generation.json"

header "summary"
echo "logs, runs and generation.json in $OUT_DIR"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all checks passed"
