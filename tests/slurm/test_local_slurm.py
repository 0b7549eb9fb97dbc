"""``miras.slurm``: rendered scripts, and real 2-node jobs on a local SLURM cluster (``local_cluster.py``)."""

import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from miras.experiment import load_experiment
from miras.slurm import ClusterSettings, resources, submit

REPO = Path(__file__).resolve().parents[2]
TABLE2 = REPO / "experiments" / "miras" / "table2.py"
TABLE2_RUN = load_experiment(TABLE2).run("transformer-340m")
# two ranks of 2 x 64 tokens fill the smoke scale's 256-token step
SMOKE_DDP = ("data.batch_size=2",)


def sbatch_option(script: str, name: str) -> str | None:
    found = re.search(rf"^#SBATCH --{name}(?:=(.*))?$", script, flags=re.M)
    return None if found is None else found.group(1) or ""


def cpu_cluster() -> ClusterSettings:
    """The local cluster: CPU nodes, and this interpreter's environment in the job."""
    python_bin = shlex.quote(str(Path(sys.executable).parent))
    return ClusterSettings(
        gpus_per_node=0, cpus_per_task=1, setup=(f"export PATH={python_bin}:$PATH", "export OMP_NUM_THREADS=1")
    )


def test_dry_run_sizes_paper_runs_from_params_and_tokens(tmp_path, capsys):
    jobs = submit(
        TABLE2,
        only=["transformer-340m", "transformer-1.3b"],
        scale="paper",
        dry_run=True,
        cluster=ClusterSettings(),
        runs_dir=tmp_path,
    )
    by_run = {job.run: job for job in jobs}
    small, large = by_run["transformer-340m"], by_run["transformer-1.3b"]
    assert sbatch_option(small.script, "nodes") == "1"
    # 6 * 1.3e9 params * 100e9 tokens does not fit 48 h on one node of 8 GPUs
    assert int(sbatch_option(large.script, "nodes")) > 1
    assert large.resources.time_minutes == 48 * 60 and large.resources.hours > 48
    for job in jobs:
        script = job.script
        assert sbatch_option(script, "gres") == "gpu:8"
        assert sbatch_option(script, "ntasks-per-node") == "8"
        assert sbatch_option(script, "signal") == "B:USR1@90"
        assert sbatch_option(script, "requeue") == "" and sbatch_option(script, "open-mode") == "append"
        assert sbatch_option(script, "output").startswith(str(tmp_path / "paper" / "miras" / "table2" / job.run))
        assert re.search(r"^srun .*\\\n\s+python -m miras train \S+table2\.py --run " + job.run, script, flags=re.M)
        assert '--num-nodes "$SLURM_NNODES" --devices 8 --accelerator gpu --resume' in script
        assert job.resources.strategy == "ddp" and job.job_id is None
        assert subprocess.run(["bash", "-n"], input=script, text=True, timeout=10).returncode == 0
    assert capsys.readouterr().out.count("#!/bin/bash") == len(jobs)  # one script per run and seed
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_cpu_scales_take_one_cpu_node_unless_asked():
    config = TABLE2_RUN.config("smoke")
    assert resources(config, "smoke", ClusterSettings()) == resources(config, "smoke", cpu_cluster())
    res = resources(config, "smoke", ClusterSettings())
    assert (res.nodes, res.gpus_per_node, res.accelerator, res.time_minutes) == (1, 0, "cpu", 10)
    assert resources(TABLE2_RUN.config("smoke", SMOKE_DDP), "smoke", cpu_cluster(), nodes=2).nodes == 2
    with pytest.raises(ValueError, match="batch_tokens"):
        resources(config, "smoke", cpu_cluster(), nodes=2)
    with pytest.raises(ValueError, match="gpus_per_node=0"):
        resources(TABLE2_RUN.config("paper"), "paper", cpu_cluster())


def test_cluster_settings_file(tmp_path):
    assert ClusterSettings.load(tmp_path / "missing.toml") == ClusterSettings()
    assert ClusterSettings.load(REPO / "slurm" / "cluster.example.toml") == ClusterSettings()
    path = tmp_path / "cluster.toml"
    path.write_text('partition = "gpu"\nsbatch = ["--exclusive"]\nsetup = ["module load cuda"]\n')
    settings = ClusterSettings.load(path)
    assert (settings.partition, settings.sbatch, settings.setup) == ("gpu", ("--exclusive",), ("module load cuda",))
    path.write_text('partion = "gpu"\n')
    with pytest.raises(ValueError, match=r"unknown key 'partion'; allowed keys: partition, account"):
        ClusterSettings.load(path)
    path.write_text('gpus_per_node = "8"\n')
    with pytest.raises(ValueError, match="gpus_per_node='8' is invalid; allowed values: an integer"):
        ClusterSettings.load(path)


def _finished(cluster, job_id: str, folder: Path, timeout: float) -> dict:
    info = cluster.wait_job(job_id, timeout)
    logs = "".join(p.read_text() for p in sorted(folder.glob(f"{job_id}.*")))
    assert info["JobState"] == "COMPLETED", f"job {job_id}: {info.get('JobState')} {info.get('ExitCode')}\n{logs}"
    return info


@pytest.mark.slurm
def test_two_node_ddp_job_trains_with_synchronised_weights(local_cluster, tmp_path):
    # the weight check needs a callback on every rank, so it runs a script that calls miras.train.train under srun
    weights = tmp_path / "weights"
    weights.mkdir()
    wrapped = f"export MASTER_ADDR=127.0.0.1; srun {shlex.quote(sys.executable)} tests/slurm/ddp_weights.py {weights}"
    options = ["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", f"--chdir={REPO}", f"--output={weights}/%j.out"]
    weights_job = local_cluster.run("sbatch", "--parsable", *options, "--wrap", wrapped).stdout.strip()
    # transformer-1.3b: one seed, so one job (at the smoke scale every row is the same small model)
    (job,) = submit(
        TABLE2,
        only=["transformer-1.3b"],
        scale="smoke",
        cluster=cpu_cluster(),
        runs_dir=tmp_path / "runs",
        nodes=2,
        extra_sets=SMOKE_DDP,
    )
    assert job.script_path.read_text() == job.script and sbatch_option(job.script, "gres") is None
    _finished(local_cluster, job.job_id, job.script_path.parent, 150)
    summary = json.loads((job.script_path.parent.parent / "summary.json").read_text())
    assert (summary["world_size"], summary["steps"], summary["run"]) == (2, 8, "transformer-1.3b")

    _finished(local_cluster, weights_job, weights, 150)
    rank0, rank1 = (json.loads((weights / f"rank{k}.json").read_text()) for k in (0, 1))
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["first_batch"] != rank1["first_batch"], "each rank reads its own shard of the data"
    assert rank0["initial"] == rank1["initial"]
    assert rank0["final"] == rank1["final"] != rank0["initial"]


@pytest.mark.slurm
def test_requeued_job_resumes_and_ends_like_an_uninterrupted_one(local_cluster, tmp_path):
    steps = 80
    sets = (
        *SMOKE_DDP,
        f"train.tokens={256 * steps}",
        "train.val_every=40",
        "train.ckpt_every=10",
        "train.log_every=10",
    )
    requeued, whole = jobs = [
        submit(
            TABLE2,
            ["transformer-1.3b"],
            "smoke",
            cluster=cpu_cluster(),
            runs_dir=tmp_path / name,
            nodes=2,
            extra_sets=sets,
        )[0]
        for name in ("requeued", "whole")
    ]
    folder = requeued.script_path.parent.parent
    deadline = time.monotonic() + 150
    while not (folder / "checkpoints" / "last.ckpt").exists():
        assert time.monotonic() < deadline, "no checkpoint after 150 s"
        time.sleep(0.2)
    # what SLURM sends 90 s before the time limit (--signal=B:USR1@90)
    local_cluster.run("scancel", "--batch", "--signal=USR1", requeued.job_id)

    info = _finished(local_cluster, requeued.job_id, requeued.script_path.parent, 240)
    assert int(info["Restarts"]) == 1
    _finished(local_cluster, whole.job_id, whole.script_path.parent, 60)
    out = (requeued.script_path.parent / f"{requeued.job_id}.out").read_text()
    first, _, second = out.partition(f"job {requeued.job_id} restart 1")
    assert "time limit near: requeue" in first and f"step {steps}/{steps}" not in first
    err = (requeued.script_path.parent / f"{requeued.job_id}.err").read_text()
    assert f"Restored all states from the checkpoint at {folder / 'checkpoints' / 'last.ckpt'}" in err

    a, b = (json.loads((job.script_path.parent.parent / "summary.json").read_text()) for job in jobs)
    assert a["steps"] == b["steps"] == steps and a["world_size"] == b["world_size"] == 2
    for key in ("val/loss", "train/loss"):
        assert a["metrics"][key] == pytest.approx(b["metrics"][key], rel=1e-6), key
    assert not list(folder.glob("hpc_ckpt_*")) and not list(REPO.glob("hpc_ckpt_*"))
    assert not (folder / "train.lock").exists()  # the requeued job took the run's lock over and let go of it
