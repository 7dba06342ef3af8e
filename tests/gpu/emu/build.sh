#!/usr/bin/env bash
# Builds, into OUTDIR (default build/cuda-emu), two pybind11 modules from the current sources:
#   _core_cuda_emu  src/cuda/*.cu compiled by the HOST compiler against cuda_emu.h (no GPU, no CUDA
#                   toolkit needed): the launchers and kernels run as host fibers;
#   _core           the CPU core (src/python/core_module.cc + src/core/*.cc).
# Then runs tests/gpu/test_cuda_core.py against them, unless --no-test:
#   tests/gpu/emu/build.sh [OUTDIR] [--no-test] [pytest args...]
# A logic check of the kernels only: see cuda_emu.h for what the emulation cannot check.
# EMU_SCHED=reverse|random changes the order of the fibers between barriers (race check).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
OUT="build/cuda-emu"
if [[ $# -gt 0 && "$1" != -* ]]; then OUT="$1"; shift; fi
RUN_TESTS=1
if [[ $# -gt 0 && "$1" == "--no-test" ]]; then RUN_TESTS=0; shift; fi
PYTHON="${PYTHON:-python3}"
CXX="${CXX:-c++}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

PYINC=($("$PYTHON" -c 'import pybind11, sysconfig; print("-I" + pybind11.get_include(), "-I" + sysconfig.get_paths()["include"])'))
SUFFIX="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"

# <<<grid, block, shmem, stream>>>(args) -> ::emu::launch(grid, block, shmem, stream, kernel, args)
"$PYTHON" - "$OUT" <<'PY'
import re, sys
from pathlib import Path
out = Path(sys.argv[1])
launch = re.compile(r'(\w+<\w+>)\s*<<<(.*?)>>>\(', re.S)
for path in sorted(Path("src/cuda").glob("*.cu")):
    name = path.stem
    src = path.read_text()
    src = launch.sub(lambda m: "::emu::launch(%s, %s, " % (" ".join(m.group(2).split()), m.group(1)), src)
    src = src.replace("PYBIND11_MODULE(_core_cuda,", "PYBIND11_MODULE(_core_cuda_emu,")
    assert "<<<" not in src, name
    (out / ("%s_emu.cc" % name)).write_text(src)
PY

# The value flags of every build (compile_flags.env); the emulated kernels keep their asserts and
# debug information, the CPU core is built as released.
# shellcheck source=../../../compile_flags.env
source compile_flags.env
# shellcheck disable=SC2206  # the flag strings are meant to split into words
FLAGS=(-std=c++17 -O2 -g $SSD_LOSS_VALUE_CXXFLAGS -Wno-psabi -fPIC -pthread)
# shellcheck disable=SC2206
RELEASE=($SSD_LOSS_RELEASE_FLAGS)
EMU_INC=(-Itests/gpu/emu -Iinclude -Isrc/cuda "${PYINC[@]}")
pids=()
emu_objs=()
for cu in src/cuda/*.cu; do
  name="$(basename "${cu%.cu}")"
  "$CXX" "${FLAGS[@]}" "${EMU_INC[@]}" -c "$OUT/${name}_emu.cc" -o "$OUT/${name}_emu.o" & pids+=($!)
  emu_objs+=("$OUT/${name}_emu.o")
done
core_objs=()
for cc in src/core/*.cc src/python/core_module.cc; do
  o="$OUT/cpu_$(basename "${cc%.cc}").o"
  "$CXX" "${FLAGS[@]}" "${RELEASE[@]}" -Iinclude "${PYINC[@]}" -c "$cc" -o "$o" & pids+=($!)
  core_objs+=("$o")
done
for pid in "${pids[@]}"; do wait "$pid"; done
ar rcs "$OUT/libcore.a" "${core_objs[@]}"
"$CXX" -shared -pthread "${emu_objs[@]}" "$OUT/libcore.a" \
  -o "$OUT/_core_cuda_emu$SUFFIX"
"$CXX" -shared -pthread "${core_objs[@]}" -o "$OUT/_core$SUFFIX"
echo "built $OUT/_core_cuda_emu$SUFFIX and $OUT/_core$SUFFIX"

if [[ $RUN_TESTS -eq 1 ]]; then
  PYTHONPATH="$OUT${PYTHONPATH:+:$PYTHONPATH}" PADDLE_SSD_OP_CORE=_core \
    PADDLE_SSD_OP_CORE_CUDA=_core_cuda_emu "$PYTHON" -m pytest -q tests/gpu/test_cuda_core.py "$@"
fi
