"""The ahead-of-time resource report names a value for every constexpr of every chunk kernel it compiles."""

import pytest

from kernels.miras import resources


@pytest.mark.parametrize("name", resources.KERNELS)
def test_every_constexpr_has_a_value(name):
    kernel, extra = resources._kernels()[name]
    fn = getattr(kernel, "fn", kernel)
    needed = {p.name for p in fn.params if p.is_constexpr}
    assert set(resources.constexprs(name, 64, 64, extra)) == needed
