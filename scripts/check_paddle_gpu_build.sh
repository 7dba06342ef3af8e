#!/usr/bin/env bash
# Build check of the package against a Paddle built with CUDA (paddlepaddle-gpu), where setup.py
# adds the op's CUDA kernels. Needs no GPU:
#   1. a venv of its own, GPU_VENV (default .venv-gpu): paddlepaddle-gpu==PADDLE_GPU (2.6.2, the
#      last GPU build on the public index) and the build dependencies;
#   2. Paddle's GPU headers include the headers of cuBLAS, cuDNN, cuFFT, cuRAND, cuSOLVER and
#      cuSPARSE. When the CUDA toolkit lacks them (a bare toolkit, as on the project machines),
#      the headers alone are taken from NVIDIA's CUDA 12 wheels (into GPU_VENV/cuda-headers) and
#      put on CPATH;
#   3. pip install --no-build-isolation . (the op with the kernels of src/cuda/*.cu, by nvcc);
#   4. import paddle_ssd_op and check that it holds the kernels; tests/test_golden.py (CPU tensors
#      through that build); tests/gpu/test_op_gpu.py (the kernels against the host fallback on GPU
#      tensors; skipped, with the reason, without a GPU).
# Prints SKIP and exits 0 when no CUDA toolkit (nvcc) is found. Each step prints its time.
# Environment: GPU_VENV, PADDLE_GPU, PYTHON (to create the venv; default python3), PYTEST_ARGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
GPU_VENV="${GPU_VENV:-.venv-gpu}"
PADDLE_GPU="${PADDLE_GPU:-2.6.2}"
PYTHON="${PYTHON:-python3}"
# CUDA 12 headers: Paddle 2.6's dynload headers take their CUDA >= 12 branches under CUDA 13's
# cuda.h, and expect cuDNN 8.
HEADER_WHEELS=(nvidia-cublas-cu12==12.9.3.13 nvidia-cudnn-cu12==8.9.7.29
               nvidia-cufft-cu12==11.4.1.4 nvidia-curand-cu12==10.3.10.19
               nvidia-cusolver-cu12==11.7.5.82 nvidia-cusparse-cu12==12.5.10.65)

step_start=0
step() { step_start=$(date +%s); echo "== $*"; }
step_done() { echo "   ($(( $(date +%s) - step_start )) s)"; }
total_start=$(date +%s)

# The toolkit root, as setup.py finds it: CUDA_HOME, else the TOP that nvcc reports (the nvcc on
# PATH may be a wrapper outside the toolkit).
cuda_home() {
  if [[ -n "${CUDA_HOME:-}" && -f "$CUDA_HOME/include/cuda_runtime.h" ]]; then
    echo "$CUDA_HOME"; return
  fi
  command -v nvcc >/dev/null 2>&1 || return 0
  local top
  top="$(nvcc --dryrun -c -x cu /dev/null -o /dev/null 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n 1)"
  if [[ -n "$top" && -f "$top/include/cuda_runtime.h" ]]; then (cd "$top" && pwd -P); fi
}
CUDA_ROOT="$(cuda_home)"
if [[ -z "$CUDA_ROOT" ]]; then
  echo "SKIP: no CUDA toolkit (nvcc with include/cuda_runtime.h) found; the GPU build was not checked."
  exit 0
fi
echo "CUDA toolkit: $CUDA_ROOT"

step "venv $GPU_VENV with paddlepaddle-gpu==$PADDLE_GPU"
if [[ ! -f "$GPU_VENV/.deps" ]]; then
  "$PYTHON" -m venv "$GPU_VENV"
  "$GPU_VENV/bin/pip" install -q --upgrade pip
  "$GPU_VENV/bin/pip" install -q "paddlepaddle-gpu==$PADDLE_GPU" numpy pybind11 wheel \
    "setuptools>=70.1" pytest hypothesis
  touch "$GPU_VENV/.deps"
fi
step_done

step "CUDA library headers"
probe='#include <cublasXt.h>
#include <cublas_v2.h>
#include <cudnn.h>
#include <cufft.h>
#include <curand.h>
#include <cusolverDn.h>
#include <cusparse.h>'
if echo "$probe" | c++ -E -x c++ -I"$CUDA_ROOT/include" - >/dev/null 2>&1; then
  echo "   the toolkit has them"
else
  headers="$GPU_VENV/cuda-headers"
  if [[ ! -f "$headers/.done" ]]; then
    rm -rf "$headers" && mkdir -p "$headers/wheels"
    "$GPU_VENV/bin/pip" download -q --no-deps -d "$headers/wheels" "${HEADER_WHEELS[@]}"
    "$GPU_VENV/bin/python" - "$headers" <<'PY'
import sys, zipfile
from pathlib import Path
out = Path(sys.argv[1])
for wheel in sorted((out / "wheels").glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        z.extractall(out, [m for m in z.namelist() if "/include/" in m])
PY
    rm -rf "$headers/wheels"
    touch "$headers/.done"
  fi
  CPATH="$(ls -d "$PWD/$headers"/nvidia/*/include | paste -sd: -)${CPATH:+:$CPATH}"
  export CPATH
  echo "   from the CUDA 12 wheels: CPATH=$CPATH"
fi
step_done

step "pip install --no-build-isolation . (CUDA build)"
CUDA_HOME="$CUDA_ROOT" "$GPU_VENV/bin/pip" install -q --no-build-isolation --no-deps \
  --force-reinstall .
step_done

step "import paddle_ssd_op"
(cd /tmp && "$ROOT/$GPU_VENV/bin/python" - <<'PY'
import zlib  # noqa: F401  -- before paddle (see the package's __init__)
import warnings
warnings.simplefilter("ignore")  # "GPU version Paddle, but your CUDA device is not set properly"
import paddle
import paddle_ssd_op
assert paddle.is_compiled_with_cuda(), "paddlepaddle-gpu expected"
assert paddle_ssd_op.cuda.kernels_built(), "the op library holds no CUDA kernels"
print("   paddle", paddle.__version__, "(CUDA", paddle.version.cuda() + "),",
      paddle.device.cuda.device_count(), "CUDA device(s); CUDA kernels built, enabled:",
      paddle_ssd_op.cuda.kernels_enabled())
PY
)
step_done

step "tests: golden cases on CPU tensors, the op on GPU tensors"
# shellcheck disable=SC2086
"$GPU_VENV/bin/pytest" -q -rs -p no:cacheprovider ${PYTEST_ARGS:-} tests/test_golden.py \
  tests/gpu/test_op_gpu.py
step_done
echo "check_paddle_gpu_build.sh: OK in $(( $(date +%s) - total_start )) s"
