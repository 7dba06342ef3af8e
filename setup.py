# Builds the Paddle custom operator (paddle_ssd_op/_ssd_op.so) and the pybind11 module over the
# framework-free core (paddle_ssd_op/_core.so). Install with `pip install --no-build-isolation .`
# into an environment that already holds the paddlepaddle the package will run with: the .so is
# tied to that exact Paddle version.
import zlib  # noqa: F401  -- must precede paddle: paddle 2.6.2 exports a zlib that crashes Python's
import os
from pathlib import Path

import paddle
import pybind11
from paddle.utils.cpp_extension import BuildExtension, CppExtension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CORE_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "core").glob("*.cc"))
OP_SOURCES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src" / "paddle").glob("*.cc"))
INCLUDE = str(ROOT / "include")
# -ffp-contract=off: no FMA contraction, so every build (and the CUDA one, with --fmad=false)
# computes the same bits; -fno-trapping-math lets selects vectorize without changing any value;
# -fno-wrapv undoes the -fwrapv of Python's own build flags, under which GCC leaves the matching
# loops (32-bit prior indices) scalar.
CXXFLAGS = ["-O3", "-DNDEBUG", "-ffp-contract=off", "-fno-trapping-math", "-fno-wrapv"]


op = CppExtension(
    sources=OP_SOURCES + CORE_SOURCES,
    include_dirs=[INCLUDE],
    extra_compile_args={"cxx": CXXFLAGS},
)
op.name = "paddle_ssd_op._ssd_op"  # set afterwards: 2.6.2's CppExtension takes no name

core = Extension(
    "paddle_ssd_op._core",
    sources=["src/python/core_module.cc"] + CORE_SOURCES,
    include_dirs=[INCLUDE, pybind11.get_include()],
    extra_compile_args=CXXFLAGS,
    language="c++",
)



class BuildExtensions(BuildExtension.with_options(no_python_abi_suffix=True)):
    """Paddle's BuildExtension accepts a single extension (the op); the pybind11 module is built
    afterwards by the plain setuptools step."""

    def build_extensions(self):
        others = [ext for ext in self.extensions if ext is not op]
        self.extensions = [op]
        super().build_extensions()
        for ext in others:
            build_ext.build_extension(self, ext)


class BuildPy(build_py):
    """Records the Paddle the package is built against: it checks that one is running at import."""

    def run(self):
        super().run()
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
    ext_modules=[op, core],
    cmdclass={"build_py": BuildPy, "build_ext": BuildExtensions},
    python_requires=">=3.8",
    install_requires=["numpy"],
    zip_safe=False,
    # One build tree per Paddle version: objects built against one must never reach the other.
    options={"build": {"build_base": f"build/paddle-{paddle.__version__}"}},
)
