"""``python -m miras {list,train,dry-run,eval,generate,export,submit}``: experiments in, run folders out
(``python -m reports`` renders them)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from miras.checkpoint import CheckpointWriteError, checkpoint_files
from miras.config import ConfigError, config_hash
from miras.experiment import Table, experiment_files, load_experiment, run_dir
from miras.runlock import RunLocked
from miras.scales import SCALES

REPO = Path(__file__).resolve().parent.parent


def _cmd_list(args) -> int:
    paths = args.experiments or experiment_files(REPO / "experiments")
    for path in paths:
        table = load_experiment(path)
        print(f"{path}  [{table.paper}/{table.key}] {table.title}")
        for run in table.runs:
            reason = run.unavailable()
            status = "available" if reason is None else f"unavailable: {reason}"
            only = "" if run.scale is None else f" (scale {run.scale} only)"
            print(f"  {run.name:28s} {run.label:22s} {run.group:28s} {status}{only}")
    return 0


def _cmd_dry_run(args) -> int:
    import torch

    from miras.models import LanguageModel, count_parameters

    table = load_experiment(args.experiment).at(args.scale)
    print(f"{table.paper}/{table.key} at scale {args.scale}: parameters (built on the meta device)")
    print(f"  {'run':28s} {'params':>10s} {'paper':>8s} {'delta':>8s}")
    for run in table.select(args.only):
        reason = run.unavailable()
        if reason:
            print(f"  {run.name:28s} unavailable: {reason}")
            continue
        with torch.device("meta"):
            model = LanguageModel(run.config(args.scale, tuple(args.set)).model)
        n = count_parameters(model)
        if run.params and args.scale == "paper":
            paper, delta = f"{run.params / 1e6:.0f}M", f"{100 * (n - run.params) / run.params:+.1f}%"
        else:
            paper, delta = "-", "-"
        print(f"  {run.name:28s} {n / 1e6:9.2f}M {paper:>8s} {delta:>8s}")
    return 0


def _stale(out: Path, chash: str) -> bool:
    """Whether run folder ``out`` exists with a ``config.json`` of another config hash than ``chash``."""
    saved = out / "config.json"
    return saved.exists() and json.loads(saved.read_text()).get("config_hash") != chash


def _finished(runs_dir: Path, scale: str, paper: str) -> dict[tuple[str, int], Path]:
    """``(config hash, seed) -> summary`` of every run of ``paper`` at ``scale`` finished under ``runs_dir`` or
    harvested into ``reports/`` (whatever table it was trained for)."""
    found = {}
    paths = [*Path(runs_dir).glob(f"{scale}/{paper}/*/*/seed*/summary.json"),
             *(REPO / "reports" / paper).glob(f"*/summaries/{scale}/*.json")]  # fmt: skip
    for path in sorted(paths):
        summary = json.loads(path.read_text())
        found.setdefault((summary.get("config_hash"), summary.get("seed")), path)
    return found


def _cmd_train(args) -> int:
    import signal

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from miras.train import train

    table = load_experiment(args.experiment).at(args.scale)
    if table.trained_in:
        print(f"train: {table.key} evaluates the runs of {table.trained_in}; train those instead", file=sys.stderr)
        return 2
    if args.all == bool(args.run):
        raise SystemExit("train: give either --run NAME (repeatable, globs allowed) or --all")
    runs = table.select(args.run)
    failures = 0
    finished = _finished(args.runs_dir, args.scale, table.paper) if args.skip_done else {}
    for run in runs:
        reason = run.unavailable()
        if reason:
            if not args.all:
                print(f"train: run {run.name!r} is unavailable: {reason}", file=sys.stderr)
                return 2
            print(f"skip {run.name}: unavailable ({reason})")
            continue
        for seed in args.seeds or run.seeds:
            seeded = run.config(args.scale, tuple(args.set), seed=seed)
            out = run_dir(args.runs_dir, args.scale, table, run, seed)
            summary = out / "summary.json"
            force = args.force
            if args.skip_done and summary.exists():
                if json.loads(summary.read_text()).get("config_hash") == config_hash(seeded):
                    print(f"skip {run.name} seed{seed}: done ({summary})")
                    continue
            elsewhere = finished.get((config_hash(seeded), seed))
            if elsewhere is not None and not summary.exists():
                # the same config trained for another table (Table 2's rows in Figure 3): the reports read that one
                print(f"skip {run.name} seed{seed}: the same config is done ({elsewhere})")
                continue
            if args.skip_done and _stale(out, config_hash(seeded)):
                print(f"restart {run.name} seed{seed}: {out} was trained with another config than the declaration's")
                force = True
            meta = {"paper": table.paper, "table": table.key, "run": run.name, "seed": seed, "scale": args.scale}
            print(f"train {run.name} seed{seed} at scale {args.scale} -> {out}")
            try:
                result = train(
                    seeded,
                    out,
                    meta,
                    resume=args.resume or (args.all and bool(checkpoint_files(out))),
                    force=force,
                    accelerator=args.accelerator,
                    devices=args.devices,
                    num_nodes=args.num_nodes,
                    strategy=args.strategy,
                    progress=sys.stdout.isatty(),
                )
            except RunLocked as err:
                if not (args.all or args.skip_done):
                    raise
                # a sweep leaves a run that another trainer holds to that trainer
                print(f"skip {run.name} seed{seed}: {err}")
                continue
            except SIGTERMException:  # Lightning stops at the next step after a SIGTERM (SLURM's requeue sends one)
                print(f"train: {out} stopped by SIGTERM; continue it with --resume", file=sys.stderr)
                return 128 + signal.SIGTERM
            if not result:
                failures += 1
            else:
                metrics = result["metrics"]
                shown = "val/accuracy" if seeded.data.dataset == "mqar" else "val/ppl"
                print(
                    f"done {run.name} seed{seed}: {shown} {metrics.get(shown, float('nan')):.4g} after "
                    f"{result['steps']} steps in {result['wall_s']:.0f}s"
                )
    return 1 if failures else 0


def _cmd_eval(args) -> int:
    from miras.evaluation.run import NIAH_SAMPLES, checkpoint_of, evaluate_run, table_tasks

    table, targets = None, [args.target]
    if args.target.suffix == ".py":
        table = load_experiment(args.target).at(args.scale)
        targets = []
        for run in table.select(args.only):
            for seed in run.seeds:
                folder = run_dir(args.runs_dir, args.scale, table, run, seed)
                if not (folder / "summary.json").exists():
                    print(f"skip {folder}: not trained (no summary.json)")
                elif json.loads((folder / "summary.json").read_text())["config_hash"] != config_hash(
                    run.config(args.scale, seed=seed)
                ):
                    print(f"skip {folder}: stale (trained with another config than the declaration's)")
                else:
                    targets.append(folder)
    for target in targets:
        folder = checkpoint_of(target)[0]
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
        if args.tasks:
            harness, niah = args.tasks.split(","), {}
        else:
            owner = table or _table_of(summary)
            if owner is None:
                raise ValueError(f"{target}: give --tasks (no finished run of a known table to take them from)")
            harness, niah = table_tasks(owner)
        done = summary.get("eval", {})
        if (
            args.skip_done
            and set(harness) <= set(done.get("lm_eval", {}).get("tasks", []))
            and set(niah) <= set(done.get("niah", {}).get("tasks", []))
        ):
            print(f"skip {folder}: evaluated")
            continue
        print(f"eval {folder}: {', '.join([*harness, *niah])}")
        metrics = evaluate_run(
            target,
            harness,
            niah=niah,
            offline={"auto": None, "fixtures": True, "hub": False}[args.data],
            data_dir=args.data_dir,
            limit=args.limit,
            niah_samples=args.niah_samples or NIAH_SAMPLES[summary.get("scale", args.scale)],
            batch_size=args.batch_size,
            device=args.device,
        )
        for key, value in sorted(metrics.items()):
            print(f"  {key:40s} {value:.4f}")
    return 0


def _cmd_generate(args) -> int:
    from miras.generation import Sampling, generate_cli

    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    if (args.prompt is None) == (args.prompt_file is None):
        raise ValueError("give exactly one of --prompt TEXT and --prompt-file FILE")
    if args.prompt_file is not None and not args.prompt_file.is_file():
        raise FileNotFoundError(f"--prompt-file={args.prompt_file}: no such file")
    prompt = args.prompt if args.prompt is not None else args.prompt_file.read_text()
    generate_cli(args.run, prompt, args.max_new_tokens, sampling, args.seed, args.device)
    return 0


def _cmd_export(args) -> int:
    from miras.hf import export

    out = export(args.run, args.out)
    print(f"exported {out}: AutoModelForCausalLM.from_pretrained({str(out)!r}, trust_remote_code=True)")
    return 0


def _cmd_submit(args) -> int:
    from miras.slurm import ClusterSettings, submit

    try:
        submit(
            args.experiment,
            only=args.only,
            scale=args.scale,
            dry_run=args.dry_run,
            cluster=ClusterSettings.load(args.cluster),
            runs_dir=args.runs_dir,
            nodes=args.nodes,
            extra_sets=tuple(args.set),
        )
    except RuntimeError as err:  # no sbatch here, or sbatch refused the script
        print(f"submit: {err}", file=sys.stderr)
        return 1
    return 0


def _table_of(summary: dict) -> Table | None:
    """The table a run summary was trained for, as its scale sees it."""
    path = REPO / "experiments" / str(summary.get("paper")) / f"{summary.get('table')}.py"
    return load_experiment(path).at(summary.get("scale", "paper")) if path.exists() else None


def _devices(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m miras", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="experiments and their runs, with availability")
    ls.add_argument("experiments", nargs="*", type=Path)
    ls.set_defaults(func=_cmd_list)

    dry = sub.add_parser("dry-run", help="build every run on the meta device; print parameter counts")
    dry.add_argument("experiment", type=Path)
    dry.add_argument("--scale", choices=SCALES, default="paper")
    dry.add_argument("--only", nargs="*", help="run-name globs")
    dry.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    dry.set_defaults(func=_cmd_dry_run)

    tr = sub.add_parser("train", help="train runs of an experiment into runs/<scale>/<paper>/<table>/<run>/seed<k>")
    tr.add_argument("experiment", type=Path)
    tr.add_argument("--run", action="append", default=[], help="run name or glob (repeatable)")
    tr.add_argument(
        "--all",
        action="store_true",
        help="every available run of the table (a killed run resumes from its last checkpoint; a run that another "
        "trainer holds is skipped)",
    )
    tr.add_argument("--scale", choices=SCALES, default="tiny")
    tr.add_argument("--seed", dest="seeds", type=int, action="append", help="seed(s); default: the run's")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    tr.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint that loads")
    tr.add_argument("--force", action="store_true", help="delete the run folder and start over")
    tr.add_argument(
        "--skip-done",
        action="store_true",
        help="skip runs whose summary has the same config hash; restart folders trained with another config",
    )
    tr.add_argument("--runs-dir", default=str(REPO / "runs"))
    tr.add_argument("--accelerator", default="auto")
    tr.add_argument("--devices", type=_devices, default="auto")
    tr.add_argument("--num-nodes", type=int, default=1)
    tr.add_argument("--strategy", default="auto", help="Lightning strategy (auto, ddp, fsdp, ...)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("eval", help="lm-eval and S-NIAH of trained runs; metrics merged into their summary.json")
    ev.add_argument(
        "target", type=Path, help="a run folder, one of its checkpoint files, or an experiment file (its trained runs)"
    )
    ev.add_argument(
        "--tasks",
        help="comma list of lm-eval tasks and niah_single_1/2/3; default: the tasks of the run's table columns",
    )
    ev.add_argument("--scale", choices=SCALES, default="tiny", help="scale of the runs of an experiment file")
    ev.add_argument("--only", nargs="*", help="run-name globs (experiment file)")
    ev.add_argument(
        "--data",
        choices=("auto", "fixtures", "hub"),
        default="auto",
        help="lm-eval task data: the Hub, the offline fixtures (data/lm_eval), or the Hub when it is reachable",
    )
    ev.add_argument("--data-dir", type=Path, help="folder of <task>.jsonl files replacing the fixtures")
    ev.add_argument("--limit", type=int, help="at most this many documents per lm-eval task")
    ev.add_argument("--niah-samples", type=int, help="S-NIAH samples per task and length (default: by the run's scale)")
    ev.add_argument("--batch-size", type=int, default=8)
    ev.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ev.add_argument("--skip-done", action="store_true", help="skip runs whose summary already has these tasks")
    ev.add_argument("--runs-dir", default=str(REPO / "runs"))
    ev.set_defaults(func=_cmd_eval)

    gen = sub.add_parser(
        "generate", help="stream text from a trained run (its newest checkpoint that loads, and its tokenizer)"
    )
    gen.add_argument("run", type=Path, help="a run folder (its newest checkpoint that loads) or one checkpoint file")
    gen.add_argument("--prompt", help="the text to continue")
    gen.add_argument("--prompt-file", type=Path, help="read the prompt from this file")
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    gen.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: all)")
    gen.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set holding this mass")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", default="cuda" if _cuda() else "cpu")
    gen.set_defaults(func=_cmd_generate)

    ex = sub.add_parser("export", help="a Hugging Face model folder (config, safetensors, tokenizer, model card)")
    ex.add_argument("run", type=Path, help="a run folder (its newest checkpoint that loads) or one checkpoint file")
    ex.add_argument("out", type=Path, help="the folder to write (absent or empty)")
    ex.set_defaults(func=_cmd_export)

    sb = sub.add_parser("submit", help="one sbatch script per run and seed (slurm/), submitted with sbatch")
    sb.add_argument("experiment", type=Path)
    sb.add_argument("--only", nargs="*", help="run-name globs")
    sb.add_argument("--scale", choices=SCALES, default="paper")
    sb.add_argument("--dry-run", action="store_true", help="print the scripts; write and submit nothing")
    sb.add_argument("--nodes", type=int, help="nodes per job (default: from parameters and tokens)")
    sb.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for train")
    sb.add_argument("--cluster", type=Path, default=REPO / "slurm" / "cluster.toml", help="cluster settings")
    sb.add_argument("--runs-dir", default=str(REPO / "runs"))
    sb.set_defaults(func=_cmd_submit)

    return p


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    import warnings

    # lightning's pytree helper warns on every step under torch >= 2.10; nothing for a user to act on
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (
        ConfigError,
        FileNotFoundError,
        FileExistsError,
        KeyError,
        NotImplementedError,
        ValueError,
        RunLocked,
        CheckpointWriteError,
    ) as err:
        print(f"error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
