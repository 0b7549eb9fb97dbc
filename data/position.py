"""The data position a Lightning checkpoint saves, shared by every DataModule of ``data/``."""

from __future__ import annotations

import lightning as L


class ResumableDataModule(L.LightningDataModule):
    """A DataModule whose training loader resumes after the ``skip_batches`` micro-batches a checkpoint recorded.

    Subclasses start their training loader at ``self.skip_batches``; the position is the number of micro-batches
    this rank consumed (``global_step * accumulate_grad_batches``), so a resumed run sees exactly the samples an
    uninterrupted one would.
    """

    def __init__(self) -> None:
        super().__init__()
        self.skip_batches = 0

    def _rank(self) -> tuple[int, int]:
        """``(rank, world_size)`` of the attached trainer, ``(0, 1)`` without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def state_dict(self) -> dict:
        """Training micro-batches this rank has consumed (the position loaded when detached)."""
        trainer = self.trainer
        if trainer is None:
            return {"batches_seen": self.skip_batches}
        return {"batches_seen": trainer.global_step * trainer.accumulate_grad_batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skip_batches = int(state_dict["batches_seen"])
