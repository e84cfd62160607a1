#!/usr/bin/env bash
# The GPU checks, in one command on a machine with an NVIDIA GPU and PyTorch (see docs/perf.md):
# the GPU execution tests, `optjit golden --target cuda` (also resumed from checkpoints), and
# `optjit bench --target cuda` on the three workloads next to PyTorch's AdamW (for-loop, foreach,
# fused) and the copy bandwidth, then bf16 AdamW, Adafactor and clipped AdamW.
#
#   benches/gpu.sh BIN_DIR [TORCH_ANCHOR]
#
# BIN_DIR holds `optjit` and `cuda-tests` (the tests/cuda.rs binary), as benches/gpu-prepare.sh
# builds them; TORCH_ANCHOR is shared/anchors/torch_adamw.py (gpu-prepare.sh copies it). Exits 1
# if any test, golden case or bench failed.
set -uo pipefail
bin="${1:?usage: benches/gpu.sh BIN_DIR [TORCH_ANCHOR]}"
anchor="${2:-}"
cd "$(dirname "$0")/.."

# NVRTC (for the hand-fused reference) ships with PyTorch's CUDA wheels.
nvrtc_dir="$(python3 -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13", "lib"))' 2>/dev/null || true)"
[ -n "$nvrtc_dir" ] && export LD_LIBRARY_PATH="$nvrtc_dir:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

failed=0
echo "== GPU execution tests (their simulator twins run in CI: skipped here)"
"$bin/cuda-tests" --test-threads 1 --nocapture --skip simulator 2>&1 | grep -v '^$' || failed=1

echo "== optjit golden --target cuda (every case: the simulator passes them all in CI)"
"$bin/optjit" golden --target cuda tests/golden/*.json || failed=1

echo "== optjit golden --target cuda, checkpointed after step 9 and resumed on the GPU, then on the CPU"
for on in cuda cpu; do
    "$bin/optjit" golden --target cuda --resume-at 9 --resume-target "$on" tests/golden/*.json |
        grep -E '^FAIL|passed,' || failed=1
done

echo "== optjit bench --target cuda"
for w in big-1x16M gpt2s-148 small-1000x4K; do
    "$bin/optjit" bench --optimizer AdamW --target cuda --workload "$w" --steps 100 || failed=1
done
echo "== bf16 AdamW, Adafactor, clipped AdamW (never measured before)"
for w in big-1x16M gpt2s-148; do
    "$bin/optjit" bench --optimizer AdamW --target cuda --workload "$w" --steps 100 --dtype bf16 || failed=1
    "$bin/optjit" bench --optimizer Adafactor --target cuda --workload "$w" --steps 50 || failed=1
    "$bin/optjit" bench --optimizer AdamW --target cuda --workload "$w" --steps 50 --clip-grad-norm 1.0 || failed=1
done
if [ -n "$anchor" ]; then
    echo "== PyTorch AdamW (CUDA events)"
    python3 "$anchor" --device cuda --modes forloop,foreach,fused
fi
exit $failed
