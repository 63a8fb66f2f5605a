"""Builds adam_jax's optional C++ extension, the fused Adam kernel (``adam_jax.fused_adam``).

Everything else is in pyproject.toml. The kernel is compiled here, once, when the package is
installed, against the XLA FFI headers of the ``jax`` in ``[build-system] requires``; importing
adam_jax and tracing a step never run a compiler. Without a working C++17 compiler the
extension is skipped with a warning, the install succeeds, and ``adam_jax.fused_available()``
is False.
"""

import jax
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# Values are those of the source: no errno or trap bookkeeping (lets sqrt and the select
# vectorise), and no contraction into fused multiply-adds beyond the ones the source writes
# (they are the ones XLA makes, so that results match adam_jax.adam bit for bit).
_UNIX_FLAGS = [
    "-O3",
    "-g0",  # Python's own flags ask for debug info: 1.5 MB instead of 0.1 MB
    "-std=c++17",
    "-fvisibility=hidden",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",
]


class KernelBuildExt(build_ext):
    """``build_ext`` with the kernel's flags for GCC and Clang (other compilers: defaults)."""

    def build_extension(self, ext):
        if self.compiler.compiler_type == "unix":
            ext.extra_compile_args = _UNIX_FLAGS
        super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "adam_jax._adam_step",
            sources=["adam_jax/csrc/adam_step.cc"],
            include_dirs=[jax.ffi.include_dir()],
            language="c++",
            optional=True,  # a failed build warns and leaves adam_jax without the kernel
        )
    ],
    cmdclass={"build_ext": KernelBuildExt},
)
