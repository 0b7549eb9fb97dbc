"""A run folder's checkpoints: written atomically with the last k kept, and read back newest first with a fallback.

``checkpoints/last.ckpt`` is the newest checkpoint; ``last-1.ckpt`` ... ``last-<k-1>.ckpt`` are the ones it
replaced, each one interval older (``train.keep_checkpoints`` = k files in all). Lightning's SIGUSR1 handler may
add ``hpc_ckpt_<n>.ckpt`` to the run folder itself. Training resumes from, and ``generate``, ``eval`` and
``export`` load, the checkpoint of the highest step among them that loads and holds the run's config; every
other one is named in a one-line warning with the reason.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from miras.config import RunConfig, config_hash, from_dict

LAST = "last.ckpt"
UNUSABLE = ".unusable"
FORCE_HINT = "start the run over with `miras train ... --force`"


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, quota); the checkpoints written before are intact."""


class NoCheckpointError(ValueError):
    """A run folder holds checkpoint files but none of them loads; the message names each and why."""


def warn_line(message: str) -> None:
    """One ``warning:`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def rotated(path: Path, age: int) -> Path:
    """The file that ``path`` becomes after ``age`` newer checkpoints replaced it (``last-1.ckpt``, ...)."""
    return path if age == 0 else path.with_name(f"{path.stem}-{age}{path.suffix}")


def save_atomic(checkpoint: dict, path: str | Path, keep: int = 1) -> None:
    """Write ``checkpoint`` to ``path`` so that a kill at any moment leaves complete files only.

    The bytes go to a temporary file beside ``path`` and are synced; then the ``keep - 1`` files it replaces
    move one place down (``last.ckpt`` -> ``last-1.ckpt`` -> ...), and a rename puts the new file in place.
    A failed write (a full disk) removes the temporary file and raises :class:`CheckpointWriteError`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        tmp.unlink(missing_ok=True)
        # torch's zip writer turns the file's OSError into a RuntimeError of its own; the OSError says what happened
        cause = next((e for e in (err, err.__context__) if isinstance(e, OSError) and e.strerror), None)
        reason = cause.strerror if cause else _first_line(err)
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({reason}); the checkpoints written before are intact: free space "
            "and continue with --resume"
        ) from err
    for age in range(keep - 1, 0, -1):
        if rotated(path, age - 1).exists():
            os.replace(rotated(path, age - 1), rotated(path, age))
    for old in path.parent.glob(f"{path.stem}-*{path.suffix}"):
        age = old.stem.rpartition("-")[2]
        if age.isdigit() and int(age) >= keep:
            old.unlink(missing_ok=True)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems do not sync directories; the rename is still atomic there
        pass
    finally:
        os.close(fd)


def checkpoint_files(run: str | Path) -> list[Path]:
    """Every checkpoint file of run folder ``run``: ``checkpoints/last*.ckpt`` and Lightning's
    ``hpc_ckpt_*.ckpt``."""
    run = Path(run)
    return sorted([*(run / "checkpoints").glob("last*.ckpt"), *run.glob("hpc_ckpt_*.ckpt")])


def run_of(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint file (``<run>/checkpoints/*.ckpt`` or Lightning's ``<run>/hpc_ckpt_*.ckpt``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def remove_partial_writes(run: str | Path) -> None:
    """Delete the temporary files of checkpoint writes that a kill interrupted."""
    for tmp in Path(run, "checkpoints").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:160]


def probe(path: Path, expected_hash: str | None = None, *, resumable: bool = False) -> tuple[int, str | None]:
    """``(global step, None)`` when ``path`` is a usable checkpoint, else ``(-1, why not)``.

    The file is memory-mapped, so a probe reads its index and hyperparameters, not its tensors: a torn file (no
    zip directory at its end) fails here. ``resumable`` asks for the training state as well as the weights;
    ``expected_hash`` for the run's config."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torn, empty or foreign files fail in torch's zip reader or unpickler alike
        return -1, f"does not load ({_first_line(err)})"
    saved = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    if saved is None or "state_dict" not in checkpoint:
        return -1, "is not a miras training checkpoint (no hyper_parameters.config or state_dict)"
    if resumable and "loops" not in checkpoint:
        return -1, "holds weights only, no training state to resume from"
    try:
        chash = config_hash(from_dict(RunConfig, saved))
    except (TypeError, ValueError) as err:
        return -1, f"its saved config does not load ({_first_line(err)})"
    if expected_hash is not None and chash != expected_hash:
        return -1, f"holds a model of another config than the run's ({chash}, not {expected_hash})"
    return int(checkpoint.get("global_step", -1)), None


def find_checkpoint(
    run: str | Path,
    config_hash: str | None = None,
    *,
    resumable: bool = False,
    set_aside: bool = False,
    warn: Callable[[str], None] = warn_line,
) -> Path | None:
    """The newest usable checkpoint of run folder ``run`` (highest step, then latest write), or None when it has
    no checkpoint file at all.

    Each unusable file is named in one ``warn`` line with the reason; with ``set_aside`` (a resuming trainer, which
    holds the run's lock) it is renamed to ``<name>.unusable`` as well, so that the next checkpoints rotate only
    good files. Raises :class:`NoCheckpointError` (one line naming each file and why) when none is usable."""
    run = Path(run)
    files = checkpoint_files(run)
    if not files:
        return None
    probes = [(path, *probe(path, config_hash, resumable=resumable)) for path in files]
    usable = [(step, path.stat().st_mtime, path) for path, step, reason in probes if reason is None]
    bad = [(path, reason) for path, _, reason in probes if reason is not None]
    if not usable:
        details = "; ".join(f"{path.relative_to(run)} {reason}" for path, reason in bad)
        raise NoCheckpointError(f"{run} has no usable checkpoint: {details}; {FORCE_HINT}")
    newest = max(usable)[2]
    for path, reason in bad:
        aside = ""
        if set_aside:
            os.replace(path, path.with_name(path.name + UNUSABLE))
            aside = f", renamed to {path.name + UNUSABLE}"
        warn(f"skipped checkpoint {path}: it {reason}{aside}; using {newest.relative_to(run)}")
    return newest


def load_checkpoint(path: str | Path, warn: Callable[[str], None] = warn_line):
    """The model of a training run, its config and the checkpoint file it came from.

    ``path`` is a run folder (its newest checkpoint that loads and matches its ``config.json``, see
    :func:`find_checkpoint`) or one checkpoint file (that file alone). Errors are one line naming the file."""
    from miras.models import LanguageModel

    file = Path(path)
    if file.is_dir():
        saved = file / "config.json"
        expected = json.loads(saved.read_text()).get("config_hash") if saved.is_file() else None
        found = find_checkpoint(file, expected, warn=warn)
        if found is None:
            file = file / "checkpoints" / LAST
        else:
            file = found
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {file}; expected a run folder or its checkpoints/{LAST}")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # as in probe: any failure of the reader means the file is unusable
        raise ValueError(
            f"{file} does not load ({_first_line(err)}); give its run folder to fall back to an older checkpoint"
        ) from err
    saved = checkpoint.get("hyper_parameters", {}).get("config") if isinstance(checkpoint, dict) else None
    if saved is None or "state_dict" not in checkpoint:
        raise ValueError(f"{file} is not a miras training checkpoint (no hyper_parameters.config or state_dict)")
    try:
        config = from_dict(RunConfig, saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{file}: its saved config does not load: {err}") from err
    model = LanguageModel(config.model)
    weights = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
    check_weights(file, model.state_dict(), weights)
    model.load_state_dict(weights)
    return model.eval(), config, file


def check_weights(file: Path, expected: dict, weights: dict) -> None:
    """One-line ValueError when ``weights`` are not a state dict of the model ``expected`` comes from."""
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    reshaped = sorted(
        f"{k} {tuple(weights[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected.keys() & weights.keys()
        if weights[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''} ({len(names)})"
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
        if names
    ]
    if problems:
        raise ValueError(f"{file}: weights do not match the model its saved config describes; {'; '.join(problems)}")


def tokenizer_spec(config: RunConfig) -> str:
    """The tokenizer a run trained with: ``data.tokenizer``, the one its token shards record, or the offline
    corpus tokenizer."""
    if config.data.tokenizer:
        return config.data.tokenizer
    if config.data.dataset == "memmap":
        from data.memmap import read_manifest

        return read_manifest(config.data.path)["tokenizer"]["spec"]
    from data.corpus import DEFAULT_OUT

    return str(DEFAULT_OUT / "tokenizer.json")
