#!/usr/bin/env bash
# Builds the libFuzzer target over the core with ASan + UBSan and runs it for a bounded time.
#   scripts/fuzz_core.sh [SECONDS]     (default 60)
# Needs clang with libFuzzer (Debian: clang, libclang-rt-dev); installs them with apt when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
cxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$cxx" ]; then
  echo "fuzz_core: installing clang (libFuzzer)"
  (apt-get update -qq && apt-get install -y -qq clang >/dev/null) || { echo "fuzz_core: cannot install clang"; exit 1; }
  cxx=$(command -v clang++ || command -v clang++-14)
fi
out=build/fuzz
mkdir -p "$out/corpus"
# The value flags of every build (compile_flags.env); the optimization is the fuzzer's own.
# shellcheck source=../compile_flags.env
source compile_flags.env
# shellcheck disable=SC2086
"$cxx" -std=c++14 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Wno-psabi $SSD_LOSS_VALUE_CXXFLAGS -Iinclude tests/fuzz/fuzz_core.cc src/core/*.cc \
  -o "$out/fuzz_core" -lpthread
PADDLE_SSD_OP_NUM_THREADS=2 "$out/fuzz_core" -max_total_time="$seconds" -max_len=4096 \
  -print_final_stats=1 -artifact_prefix="$out/" "$out/corpus"
