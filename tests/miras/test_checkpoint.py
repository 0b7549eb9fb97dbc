"""Run-folder checkpoints: atomic writes that keep the last k, and a loader that falls back past a torn one, the
same for resume, ``generate``, ``eval`` and ``export``."""

import ast
import errno
import json
from pathlib import Path

import pytest
import torch

import miras.checkpoint as ckpt
from miras.checkpoint import (
    CheckpointWriteError,
    NoCheckpointError,
    find_checkpoint,
    load_checkpoint,
    save_atomic,
)
from miras.cli import main
from miras.config import DataConfig, MixerConfig, ModelConfig, RunConfig, config_hash, to_dict
from miras.models import LanguageModel

REPO = Path(__file__).resolve().parents[2]
CONFIG = RunConfig(
    model=ModelConfig(vocab_size=64, d_model=16, n_layer=1, mixer=MixerConfig(n_head=2)),
    data=DataConfig(seq_len=16),
)


def checkpoint(step: int, config: RunConfig = CONFIG) -> dict:
    """What Lightning saves of a training run, at a tiny size."""
    weights = {f"model.{k}": v for k, v in LanguageModel(config.model).state_dict().items()}
    return {"global_step": step, "loops": {}, "hyper_parameters": {"config": to_dict(config)}, "state_dict": weights}


def write_run(folder: Path, steps=(4, 8), keep: int = 2) -> Path:
    """A run folder whose checkpoints were written at ``steps``, keeping ``keep``."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config_hash": config_hash(CONFIG)}))
    for step in steps:
        save_atomic(checkpoint(step), folder / "checkpoints" / "last.ckpt", keep=keep)
    return folder


def truncate(path: Path) -> None:
    """What a node dying in the middle of a non-atomic write leaves."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def step_of(path: Path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def test_the_last_k_checkpoints_are_kept_newest_first(tmp_path):
    run = write_run(tmp_path / "run", steps=(4, 8, 12, 16), keep=3)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last-1.ckpt", "last-2.ckpt", "last.ckpt"]
    assert [step_of(run / "checkpoints" / n) for n in ("last.ckpt", "last-1.ckpt", "last-2.ckpt")] == [16, 12, 8]
    save_atomic(checkpoint(20), run / "checkpoints" / "last.ckpt", keep=1)  # a smaller k drops the older ones
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]


def test_a_full_disk_leaves_the_checkpoints_before_intact(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run")

    def half_then_full(obj, f):
        f.write(b"PK\x03\x04" + bytes(1000))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", half_then_full)
    with pytest.raises(CheckpointWriteError) as err:
        save_atomic(checkpoint(12), run / "checkpoints" / "last.ckpt", keep=2)
    assert "No space left on device" in str(err.value) and "--resume" in str(err.value)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last-1.ckpt", "last.ckpt"]
    assert (step_of(run / "checkpoints" / "last.ckpt"), step_of(run / "checkpoints" / "last-1.ckpt")) == (8, 4)


def test_a_torn_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    run = write_run(tmp_path / "run")
    truncate(run / "checkpoints" / "last.ckpt")
    warnings = []
    found = find_checkpoint(run, config_hash(CONFIG), resumable=True, set_aside=True, warn=warnings.append)
    assert found == run / "checkpoints" / "last-1.ckpt" and step_of(found) == 4
    assert len(warnings) == 1 and "last.ckpt: it does not load" in warnings[0] and "\n" not in warnings[0]
    # set aside, so that the next checkpoint does not rotate the good one out for the torn one
    assert (run / "checkpoints" / "last.ckpt.unusable").exists() and not (run / "checkpoints" / "last.ckpt").exists()


def test_the_newest_step_wins_whatever_the_file(tmp_path):
    run = write_run(tmp_path / "run")
    save_atomic(checkpoint(10), run / "hpc_ckpt_1.ckpt")  # what Lightning's SIGUSR1 handler would leave
    assert find_checkpoint(run, config_hash(CONFIG), resumable=True) == run / "hpc_ckpt_1.ckpt"
    assert find_checkpoint(tmp_path / "empty") is None


def test_a_checkpoint_of_another_config_or_without_training_state_is_skipped(tmp_path):
    run = write_run(tmp_path / "run")
    other = RunConfig(model=ModelConfig(vocab_size=64, d_model=32, n_layer=1, mixer=MixerConfig(n_head=2)))
    save_atomic(checkpoint(12, other), run / "checkpoints" / "last.ckpt", keep=2)
    warnings = []
    assert find_checkpoint(run, config_hash(CONFIG), warn=warnings.append) == run / "checkpoints" / "last-1.ckpt"
    assert "holds a model of another config than the run's" in warnings[0]
    weights_only = {k: v for k, v in checkpoint(16).items() if k != "loops"}
    save_atomic(weights_only, run / "checkpoints" / "last.ckpt", keep=1)
    with pytest.raises(NoCheckpointError, match="holds weights only, no training state"):
        find_checkpoint(run, config_hash(CONFIG), resumable=True)


def test_no_usable_checkpoint_is_one_line_naming_each_file_and_force(tmp_path):
    run = write_run(tmp_path / "run", steps=(4,))
    truncate(run / "checkpoints" / "last.ckpt")
    with pytest.raises(NoCheckpointError) as err:
        find_checkpoint(run, config_hash(CONFIG), resumable=True)
    message = str(err.value)
    assert "checkpoints/last.ckpt does not load" in message and "--force" in message and "\n" not in message


def test_generate_eval_and_export_fall_back_the_same_way(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    truncate(run / "checkpoints" / "last.ckpt")
    warnings = []
    model, config, file = load_checkpoint(run, warn=warnings.append)
    assert file == run / "checkpoints" / "last-1.ckpt" and config == CONFIG and len(warnings) == 1
    # a file named explicitly is that file alone
    with pytest.raises(ValueError, match="last.ckpt does not load .*give its run folder"):
        load_checkpoint(run / "checkpoints" / "last.ckpt")

    truncate(run / "checkpoints" / "last-1.ckpt")
    for command in (
        ["generate", str(run), "--prompt", "x"],
        ["export", str(run), str(tmp_path / "hf")],
        ["eval", str(run), "--tasks", "piqa"],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {run} has no usable checkpoint: checkpoints/last-1.ckpt does not load"), err
        assert "--force" in err and err.count("\n") == 1, err


def test_the_shared_loader_has_one_home_and_the_imports_run_one_way():
    def imports(module: str) -> set[str]:
        tree = ast.parse((REPO / module).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    assert not {m for m in imports("miras/generation.py") if m.startswith("miras.evaluation")}
    assert not {m for m in imports("miras/checkpoint.py") if m.startswith(("miras.evaluation", "miras.generation"))}
    assert "miras.checkpoint" in imports("miras/evaluation/adapter.py") & imports("miras/generation.py")
