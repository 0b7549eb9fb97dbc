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
