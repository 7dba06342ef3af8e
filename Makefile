# `make demo` and `make test` work on a fresh clone: they create their own virtualenvs, install
# Paddle and this package into them, and run. Nothing installed by hand is used.
PYTHON ?= python3
VENV ?= .venv
VENV26 ?= .venv-paddle2.6
PADDLE ?= 3.3.1
PADDLE26 ?= 2.6.2
DEPS := numpy pybind11 pytest hypothesis wheel "setuptools>=70.1" matplotlib tqdm
PACKAGE_SOURCES := setup.py pyproject.toml compile_flags.env paddle_ssd_op_autoload.py paddle_ssd_op_autoload.pth $(shell find src include paddle_ssd_op -type f \
	\( -name '*.cc' -o -name '*.h' -o -name '*.cu' -o -name '*.py' \) 2>/dev/null)
PYTEST_ARGS ?=
JOBS ?= 2

.PHONY: demo test test-python test-cpp test-sanitize test-fast test-fuzz-core check-cuda test-gpu \
	check-paddle-gpu test-cuda-emu bench bench-fluid bench-gpu fuzz clean

demo: $(VENV)/.installed
	$(VENV)/bin/python examples/demo.py
	$(VENV)/bin/python examples/train_ssd_shapes.py --quick --out-dir build/ssd_shapes_demo

# Every test on both supported Paddle versions, slow ones included, plus the C++ core tests.
test: test-python test-cpp

test-python: $(VENV)/.installed $(VENV26)/.installed
	$(VENV)/bin/pytest -q -m "slow or not slow" $(PYTEST_ARGS) tests
	$(VENV26)/bin/pytest -q -m "slow or not slow" $(PYTEST_ARGS) tests

# Quick loop while developing: Paddle 3.3 only, slow tests skipped.
test-fast: $(VENV)/.installed
	$(VENV)/bin/pytest -q $(PYTEST_ARGS) tests

test-cpp: $(VENV)/.deps
	cmake -S . -B build/cmake -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE=$(abspath $(VENV))/bin/python
	cmake --build build/cmake -j$(JOBS)
	ctest --test-dir build/cmake --output-on-failure

test-sanitize:
	cmake -S . -B build/cmake-asan -DCMAKE_BUILD_TYPE=Debug -DSSD_LOSS_SANITIZE=ON -DSSD_LOSS_BUILD_PYTHON=OFF
	cmake --build build/cmake-asan -j$(JOBS)
	ctest --test-dir build/cmake-asan --output-on-failure

# The libFuzzer target over the core (ASan + UBSan), for FUZZ_SECONDS.
FUZZ_SECONDS ?= 60
test-fuzz-core:
	scripts/fuzz_core.sh $(FUZZ_SECONDS)

# nvcc compile-only check of every .cu (sm_80, sm_90), and the link of the CUDA pybind11 module.
check-cuda: $(VENV)/.deps
	PYTHON=$(VENV)/bin/python scripts/check_cuda_compile.sh --link

# On a machine with an NVIDIA GPU: build the CUDA module and run the GPU tests against the CPU core,
# then build the op against paddlepaddle-gpu and run it on GPU tensors (kernels vs host fallback).
test-gpu: $(VENV)/.installed
	PYTHON=$(VENV)/bin/python scripts/check_cuda_compile.sh --link
	PYTHONPATH=build/cuda $(VENV)/bin/pytest -q -rs tests/gpu --ignore=tests/gpu/test_op_gpu.py
	scripts/check_paddle_gpu_build.sh

# The op built against paddlepaddle-gpu 2.6.2 (venv .venv-gpu, CUDA kernels included), imported and
# tested on CPU tensors; its GPU tests run where there is a GPU. Needs the CUDA toolkit, no GPU.
check-paddle-gpu:
	scripts/check_paddle_gpu_build.sh

# On a machine with an NVIDIA GPU and PyTorch: the kernels against a PyTorch composite on that card
# (writes docs/benchmarks_gpu.md).
bench-gpu: $(VENV)/.installed
	PYTHON=$(VENV)/bin/python scripts/check_cuda_compile.sh --link
	PYTHONPATH=build/cuda $(VENV)/bin/python benchmarks/bench_gpu.py

# Without a GPU: the CUDA kernels' logic run on the host (tests/gpu/emu), against the CPU core.
test-cuda-emu: $(VENV)/.deps
	PYTHON=$(VENV)/bin/python tests/gpu/emu/build.sh

bench: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/bench_cpu.py

# The fluid 1.8.5 oracle venv (.oracle-venv) that bench_cpu.py then also times.
bench-fluid:
	bash benchmarks/fluid_setup.sh
	$(MAKE) bench

# The long profile: > 100 000 hypothesis cases against the NumPy reference, then 10 minutes of
# libFuzzer on the core.
fuzz: $(VENV)/.installed
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q --hypothesis-show-statistics tests/test_random.py
	scripts/fuzz_core.sh 600

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q paddlepaddle==$(PADDLE) $(DEPS)
	touch $@

$(VENV26)/.deps:
	$(PYTHON) -m venv $(VENV26)
	$(VENV26)/bin/pip install -q --upgrade pip
	$(VENV26)/bin/pip install -q paddlepaddle==$(PADDLE26) $(DEPS)
	touch $@

# The operator library is tied to the exact Paddle it is built against: build it in each venv.
%/.installed: %/.deps $(PACKAGE_SOURCES)
	$*/bin/pip install -q --no-build-isolation --no-deps --force-reinstall .
	touch $@

clean:
	rm -rf build $(VENV) $(VENV26) .venv-gpu *.egg-info
