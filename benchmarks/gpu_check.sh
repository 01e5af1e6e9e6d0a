#!/usr/bin/env bash
# The triton backend on a GPU, in one short run: its tests on CUDA, then `carousel bench --device
# cuda` in float32 and bfloat16 (level 1 and, where it runs the cell, level 2 of the backend side
# by side); the results go into docs/performance.md (between the markers
# gpu-tests, bench-cuda-float32 and bench-cuda-bfloat16) and, with the logs, into $OUT if set.
#
# Usage (repository root, on a machine with a CUDA GPU of compute capability >= 8.0 and a Python
# that has torch with CUDA, triton, numpy, tqdm and, for the tests, pytest):
#
#     benchmarks/gpu_check.sh [python]          # default: $PYTHON, else python3
#     GPU_CHECK_PARTS=bench benchmarks/gpu_check.sh   # only the bench (or: tests)
#
# carousel itself is used from src/ (PYTHONPATH), not installed. About 5-8 minutes on an H100:
# tests <= 5 min (most of it compiling the kernels' variants once), bench about 1.5 min per dtype.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-${PYTHON:-python3}}
PARTS=${GPU_CHECK_PARTS:-tests bench}
LOGS=${OUT:-/tmp/carousel-gpu-check}
mkdir -p "$LOGS"
export PYTHONPATH="src:.${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
unset TRITON_INTERPRET CAROUSEL_BACKEND

"$PYTHON" - <<'EOF' || { echo "gpu_check: this Python cannot run the triton backend" >&2; exit 1; }
import importlib.util, sys
missing = [m for m in ("torch", "triton", "numpy", "tqdm") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python packages: {', '.join(missing)}")
if importlib.util.find_spec("pytest") is None:
    print("gpu_check: pytest is missing, so the tests cannot run", file=sys.stderr)
import torch, triton
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device")
print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
EOF

status=0
if [[ " $PARTS " == *" tests "* ]]; then
    timeout 420 "$PYTHON" -m pytest tests/kernels/test_triton_cuda.py tests/kernels/test_triton.py \
        -k "not interpreter_suite" -p no:cacheprovider -o addopts="" -q -rfs --durations=5 \
        2>&1 | tee "$LOGS/tests.log"
    status=${PIPESTATUS[0]}
    "$PYTHON" - "$LOGS/tests.log" "$status" <<'EOF'
import sys
from pathlib import Path
import torch, triton
from carousel.benchmarks.harness import write_block
log, status = Path(sys.argv[1]).read_text().splitlines(), int(sys.argv[2])
summary = next((line for line in reversed(log) if " in " in line and ("passed" in line or "failed" in line)), "no summary")
failures = [line for line in log if line.startswith("FAILED")]
report = [f"GPU tests (`benchmarks/gpu_check.sh`) on {torch.cuda.get_device_name()}, torch "
          f"{torch.__version__}, triton {triton.__version__}: `{summary.strip('= ')}` "
          f"(exit status {status}).", ""]
report += [f"- {line}" for line in failures[:20]]
write_block(Path("docs/performance.md"), "gpu-tests", "\n".join(report).rstrip())
EOF
fi

if [[ " $PARTS " == *" bench "* ]]; then
    for dtype in float32 bfloat16; do
        timeout 300 "$PYTHON" -m carousel bench --device cuda --dtype "$dtype" --seconds 0.5 \
            --output docs/performance.md --block "bench-cuda-$dtype" 2>&1 | tee "$LOGS/bench-$dtype.log"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    done
fi

cp docs/performance.md "$LOGS/performance.md"
echo "gpu_check: exit status $status; logs and docs/performance.md in $LOGS"
exit "$status"
