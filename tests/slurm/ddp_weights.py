"""Run under ``srun`` (one task per node): train a smoke run with ``miras.train.train`` and write what this rank saw.

``python tests/slurm/ddp_weights.py OUT_DIR`` writes ``OUT_DIR/rank<k>.json``: world size, a digest of the
first training batch, and digests of the weights before and after training. ``test_local_slurm`` compares them
across ranks: different batches but equal final weights means DDP synchronised the gradients.
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

from miras.experiment import load_experiment
from miras.train import train

REPO = Path(__file__).resolve().parents[2]


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class RecordRank(L.Callback):
    def __init__(self, out: Path):
        self.out, self.record = out, {}

    def _weights(self, module) -> str:
        return digest(v for _, v in sorted(module.state_dict().items()))

    def on_train_start(self, trainer, module) -> None:
        self.record.update(world_size=trainer.world_size, initial=self._weights(module))

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if "first_batch" not in self.record:
            values = batch.values() if isinstance(batch, dict) else [batch]
            self.record["first_batch"] = digest(v for v in values if torch.is_tensor(v))

    def on_train_end(self, trainer, module) -> None:
        self.record["final"] = self._weights(module)
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))


def main(out: Path) -> None:
    run = load_experiment(REPO / "experiments/miras/table2.py").run("transformer-340m")
    config = run.config("smoke", ("data.batch_size=2", "train.tokens=2048"))
    nodes = int(os.environ["SLURM_NNODES"])
    train(
        config,
        out / "run",
        {"paper": "test", "table": "ddp", "run": run.name, "seed": 0, "scale": "smoke"},
        accelerator="cpu",
        devices=1,
        num_nodes=nodes,
        callbacks=[RecordRank(out)],
        progress=False,
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
