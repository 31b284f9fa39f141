# The Cython extensions are the one part pyproject.toml cannot declare by itself.
# A failed build fails the install.
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

sampler = Extension(
    "chargen.runtime._sampler",
    sources=["runtime/_sampler.pyx", "csrc/sampler.c"],
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=["-O3", "-std=c99"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

# The training kernels: FusedGRU's gate arithmetic (forward: csrc/gru_gates.c, shared with the
# int8 step; backward: csrc/gru_train.c) and CPU dropout.
gru = Extension(
    "chargen.train._gru",
    sources=["train/_gru.pyx", "csrc/gru_gates.c", "csrc/gru_train.c"],
    include_dirs=["csrc"],
    # no-trapping-math: nothing reads the FP exception flags, and the flag
    # lets the compiler vectorise more of the gate loops (measured 20% faster)
    extra_compile_args=["-O3", "-std=c99", "-fno-trapping-math"],
)

# The int8 step (chargen.runtime.engine): its loops run on csrc/pool.c's POSIX threads; on
# Windows on one thread.
pthread = [] if sys.platform == "win32" else ["-pthread"]
int8 = Extension(
    "chargen.runtime._int8",
    sources=["runtime/_int8.pyx", "csrc/int8_matrix.c", "csrc/int8_matvec.c", "csrc/int8_gemm.c", "csrc/int8_step.c",
             "csrc/pool.c", "csrc/gru_gates.c"],
    include_dirs=["csrc", numpy.get_include()],
    extra_compile_args=["-O3", "-std=c99", "-fno-trapping-math", *pthread],
    extra_link_args=pthread,
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(ext_modules=cythonize([sampler, gru, int8], language_level=3))
