#!/usr/bin/env bash
# Builds what benches/gpu.sh runs into one folder, to carry to a GPU machine (x86-64) with the
# working tree, so that the GPU session spends its time measuring rather than compiling:
#
#   benches/gpu-prepare.sh            # here: fills gpu-bin/ (ignored by git)
#   benches/gpu.sh gpu-bin gpu-bin/torch_adamw.py     # there, from the repository root
#
# gpu-bin/ holds `optjit`, `cuda-tests` (the tests/cuda.rs binary) and, when ../shared is beside
# the checkout, PyTorch's anchor script (../shared does not travel).
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-gpu-bin}"
cargo build --release
tests="$(cargo test --release --test cuda --no-run --message-format=json |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')"
[ -n "$tests" ] || { echo "gpu-prepare.sh: cargo built no tests/cuda.rs binary" >&2; exit 1; }
mkdir -p "$dir"
install -m 755 target/release/optjit "$dir/optjit"
install -m 755 "$tests" "$dir/cuda-tests"
if [ -f ../shared/anchors/torch_adamw.py ]; then
    install -m 644 ../shared/anchors/torch_adamw.py "$dir/torch_adamw.py"
fi
du -sh "$dir"
