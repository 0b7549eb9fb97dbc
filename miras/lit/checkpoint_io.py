"""Lightning's checkpoint writer, made atomic and keeping the checkpoints it replaces."""

from __future__ import annotations

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from miras.checkpoint import save_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes every checkpoint through :func:`miras.checkpoint.save_atomic`: a synced temporary file renamed into
    place, the ``keep - 1`` files it replaces kept as ``<name>-1.ckpt``, ... (``train.keep_checkpoints``)."""

    def __init__(self, keep: int = 1) -> None:
        self.keep = keep

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options; got {storage_options!r}")
        save_atomic(checkpoint, path, keep=self.keep)
