"""The build's invariants: the compile flags that keep every build's bits the same live in one file
that every build path reads, and the op and _core share one core library (one thread pool)."""
import shutil
import subprocess
from pathlib import Path

import pytest

import paddle_ssd_op
from paddle_ssd_op import _core
from paddle_ssd_op._loader import native_library

ROOT = Path(__file__).resolve().parents[1]
FLAGS_FILE = "compile_flags.env"
BUILD_PATHS = ["setup.py", "CMakeLists.txt", "scripts/check_cuda_compile.sh",
               "scripts/fuzz_core.sh", "tests/gpu/emu/build.sh"]


@pytest.mark.parametrize("path", BUILD_PATHS)
def test_build_path_reads_the_flags_file(path):
    text = (ROOT / path).read_text()
    assert FLAGS_FILE in text, f"{path} does not read {FLAGS_FILE}"
    for flag in ("-ffp-contract", "--fmad", "-fno-wrapv", "-fno-trapping-math", "-O3"):
        assert flag not in text, f"{path} spells {flag} itself instead of reading {FLAGS_FILE}"


def test_flags_file_carries_the_invariant():
    text = (ROOT / FLAGS_FILE).read_text()
    assert 'SSD_LOSS_VALUE_CXXFLAGS="-ffp-contract=off' in text
    assert 'SSD_LOSS_VALUE_NVCCFLAGS="--fmad=false"' in text


def test_op_and_core_share_one_thread_pool():
    lib = native_library()
    try:
        paddle_ssd_op.set_num_threads(3)
        assert lib.paddle_ssd_op_num_threads() == 3 == _core.num_threads()
        lib.paddle_ssd_op_set_num_threads(5)
        assert paddle_ssd_op.get_num_threads() == 5 == _core.num_threads()
    finally:
        paddle_ssd_op.set_num_threads(None)


def defines_pool(library):
    symbols = subprocess.run(["nm", "-DC", "--defined-only", str(library)], capture_output=True,
                             text=True, check=True).stdout
    return "ssd_loss::parallel_for" in symbols


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_only_the_core_library_holds_the_pool():
    package = Path(paddle_ssd_op.__file__).parent
    assert defines_pool(package / "libssd_loss_core.so")
    assert not defines_pool(package / "_ssd_op.so")
    assert not defines_pool(Path(_core.__file__))
