#!/usr/bin/env bash
# Creates .oracle-venv (CPython 3.7 + paddlepaddle 1.8.5) as in docs/semantics.md §10, for the
# fluid baseline of benchmarks/bench_cpu.py. Usage: bash benchmarks/fluid_setup.sh [venv-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.oracle-venv}
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import paddle" 2>/dev/null; then
    echo "$VENV already set up"; exit 0
fi
PY37=${PY37:-$(pyenv root 2>/dev/null)/versions/3.7.16/bin/python}
[ -x "$PY37" ] || { echo "need CPython 3.7/3.8 (set PY37=/path/to/python3.7)" >&2; exit 1; }
"$PY37" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q "paddlepaddle==1.8.5" "protobuf==3.20.3"
"$VENV/bin/python" -c "import paddle; print('fluid', paddle.__version__)"
