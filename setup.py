# Builds the Paddle custom operator (paddle_ssd_op/_ssd_op.so) and the pybind11 module over the
# framework-free core (paddle_ssd_op/_core.so). Install with `pip install --no-build-isolation .`
# into an environment that already holds the paddlepaddle the package will run with: the .so is
# tied to that exact Paddle version.
#
# Against a Paddle built with CUDA, the op also gets the CUDA kernels (src/cuda/*.cu,
# compiled by nvcc); PADDLE_SSD_OP_CPU_ONLY=1 builds without them (GPU tensors then take the
# op's host fallback). The CUDA toolkit is found through CUDA_HOME, else the nvcc on PATH.
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _is_cuda_home(path):
    return path is not None and (Path(path) / "include" / "cuda_runtime.h").is_file()


def find_cuda_home():
    """The CUDA toolkit root: the folder whose include/ holds cuda_runtime.h. CUDA_HOME (or
    CUDA_PATH) if it is one; else the root nvcc itself reports (`TOP=` of `nvcc --dryrun`), which
    also holds when the nvcc on PATH is a wrapper script outside the toolkit (Paddle's own lookup,
    dirname(dirname(which nvcc)), then finds no headers); else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if _is_cuda_home(os.environ.get(var)):
            return os.environ[var]
    nvcc = shutil.which("nvcc")
    if nvcc:
        try:
            dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                 capture_output=True, text=True, timeout=60)
            top = re.search(r"^#\$ TOP=(.*)$", dry.stdout + dry.stderr, re.M)
        except (OSError, subprocess.SubprocessError):
            top = None
        candidates = ([os.path.realpath(top.group(1).strip())] if top else []) + [
            os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))]
        for home in candidates:
            if _is_cuda_home(home):
                return home
    return "/usr/local/cuda" if _is_cuda_home("/usr/local/cuda") else None


# Paddle's cpp_extension reads CUDA_HOME once, when `import paddle` imports it: set it before.
CUDA_HOME = find_cuda_home()
if CUDA_HOME is not None:
    os.environ["CUDA_HOME"] = CUDA_HOME

import paddle  # noqa: E402
import pybind11  # noqa: E402
from paddle.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402
from setuptools import Extension, setup  # noqa: E402

WITH_CUDA = paddle.is_compiled_with_cuda() and os.environ.get("PADDLE_SSD_OP_CPU_ONLY") != "1"
if WITH_CUDA:
    if CUDA_HOME is None:
        raise RuntimeError(
            "paddle_ssd_op: Paddle is built with CUDA but no CUDA toolkit was found (no "
            "include/cuda_runtime.h under CUDA_HOME, the nvcc on PATH, or /usr/local/cuda). Set "
            "CUDA_HOME to the toolkit root, or PADDLE_SSD_OP_CPU_ONLY=1 to build without the "
            "CUDA kernels.")

def read_compile_flags(path=ROOT / "compile_flags.env"):
    """The NAME="flags" lines of compile_flags.env (the compile flags of every build), split."""
    flags = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r'(SSD_LOSS_\w+)="(.*)"', line.strip())
        if match:
            flags[match.group(1)] = shlex.split(match.group(2))
    return flags


FLAGS = read_compile_flags()
CXXFLAGS = FLAGS["SSD_LOSS_RELEASE_FLAGS"] + FLAGS["SSD_LOSS_VALUE_CXXFLAGS"]
CORE_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "core").glob("*.cc"))
# ssd_loss_op_cuda.cc is the op's GPU dispatch: it calls the CUDA kernels.
OP_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "paddle").glob("*.cc")
                    if WITH_CUDA or p.name != "ssd_loss_op_cuda.cc")
# The kernels (src/cuda/*.cu but the NumPy binding core_cuda_module.cu, built by the scripts).
CUDA_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "cuda").glob("*.cu")
                      if p.name != "core_cuda_module.cu")
INCLUDE = str(ROOT / "include")
# The core is one shared library beside the modules, linked by both the op and _core: one copy of
# its state (the thread pool) per process, whichever module set the thread count.
CORE_LIBRARY = "libssd_loss_core.so"
LINK_CORE = ["-l:" + CORE_LIBRARY, "-Wl,-rpath,$ORIGIN"]


if WITH_CUDA:
    NVCCFLAGS = (FLAGS["SSD_LOSS_RELEASE_FLAGS"] + ["-std=c++17"]
                 + FLAGS["SSD_LOSS_VALUE_NVCCFLAGS"] + FLAGS["SSD_LOSS_CUDA_ARCH_FLAGS"])
    # CUDA 13 moved thrust / cub under include/cccl, where Paddle 2.6's GPU headers (included by
    # the .cc files, which are compiled with -DPADDLE_WITH_CUDA) do not look; its CCCL needs
    # C++17, also in the .cc files.
    CCCL = Path(CUDA_HOME) / "include" / "cccl"
    op = CUDAExtension(
        sources=OP_SOURCES + CUDA_SOURCES,
        include_dirs=[INCLUDE, str(ROOT / "src" / "cuda")] + ([str(CCCL)] if CCCL.is_dir() else []),
        extra_compile_args={"cxx": CXXFLAGS + ["-std=c++17"], "nvcc": NVCCFLAGS},
    )
else:
    op = CppExtension(
        sources=OP_SOURCES,
        include_dirs=[INCLUDE],
        extra_compile_args={"cxx": CXXFLAGS},
    )
op.name = "paddle_ssd_op._ssd_op"  # set afterwards: 2.6.2's CppExtension takes no name

core = Extension(
    "paddle_ssd_op._core",
    sources=["src/python/core_module.cc"],
    # setuptools rebuilds a plain extension only when these are newer than it (the core library's
    # file is added when it is built).
    depends=sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "include").rglob("*.h"),
                                                       *(ROOT / "src" / "python").glob("*.h"),
                                                       ROOT / "compile_flags.env"]),
    include_dirs=[INCLUDE, pybind11.get_include()],
    extra_compile_args=CXXFLAGS,
    language="c++",
)


class BuildExtensions(BuildExtension.with_options(no_python_abi_suffix=True)):
    """Builds the core library first (the modules link it), then the op: Paddle's BuildExtension
    accepts a single extension; the pybind11 module is built afterwards by the plain setuptools
    step."""

    def build_extensions(self):
        core_dir = self._build_core_library()
        for ext in self.extensions:
            ext.extra_link_args = list(ext.extra_link_args or []) + ["-L" + core_dir] + LINK_CORE
        core.depends = list(core.depends) + [str(Path(core_dir) / CORE_LIBRARY)]
        others = [ext for ext in self.extensions if ext is not op]
        self.extensions = [op]
        super().build_extensions()
        for ext in others:
            build_ext.build_extension(self, ext)

    def _build_core_library(self):
        """Compiles src/core into paddle_ssd_op/libssd_loss_core.so; returns its folder."""
        package_dir = Path(self.get_ext_fullpath(core.name)).parent
        package_dir.mkdir(parents=True, exist_ok=True)
        objects = self.compiler.compile(CORE_SOURCES, output_dir=self.build_temp,
                                        include_dirs=[INCLUDE],
                                        extra_postargs=CXXFLAGS + ["-fPIC", "-pthread"])
        self.compiler.link_shared_object(objects, str(package_dir / CORE_LIBRARY),
                                         extra_postargs=["-pthread"], target_lang="c++")
        return str(package_dir)


class BuildPy(build_py):
    """Records the Paddle the package is built against: it checks that one is running at import.
    Also places paddle_ssd_op_autoload.pth beside the package, so that site-packages gets it (it
    imports paddle_ssd_op when a saved model needs the op: paddle_ssd_op_autoload.py)."""

    def run(self):
        super().run()
        self.copy_file(str(ROOT / "paddle_ssd_op_autoload.pth"), self.build_lib)
        target = Path(self.build_lib) / "paddle_ssd_op" / "_build_info.py"
        target.write_text(
            "# Written by setup.py at build time.\n"
            f"PADDLE_VERSION = {paddle.__version__!r}\n"
            f"PADDLE_COMMIT = {paddle.version.commit!r}\n"
        )


setup(
    name="paddle_ssd_op",
    version="0.1.0",
    description="fluid.layers.ssd_loss as one fused C++ operator for PaddlePaddle 2.6 and 3.3",
    packages=["paddle_ssd_op"],
    py_modules=["paddle_ssd_op_autoload"],
    ext_modules=[op, core],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExtensions},
    python_requires=">=3.8",
    install_requires=["numpy"],
    zip_safe=False,
    # One build tree per Paddle version: objects built against one must never reach the other.
    options={"build": {"build_base": f"build/paddle-{paddle.__version__}"}},
)
