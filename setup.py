# The Cython sampler is the one part pyproject.toml cannot declare by itself.
# A failed build fails the install: there is no pure-Python fallback.
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

setup(ext_modules=cythonize([sampler], language_level=3))
