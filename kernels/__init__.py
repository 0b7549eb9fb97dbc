"""Triton ops, one folder per op, each with a pure-torch ``naive.py`` twin. Never imports lightning.

Note: a different PyPI distribution also provides a top-level ``kernels`` module; ours is installed by the
``miras`` distribution, so ``transformers.utils.is_kernels_available()`` stays False (see the tests). From 5.25
transformers requires that distribution and imports it at start-up, where ours shadows it, so ``pyproject.toml``
keeps transformers below 5.25.
"""
