"""Build the lltrade Cython extensions (the book and the order gate).

Directives are set once here.  Two environment switches change the build:

``LLTRADE_DEBUG=1``
    bounds, wraparound and initialisation checks on, line tracing, ``-O0 -g``
    and C asserts (the core's invariant checks) enabled.
``LLTRADE_SANITIZE=1``
    AddressSanitizer and UndefinedBehaviorSanitizer (implies the debug
    directives).  Run Python with ``LD_PRELOAD=$(cc -print-file-name=libasan.so)``.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


SANITIZE = _flag("LLTRADE_SANITIZE")
DEBUG = _flag("LLTRADE_DEBUG") or SANITIZE

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
    "profile": False,
    "linetrace": DEBUG,
}

compile_args = ["-std=c11", "-fno-strict-aliasing"]
link_args: list[str] = []
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    compile_args += ["-O0", "-g3", "-UNDEBUG"]
    macros += [("CYTHON_TRACE_NOGIL", "1"), ("LLTRADE_DEBUG", "1")]
else:
    # -O3 without -march: the wheel must run on any x86-64 or arm64 host.
    compile_args += ["-O3", "-DNDEBUG"]
if SANITIZE:
    compile_args += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    link_args += ["-fsanitize=address,undefined"]

extensions = [
    Extension(
        f"lltrade.{name}",
        [f"src/lltrade/{name}.pyx"],
        include_dirs=[numpy.get_include(), "src/lltrade"],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        # _records frames journal records with libdeflate's crc32 (zlib.crc32's CRC, faster).
        libraries=["deflate"] if name == "_records" else [],
    )
    # _gate cimports _book's records and _cmap's map (both .pxd, resolved by cythonize).
    for name in ("_book", "_gate", "_reports", "_telemetry", "_records", "_inbound")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=_flag("LLTRADE_ANNOTATE"),
        # Generated C stays out of src/, one folder per flavour, so a debug
        # build never leaks into the release one.
        build_dir=f"build/cython{'-asan' if SANITIZE else '-debug' if DEBUG else ''}",
        nthreads=0 if sys.platform != "linux" else 2,
    ),
)
