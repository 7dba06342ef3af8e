#!/usr/bin/env bash
# Compile-only check of the CUDA sources: every src/cuda/*.cu to an object file for the GPUs and
# with the flags of compile_flags.env (no fused multiply-add: the shared IoU / exp math must give
# the CPU's bits). Needs no GPU.
#
#   scripts/check_cuda_compile.sh            compile every .cu (objects in $BUILD_DIR, default build/cuda)
#   scripts/check_cuda_compile.sh --link     also link the pybind11 module _core_cuda.so (needs libcudart)
#
# Exits 0 with a "SKIP" message when nvcc is absent, non-zero on any compile or link error.
# Environment: NVCC (compiler; default: nvcc on PATH, else $CUDA_HOME/bin/nvcc, else
# /usr/local/cuda/bin/nvcc), PYTHON (for the pybind11 / Python include paths of
# core_cuda_module.cu; default python3), BUILD_DIR, NVCC_EXTRA_FLAGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build/cuda}"
LINK=0
for arg in "$@"; do
  case "$arg" in
    --link) LINK=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "check_cuda_compile.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

NVCC="${NVCC:-}"
if [[ -z "$NVCC" ]]; then
  if command -v nvcc >/dev/null 2>&1; then
    NVCC="$(command -v nvcc)"
  elif [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then
    NVCC="$CUDA_HOME/bin/nvcc"
  elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
    NVCC=/usr/local/cuda/bin/nvcc
  fi
fi
if [[ -z "$NVCC" ]] || ! "$NVCC" --version >/dev/null 2>&1; then
  echo "SKIP: nvcc not found (set NVCC or CUDA_HOME); the CUDA sources were not compiled."
  exit 0
fi

shopt -s nullglob
SOURCES=(src/cuda/*.cu)
if [[ ${#SOURCES[@]} -eq 0 ]]; then
  echo "SKIP: no .cu file under src/cuda."
  exit 0
fi

# shellcheck source=../compile_flags.env
source compile_flags.env
# shellcheck disable=SC2206  # the flag strings are meant to split into words
ARCHS=($SSD_LOSS_CUDA_ARCH_FLAGS)
# shellcheck disable=SC2206
FLAGS=("${ARCHS[@]}" $SSD_LOSS_RELEASE_FLAGS -std=c++17 $SSD_LOSS_VALUE_NVCCFLAGS -Xcompiler -fPIC
       -Iinclude)
# shellcheck disable=SC2206
EXTRA=(${NVCC_EXTRA_FLAGS:-})
mkdir -p "$BUILD_DIR"
echo "nvcc: $NVCC ($("$NVCC" --version | tail -n 2 | head -n 1))"

# Python and pybind11 include paths, for the .cu files that include pybind11.
PY_INCLUDES=()
PY_REASON=""
PYTHON="${PYTHON:-python3}"
if inc="$("$PYTHON" -c 'import sysconfig, pybind11; print(pybind11.get_include()); print(sysconfig.get_paths()["include"])' 2>/dev/null)"; then
  while IFS= read -r line; do PY_INCLUDES+=("-I$line"); done <<<"$inc"
else
  PY_REASON="no pybind11 importable by $PYTHON (set PYTHON)"
fi

elapsed() {  # seconds since $1 (date +%s%N), one decimal
  local ms=$(( ($(date +%s%N) - $1) / 1000000 ))
  printf '%d.%d s' $((ms / 1000)) $(((ms % 1000) / 100))
}

failed=0
skipped=0
OBJECTS=()
for src in "${SOURCES[@]}"; do
  obj="$BUILD_DIR/$(basename "${src%.cu}").o"
  extra_inc=()
  if grep -q '#include <pybind11/' "$src"; then
    if [[ -n "$PY_REASON" ]]; then
      echo "SKIP  $src: $PY_REASON"
      skipped=$((skipped + 1))
      continue
    fi
    extra_inc=("${PY_INCLUDES[@]}")
  fi
  start=$(date +%s%N)
  if "$NVCC" "${FLAGS[@]}" "${EXTRA[@]}" "${extra_inc[@]}" -c "$src" -o "$obj"; then
    echo "OK    $src  ($(elapsed "$start"))"
    OBJECTS+=("$obj")
  else
    echo "FAIL  $src" >&2
    failed=$((failed + 1))
  fi
done

if [[ $failed -ne 0 ]]; then
  echo "check_cuda_compile.sh: $failed CUDA source(s) failed to compile" >&2
  exit 1
fi

if [[ $LINK -eq 1 ]]; then
  if [[ $skipped -ne 0 || ! -f "$BUILD_DIR/core_cuda_module.o" ]]; then
    echo "check_cuda_compile.sh: --link needs core_cuda_module.o (not built: $PY_REASON)" >&2
    exit 1
  fi
  # The module also needs the core's host-side checks and option parsing (check_gt_offsets,
  # check_labels, parse_options): the core sources go into a static archive, from which the linker
  # takes only the objects that define them.
  CXX="${CXX:-c++}"
  core_objs=()
  for cc in src/core/*.cc; do
    o="$BUILD_DIR/core_$(basename "${cc%.cc}").o"
    # shellcheck disable=SC2086
    "$CXX" -std=c++17 $SSD_LOSS_RELEASE_FLAGS $SSD_LOSS_VALUE_CXXFLAGS -Wno-psabi -fPIC -pthread \
      -Iinclude -c "$cc" -o "$o"
    core_objs+=("$o")
  done
  rm -f "$BUILD_DIR/libssd_loss_core.a"
  ar rcs "$BUILD_DIR/libssd_loss_core.a" "${core_objs[@]}"
  suffix="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
  out="$BUILD_DIR/_core_cuda$suffix"
  start=$(date +%s%N)
  "$NVCC" "${ARCHS[@]}" -shared -Xcompiler -fPIC "${OBJECTS[@]}" \
    "$BUILD_DIR/libssd_loss_core.a" -o "$out"  # cudart linked statically (nvcc's default)
  echo "LINK  $out  ($(elapsed "$start"))"
fi

echo "check_cuda_compile.sh: ${#OBJECTS[@]} CUDA source(s) compiled" \
     "($SSD_LOSS_CUDA_ARCH_FLAGS), $skipped skipped"
