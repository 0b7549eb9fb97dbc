"""Triton ops, one folder per op, each with a pure-torch ``naive.py`` twin. Never imports lightning.

Note: a different PyPI distribution also provides a top-level ``kernels`` module; ours is installed by the
``miras`` distribution, so ``transformers.utils.is_kernels_available()`` stays False (see the tests).
"""
