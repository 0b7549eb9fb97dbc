from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_our_kernels_package_does_not_look_like_hf_kernels():
    from transformers.utils import import_utils, is_kernels_available

    import kernels

    assert Path(kernels.__file__).resolve().is_relative_to(REPO)
    # transformers maps the import name to our distribution and reads its version, so this stays False only
    # while that version is below its minimum for the hub package; the test guards exactly that
    import_utils.is_kernels_available.cache_clear()
    assert is_kernels_available() is False


def test_kernels_never_import_lightning():
    for path in (REPO / "kernels").rglob("*.py"):
        text = path.read_text()
        assert "import lightning" not in text and "from lightning" not in text, path


def test_assert_close_can_fail():
    import pytest
    import torch

    from kernels.utils import assert_close

    ref = torch.randn(64)
    assert_close("same", ref, ref + 1e-7 * torch.randn(64), ratio=1e-5)
    with pytest.raises(AssertionError, match="relative RMS"):
        assert_close("off", ref, ref + 0.1 * torch.randn(64), ratio=1e-3)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", ref, torch.full_like(ref, float("nan")), ratio=1.0)
