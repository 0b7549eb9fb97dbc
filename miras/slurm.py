"""SLURM submission: one sbatch script per run and seed, sized from the run's parameter count and tokens.

``submit`` renders ``slurm/job.sbatch.tmpl`` into ``<run folder>/slurm/job.sbatch`` and hands it to ``sbatch``.
The job runs ``srun python -m miras train ... --resume`` with one task per GPU (one per node on CPU); Lightning's
``SLURMEnvironment`` takes the ranks from srun. 90 s before the time limit SLURM sends ``USR1`` to the batch
shell, which requeues the job; the requeued job takes over the run folder's lock and resumes from its newest
checkpoint that loads, ``last.ckpt`` or the one before (``slurm/README.md`` says why Lightning's own SIGUSR1
requeue is not used). Cluster settings come from the untracked ``slurm/cluster.toml`` (see
``slurm/cluster.example.toml``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import string
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from miras.config import ConfigError, RunConfig, config_hash
from miras.experiment import load_experiment
from miras.experiment import run_dir as run_folder

REPO = Path(__file__).resolve().parent.parent
CLUSTER_FILE = REPO / "slurm" / "cluster.toml"
TEMPLATE = REPO / "slurm" / "job.sbatch.tmpl"

GPU_FLOPS = 150e12
"""Sustained training FLOP/s of one GPU: bf16 on an H100-class GPU at ~15% of its 989 TFLOP/s dense peak. Low on
purpose: the recurrent mixers run far below attention's utilisation without fused kernels."""
CPU_FLOPS = 2e10
"""Sustained fp32 training FLOP/s of one CPU task (``tiny`` and ``smoke`` scales)."""
OVERHEAD = 1.2
"""Wall time over pure compute: validation, checkpoints, start-up, restarts."""
FSDP_PARAMS = 1.5e9
"""From this many parameters on, shard with FSDP; below, replicate with DDP."""
CPU_SCALES = ("tiny", "smoke")
SCALE_GPUS = {"small": 1}
"""GPUs per node of scales declared for one GPU (``miras.scales``); other GPU scales use whole nodes."""
MIN_MINUTES = 10
MAX_NODES = 64
# expanded by the job's shell, not quoted: Lightning checks num_nodes against the allocation
_NNODES = '"$SLURM_NNODES"'

_KINDS = {"gpus_per_node": int, "cpus_per_task": int, "max_hours": (int, float), "sbatch": list, "setup": list}
_KIND_NAMES = {str: "a string", int: "an integer", (int, float): "a number", list: "a list of strings"}


@dataclass(frozen=True)
class ClusterSettings:
    """What differs between clusters; ``slurm/cluster.toml`` overrides any of these defaults."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_per_node: int = 8
    """GPUs of one node; 0 for a CPU-only cluster (then only ``tiny`` and ``smoke`` can be submitted)."""
    cpus_per_task: int = 8
    """CPU cores per task (one task per GPU)."""
    mem: str | None = None
    """``--mem`` per node, e.g. ``"0"`` (all of it) or ``"480G"``; None: the cluster's default."""
    max_hours: float = 48.0
    """Longest allocation to ask for; longer runs continue in requeued allocations."""
    sbatch: tuple[str, ...] = ()
    """Extra sbatch options, one per entry, e.g. ``"--exclusive"``."""
    setup: tuple[str, ...] = ("source .venv/bin/activate",)
    """Shell lines run in the repository before ``srun`` (modules, the virtual environment)."""

    @classmethod
    def load(cls, path: str | Path = CLUSTER_FILE) -> ClusterSettings:
        """Settings from a TOML file of top-level keys; the defaults when the file does not exist."""
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib

        path = Path(path)
        if not path.exists():
            return cls()
        data = tomllib.loads(path.read_text())
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key, value in data.items():
            if key not in allowed:
                raise ValueError(f"{path}: unknown key {key!r}; allowed keys: {', '.join(allowed)}")
            kind = _KINDS.get(key, str)
            valid = isinstance(value, kind) and not isinstance(value, bool)
            if not valid or (kind is list and not all(isinstance(v, str) for v in value)):
                raise ValueError(f"{path}: {key}={value!r} is invalid; allowed values: {_KIND_NAMES[kind]}")
            if kind is list:
                data[key] = tuple(value)
        return cls(**data)


@dataclass(frozen=True)
class Resources:
    """What one job asks for."""

    nodes: int
    gpus_per_node: int
    """0: CPU tasks, one per node."""
    time_minutes: int
    """The job's time limit (``--time``) in minutes."""
    strategy: str
    """``ddp`` or ``fsdp``."""
    params: int
    """Parameters of the model."""
    hours: float
    """Estimated wall hours of the whole run on these nodes; above the time limit it spans several allocations."""

    @property
    def tasks_per_node(self) -> int:
        return self.gpus_per_node or 1

    @property
    def accelerator(self) -> str:
        return "gpu" if self.gpus_per_node else "cpu"

    def describe(self) -> str:
        unit = f"{self.gpus_per_node} GPU" if self.gpus_per_node else "1 CPU task"
        allocations = max(1, math.ceil(self.hours * 60 / self.time_minutes))
        return (
            f"{self.params / 1e6:.0f}M params, {self.nodes} node(s) x {unit}, {self.strategy}, "
            f"~{self.hours:.1f} h in {allocations} allocation(s) of {_slurm_time(self.time_minutes)}"
        )


def count_params(config: RunConfig) -> int:
    """Parameters of ``config.model`` (tied weights once), counted on the meta device."""
    import torch

    from miras.models import LanguageModel, count_parameters

    with torch.device("meta"):
        return count_parameters(LanguageModel(config.model))


def _valid_world(config: RunConfig, world: int) -> bool:
    try:
        config.accumulation(world)
    except ConfigError:
        return False
    return True


def resources(config: RunConfig, scale: str, cluster: ClusterSettings, nodes: int | None = None) -> Resources:
    """Nodes, GPUs, wall time and strategy of a run, from its parameter count ``N`` and ``train.tokens`` ``D``.

    Rule: the run costs ``6 * N * D`` FLOPs; one GPU sustains :data:`GPU_FLOPS` (one CPU task :data:`CPU_FLOPS`);
    wall hours = FLOPs * :data:`OVERHEAD` / (throughput * tasks). ``tiny`` and ``smoke`` run one CPU task per node
    on 1 node. GPU scales use ``cluster.gpus_per_node`` GPUs per node (``small``: 1 GPU) on the fewest nodes whose
    hours fit ``cluster.max_hours``, among node counts whose world size divides the run's micro-batches per step
    (``RunConfig.accumulation``; fewer GPUs per node when even one node's do not); when none fits, the most such
    nodes, and the run continues over several requeued allocations. ``nodes`` overrides the count. The time limit
    is the estimate, at least ``MIN_MINUTES`` and at most ``max_hours``. Strategy: DDP below :data:`FSDP_PARAMS`
    parameters, FSDP from there on.
    """
    params = count_params(config)
    flops = 6 * params * config.train.tokens
    if scale in CPU_SCALES:
        gpus, rate = 0, CPU_FLOPS
    elif cluster.gpus_per_node < 1:
        raise ValueError(f"scale {scale!r} trains on GPUs but the cluster has gpus_per_node=0; use tiny or smoke")
    else:
        gpus, rate = min(cluster.gpus_per_node, SCALE_GPUS.get(scale, cluster.gpus_per_node)), GPU_FLOPS
        # a step of one batch per device (the MQAR grids) cannot be split: fewer GPUs then
        while gpus > 1 and not _valid_world(config, gpus):
            gpus -= 1
    per_task = max(gpus, 1)

    def hours(n: int) -> float:
        return flops * OVERHEAD / (rate * n * per_task) / 3600

    if nodes is None:
        valid = [n for n in range(1, MAX_NODES + 1) if _valid_world(config, n * per_task)]
        if not valid:
            config.accumulation(per_task)  # raises with the allowed values
        fitting = [n for n in valid if hours(n) <= cluster.max_hours]
        nodes = 1 if scale in CPU_SCALES else fitting[0] if fitting else valid[-1]
    config.accumulation(nodes * per_task)
    minutes = min(max(MIN_MINUTES, math.ceil(hours(nodes) * 60)), math.ceil(cluster.max_hours * 60))
    return Resources(nodes, gpus, minutes, "ddp" if params < FSDP_PARAMS else "fsdp", params, hours(nodes))


def _slurm_time(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    return f"{days}-{rest // 60:02d}:{rest % 60:02d}:00"


def render_script(
    *,
    experiment: Path,
    run: str,
    seed: int,
    scale: str,
    run_dir: Path,
    runs_dir: Path,
    job_name: str,
    resources: Resources,
    cluster: ClusterSettings,
    extra_sets: Sequence[str] = (),
) -> str:
    """The sbatch script of one run and seed; paths absolute (the job runs in the repository root, and sbatch
    resolves ``--output`` against the folder it was called from)."""
    if any(c.isspace() for c in str(run_dir)):
        raise ValueError(f"run folder {run_dir} is invalid; allowed values: a path without whitespace (sbatch options)")
    r = resources
    options = [f"--gres=gpu:{r.gpus_per_node}"] if r.gpus_per_node else []
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(cluster, key) is not None:
            options.append(f"--{key}={getattr(cluster, key)}")
    options += [line.removeprefix("#SBATCH").strip() for line in cluster.sbatch]
    command = ["python", "-m", "miras", "train", str(experiment), "--run", run, "--scale", scale, "--seed", str(seed)]
    command += ["--runs-dir", str(runs_dir), "--num-nodes", _NNODES, "--devices", str(r.tasks_per_node)]
    command += ["--accelerator", r.accelerator, "--resume"]
    if r.strategy != "ddp":
        command += ["--strategy", r.strategy]
    for assignment in extra_sets:
        command += ["--set", assignment]
    return string.Template(TEMPLATE.read_text()).substitute(
        job_name=job_name,
        nodes=r.nodes,
        tasks_per_node=r.tasks_per_node,
        cpus_per_task=cluster.cpus_per_task,
        time=_slurm_time(r.time_minutes),
        log_dir=run_dir / "slurm",
        tmp_dir=shlex.quote(str(run_dir / "slurm" / "tmp")),
        options="".join(f"#SBATCH {o}\n" for o in options),
        repo=shlex.quote(str(REPO)),
        setup="\n".join(cluster.setup),
        command=" ".join(a if a == _NNODES else shlex.quote(a) for a in command),
    )


@dataclass(frozen=True)
class Submission:
    """One rendered (and, unless a dry run, submitted) job."""

    run: str
    seed: int
    script_path: Path
    script: str
    resources: Resources
    job_id: str | None


def submit(
    experiment: str | Path,
    only: Sequence[str] | None = None,
    scale: str = "paper",
    dry_run: bool = False,
    cluster: ClusterSettings | None = None,
    runs_dir: str | Path = REPO / "runs",
    nodes: int | None = None,
    extra_sets: Sequence[str] = (),
) -> list[Submission]:
    """Render and submit one job per available run (matching the globs ``only``) and seed of an experiment.

    Each script goes to ``<runs_dir>/<scale>/<paper>/<table>/<run>/seed<k>/slurm/job.sbatch`` and is submitted with
    ``sbatch --parsable``; a dry run prints the scripts and writes and submits nothing. Runs whose
    ``summary.json`` holds the same config hash are skipped. ``cluster`` defaults to ``slurm/cluster.toml``;
    ``extra_sets`` are ``--set`` overrides passed on to ``miras train``. Returns the jobs with their ids.
    """
    cluster = cluster or ClusterSettings.load()
    experiment, runs_dir = Path(experiment).resolve(), Path(runs_dir).resolve()
    table = load_experiment(experiment).at(scale)
    if table.trained_in:
        raise ValueError(f"{table.key} evaluates the runs of {table.trained_in}; submit those instead")
    jobs = []
    for run in table.select(list(only) if only else None):
        if reason := run.unavailable():
            print(f"skip {run.name}: unavailable ({reason})")
            continue
        for seed in run.seeds:
            config = run.config(scale, tuple(extra_sets), seed=seed)
            folder = run_folder(runs_dir, scale, table, run, seed)
            summary = folder / "summary.json"
            if summary.exists() and json.loads(summary.read_text()).get("config_hash") == config_hash(config):
                print(f"skip {run.name} seed{seed}: done ({summary})")
                continue
            res = resources(config, scale, cluster, nodes)
            script = render_script(
                experiment=experiment,
                run=run.name,
                seed=seed,
                scale=scale,
                run_dir=folder,
                runs_dir=runs_dir,
                job_name=f"{table.paper}-{table.runs_key}-{run.name}-seed{seed}",
                resources=res,
                cluster=cluster,
                extra_sets=extra_sets,
            )
            path = folder / "slurm" / "job.sbatch"
            job_id = None
            if dry_run:
                print(f"# {path}: {res.describe()}\n{script}")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(script)
                job_id = _sbatch(path)
                print(f"submitted {run.name} seed{seed}: job {job_id}, {res.describe()} -> {folder}")
            jobs.append(Submission(run.name, seed, path, script, res, job_id))
    return jobs


def _sbatch(script: Path) -> str:
    try:
        done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as err:
        raise RuntimeError("sbatch not found: submit from a SLURM login node") from err
    if done.returncode:
        raise RuntimeError(f"sbatch {script} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().split(";")[0]
