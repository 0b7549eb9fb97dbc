"""The ahead-of-time resource report names a value for every constexpr of every chunk kernel it compiles."""

import inspect

import pytest

from benchmarks import miras_resources as resources


@pytest.mark.parametrize("name", resources.KERNELS)
def test_every_constexpr_has_a_value(name):
    kernel, extra = resources._kernels()[name]
    while hasattr(kernel, "fn"):  # autotuner -> jit (or interpreted) function -> the Python function
        kernel = kernel.fn
    params = inspect.signature(kernel).parameters.values()
    needed = {p.name for p in params if "constexpr" in str(p.annotation)}
    assert needed and set(resources.constexprs(name, 64, 64, extra)) == needed
