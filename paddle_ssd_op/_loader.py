"""Loads the compiled operator library and registers its ops with the running Paddle."""
import ctypes
import functools
import warnings
from pathlib import Path

import paddle

OP_NAME = "fused_ssd_loss"
LIBRARY = Path(__file__).resolve().parent / "_ssd_op.so"


def _build_paddle_version():
    try:
        from ._build_info import PADDLE_VERSION, PADDLE_COMMIT
    except ImportError:
        return None, None
    return PADDLE_VERSION, PADDLE_COMMIT


def load_op():
    built_version, built_commit = _build_paddle_version()
    rebuild = "Rebuild it in this environment: pip install --no-build-isolation --force-reinstall ."
    if not LIBRARY.exists() or built_version is None:
        raise ImportError(f"paddle_ssd_op: the operator library {LIBRARY} is not built. {rebuild}")
    # A library built against another Paddle dies with a symbol lookup error inside the process,
    # so refuse to load it rather than let that happen.
    if (built_version, built_commit) != (paddle.__version__, paddle.version.commit):
        raise ImportError(
            f"paddle_ssd_op was built against paddlepaddle {built_version} (commit {built_commit}) "
            f"but paddlepaddle {paddle.__version__} (commit {paddle.version.commit}) is running. "
            + rebuild
        )
    with warnings.catch_warnings():  # importing cpp_extension warns about ccache, irrelevant here
        warnings.simplefilter("ignore")
        from paddle.utils.cpp_extension.extension_utils import load_op_meta_info_and_register_op

    names = load_op_meta_info_and_register_op(str(LIBRARY))
    # A second load (importlib.reload of the package) registers nothing new: the op is known.
    if OP_NAME not in names and not _registered():
        raise ImportError(f"paddle_ssd_op: {LIBRARY} did not register the op {OP_NAME}")


def _registered():
    from paddle.base.framework import OpProtoHolder

    return OP_NAME in OpProtoHolder.instance().op_proto_map


@functools.lru_cache(maxsize=None)
def native_library():
    """The operator library's C entry points (thread count, cache, CUDA kernels). Paddle has
    loaded the library already; dlopen of the same file returns that handle."""
    lib = ctypes.CDLL(str(LIBRARY))
    lib.paddle_ssd_op_set_num_threads.argtypes = [ctypes.c_int]
    lib.paddle_ssd_op_num_threads.restype = ctypes.c_int
    lib.paddle_ssd_op_empty_cache.restype = None
    lib.paddle_ssd_op_cuda_kernels_built.restype = ctypes.c_int
    if lib.paddle_ssd_op_cuda_kernels_built():  # the switch exists only next to the kernels
        lib.paddle_ssd_op_cuda_kernels_enabled.restype = ctypes.c_int
        lib.paddle_ssd_op_set_cuda_kernels_enabled.argtypes = [ctypes.c_int]
        lib.paddle_ssd_op_set_cuda_kernels_enabled.restype = None
    return lib
