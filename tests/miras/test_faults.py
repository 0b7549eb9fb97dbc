"""What a cluster does to a training run, and what the run folder survives (README: "What survives what").

The unmarked tests train in this process for a second or two; the ``slow`` ones (``make test-faults``) run
``python -m miras train`` as a separate process and kill it, stop it or fill its disk."""

import dataclasses
import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest

import miras.checkpoint as ckpt
import miras.train
from miras.checkpoint import CheckpointWriteError, NoCheckpointError
from miras.cli import main
from miras.experiment import load_experiment, run_dir
from miras.runlock import LOCK_NAME, RunLock, RunLocked
from miras.train import offline_corpus_dir, train
from tests.miras.test_lit import META, Interrupt, KillAt, small_run

REPO = Path(__file__).resolve().parents[2]
TABLE2 = REPO / "experiments" / "miras" / "table2.py"
METRICS = ("train/loss", "val/loss", "val/ppl")


def same_end(a: dict, b: dict) -> None:
    assert a["steps"] == b["steps"]
    for key in METRICS:
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-5), key


def short_run(corpus):
    """8 steps, a checkpoint every 2."""
    config = small_run(corpus, steps=8)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, ckpt_every=2))


@pytest.fixture(scope="module")
def whole(tiny_corpus, tmp_path_factory):
    """The uninterrupted run every fault is compared with."""
    out = tmp_path_factory.mktemp("whole") / "t" / "r" / "seed0"
    return train(short_run(tiny_corpus), out, META, progress=False, accelerator="cpu")


def run(config, out, **kwargs) -> dict:
    return train(config, out, META, progress=False, accelerator="cpu", **kwargs)


class LaunchAgain(L.Callback):
    """A second launch on the same folder while the first one trains (a second terminal, a requeued job)."""

    def __init__(self, launch):
        self.launch, self.errors = launch, []

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == 5 and not self.errors:
            for kwargs in ({}, {"resume": True}, {"force": True}):
                with pytest.raises(RunLocked) as err:
                    self.launch(**kwargs)
                self.errors.append(str(err.value))


def test_a_second_launch_refuses_and_the_first_finishes_untouched(tiny_corpus, tmp_path, whole):
    config, out = short_run(tiny_corpus), tmp_path / "t" / "r" / "seed0"
    again = LaunchAgain(lambda **kwargs: run(config, out, **kwargs))
    first = run(config, out, callbacks=[again])
    assert len(again.errors) == 3 and all("is being trained by pid" in e and "\n" not in e for e in again.errors)
    same_end(first, whole)
    assert json.loads((out / "summary.json").read_text()) == first and not (out / LOCK_NAME).exists()


def test_a_torn_newest_checkpoint_resumes_from_the_one_before_to_the_same_end(tiny_corpus, tmp_path, whole, capsys):
    config, out = short_run(tiny_corpus), tmp_path / "t" / "r" / "seed0"
    with pytest.raises(Interrupt):
        run(config, out, callbacks=[KillAt(7)])  # checkpoints at steps 2, 4 and 6: last.ckpt and last-1.ckpt kept
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    resumed = run(config, out, resume=True)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoints/last.ckpt: it does not load" in warnings[0], warnings
    assert "using checkpoints/last-1.ckpt" in warnings[0]
    same_end(resumed, whole)


def test_a_full_disk_at_a_checkpoint_loses_nothing_written_before(tiny_corpus, tmp_path, whole, monkeypatch):
    config, out = short_run(tiny_corpus), tmp_path / "t" / "r" / "seed0"
    save, calls = ckpt.torch.save, []

    def full_at_the_second(obj, f):
        calls.append(1)
        if len(calls) == 2:
            f.write(bytes(4096))
            raise OSError(errno.ENOSPC, "No space left on device")
        save(obj, f)

    monkeypatch.setattr(ckpt.torch, "save", full_at_the_second)
    with pytest.raises(CheckpointWriteError, match="No space left on device.*continue with --resume"):
        run(config, out)
    monkeypatch.setattr(ckpt.torch, "save", save)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt"]  # step 2's, no partial file
    assert not (out / LOCK_NAME).exists()
    same_end(run(config, out, resume=True), whole)


def test_a_folder_without_a_usable_checkpoint_says_so_in_one_line(tiny_corpus, tmp_path, capsys):
    out = run_dir(tmp_path, "smoke", load_experiment(TABLE2), load_experiment(TABLE2).run("transformer-340m"), 0)
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(NoCheckpointError, match="--force"):
        run(short_run(tiny_corpus), out, resume=True)
    args = ["train", str(TABLE2), "--run", "transformer-340m", "--scale", "smoke", "--runs-dir", str(tmp_path)]
    assert main([*args, "--seed", "0", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out} has no usable checkpoint: checkpoints/last.ckpt does not load"), err
    assert "--force" in err and err.count("\n") == 1


@pytest.mark.parametrize("order", [1, -1])
def test_bad_overrides_fail_in_one_line_naming_the_field_in_any_order(tmp_path, capsys, order):
    args = ["dry-run", str(TABLE2), "--only", "transformer-340m", "--scale", "smoke"]
    for sets, message in (
        (["model.n_layer=abc", "model.d_model=64"], "model.n_layer='abc' is invalid; allowed values: an integer"),
        (["optim.lr=nan", "model.d_model=64"], "optim.lr='nan' is invalid; allowed values: a finite number"),
    ):
        assert main([*args, *(f"--set={s}" for s in sets[::order])]) == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    sets = ["data.dataset=memmap", f"data.path={tmp_path}"][::order]
    assert main([*args, *(f"--set={s}" for s in sets)]) == 0
    assert "transformer-340m" in capsys.readouterr().out


def test_a_sweep_skips_a_run_that_another_trainer_holds(tmp_path, capsys):
    table = load_experiment(TABLE2)
    out = run_dir(tmp_path, "smoke", table, table.run("transformer-340m"), 0)
    args = ["train", str(TABLE2), "--run", "transformer-340m", "--scale", "smoke", "--runs-dir", str(tmp_path)]
    with RunLock(out):
        assert main([*args, "--seed", "0", "--skip-done"]) == 0
        assert "skip transformer-340m seed0: " in capsys.readouterr().out
        assert main([*args, "--seed", "0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out} is being trained by pid {os.getpid()}") and err.count("\n") == 1


def test_only_the_launching_rank_takes_the_lock(tiny_corpus, tmp_path, monkeypatch):
    # the other DDP ranks run the same train() on the same folder while rank 0 holds its lock
    out = tmp_path / "t" / "r" / "seed0"
    monkeypatch.setattr(miras.train, "launcher_rank", lambda: 1)
    with RunLock(out):
        assert run(small_run(tiny_corpus, steps=2), out)["steps"] == 2


# Separate processes: `python -m miras train` at the smoke scale on the offline corpus, killed, stopped or
# short of disk, then resumed; each ends as the uninterrupted run does.

STEPS = 48
SETS = [f"train.tokens={256 * STEPS}", "train.val_every=16", "train.ckpt_every=4", "train.log_every=4"]


def cli(runs: Path, *extra: str) -> list[str]:
    args = ["train", str(TABLE2), "--run", "transformer-340m", "--scale", "smoke", "--seed", "0"]
    return [sys.executable, "-m", "miras", *args, "--runs-dir", str(runs), *(f"--set={s}" for s in SETS), *extra]


def launch(runs: Path, *extra: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        cli(runs, *extra), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def folder(runs: Path) -> Path:
    table = load_experiment(TABLE2)
    return run_dir(runs, "smoke", table, table.run("transformer-340m"), 0)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    if not (offline_corpus_dir() / "manifest.json").exists():
        pytest.skip("offline corpus not prepared (run `make install`)")
    runs = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(cli(runs), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads((folder(runs) / "summary.json").read_text())


def resume_to_the_end(runs: Path, uninterrupted: dict) -> str:
    done = subprocess.run(cli(runs, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    same_end(json.loads((folder(runs) / "summary.json").read_text()), uninterrupted)
    assert not (folder(runs) / LOCK_NAME).exists()
    return done.stderr


@pytest.mark.slow
def test_two_launches_on_one_folder(tmp_path, uninterrupted):
    first = launch(tmp_path)
    wait_for(lambda: (folder(tmp_path) / "checkpoints" / "last.ckpt").exists(), first)
    # paused, so that it is surely mid-run while the second one starts (and with its lease no longer renewed)
    first.send_signal(signal.SIGSTOP)
    try:
        for extra in ((), ("--resume",), ("--force",)):
            second = subprocess.run(cli(tmp_path, *extra), cwd=REPO, capture_output=True, text=True)
            assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
            assert second.stderr.startswith(f"error: {folder(tmp_path)} is being trained by pid {first.pid} on host")
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    same_end(json.loads((folder(tmp_path) / "summary.json").read_text()), uninterrupted)


@pytest.mark.slow
def test_kill_9_leaves_a_stale_lock_that_resume_takes_over(tmp_path, uninterrupted):
    killed = launch(tmp_path)
    wait_for(lambda: (folder(tmp_path) / "checkpoints" / "last-1.ckpt").exists(), killed)
    killed.kill()
    killed.communicate()
    assert json.loads((folder(tmp_path) / LOCK_NAME).read_text())["pid"] == killed.pid
    warnings = [line for line in resume_to_the_end(tmp_path, uninterrupted).splitlines() if "warning:" in line]
    assert len(warnings) == 1 and f"took over the lock of pid {killed.pid}" in warnings[0], warnings
    assert "its process is gone" in warnings[0]


@pytest.mark.slow
def test_sigterm_stops_at_a_step_and_resume_ends_the_same(tmp_path, uninterrupted):
    stopped = launch(tmp_path)
    wait_for(lambda: (folder(tmp_path) / "checkpoints" / "last-1.ckpt").exists(), stopped)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, err
    assert f"train: {folder(tmp_path)} stopped by SIGTERM; continue it with --resume" in err
    assert not (folder(tmp_path) / LOCK_NAME).exists()
    resume_to_the_end(tmp_path, uninterrupted)


@pytest.mark.slow
def test_a_full_disk_fails_in_one_line_and_leaves_nothing_torn(tmp_path, uninterrupted):
    # a file size limit below one checkpoint (3.9 MB) and above everything else a run writes: each write of a
    # checkpoint fails as on a full disk
    limit = 1 << 20
    full = launch(tmp_path, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    _, err = full.communicate(timeout=300)
    assert full.returncode == 2, err
    last = folder(tmp_path) / "checkpoints" / "last.ckpt"
    assert err.splitlines()[-1] == (
        f"error: could not write checkpoint {last} (File too large); the checkpoints written before are intact: "
        "free space and continue with --resume"
    )
    assert not list((folder(tmp_path) / "checkpoints").iterdir()) and not (folder(tmp_path) / LOCK_NAME).exists()
    resume_to_the_end(tmp_path, uninterrupted)
