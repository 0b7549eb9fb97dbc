"""`python -m miras eval`: metrics of the table's columns merged into summary.json, bad input named in one line,
S-NIAH scoring, and Table 3 evaluating Table 2's runs."""

import json
from pathlib import Path

import pytest
import torch

from miras.cli import main
from miras.config import config_hash, override, to_dict
from miras.evaluation import MirasLM
from miras.evaluation.niah import evaluate_niah
from miras.evaluation.run import table_tasks
from miras.experiment import load_experiment
from miras.lit import LanguageModelModule
from miras.models import LanguageModel
from reports.render import render

REPO = Path(__file__).resolve().parents[2]
TABLE2 = load_experiment(REPO / "experiments" / "miras" / "table2.py")
TABLE3 = load_experiment(REPO / "experiments" / "miras" / "table3_niah.py")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def make_run(folder: Path, tiny_corpus: Path, name: str = "transformer-340m") -> Path:
    """A finished smoke-scale run of Table 2 as `python -m miras train` leaves it (untrained weights)."""
    config = TABLE2.run(name).config("smoke", (f"data.tokenizer={tiny_corpus / 'tokenizer.json'}",))
    config = override(config, ["model.vocab_size=300"])
    module = LanguageModelModule(LanguageModel(config.model), config)
    (folder / "checkpoints").mkdir(parents=True)
    torch.save(
        {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()},
        folder / "checkpoints" / "last.ckpt",
    )
    meta = {"paper": "miras", "table": "table2", "run": name, "seed": 0, "scale": "smoke"}
    chash = config_hash(config)
    (folder / "config.json").write_text(json.dumps({"config_hash": chash, "meta": meta, "config": to_dict(config)}))
    (folder / "summary.json").write_text(json.dumps({**meta, "config_hash": chash, "metrics": {"val/ppl": 300.0}}))
    return folder


def test_eval_fills_every_table2_column_and_records_its_data(tiny_corpus, tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_corpus)
    assert main(["eval", str(run), "--data", "fixtures", "--limit", "2"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    columns = [c.key for c in TABLE2.columns if c.key.startswith("eval/")]
    assert set(columns) <= set(summary["metrics"]) and summary["metrics"]["val/ppl"] == 300.0
    accuracies = [summary["metrics"][c.key] for c in TABLE2.columns if c.scale == 100 and "/avg/" not in c.key]
    assert summary["metrics"]["eval/avg/acc"] == pytest.approx(sum(accuracies) / 8)
    record = summary["eval"]["lm_eval"]
    assert record["data"] == "offline fixtures (data/lm_eval)" and record["limit"] == 2
    assert json.loads((run / "eval" / "lm_eval.json").read_text())["results"]["piqa"]

    assert main(["eval", str(run), "--data", "fixtures", "--limit", "2", "--skip-done"]) == 0
    assert f"skip {run}: evaluated" in capsys.readouterr().out


def test_bad_eval_input_is_named_in_one_line(tiny_corpus, tmp_path, capsys):
    run = make_run(tmp_path / "run", tiny_corpus)
    assert main(["eval", str(run), "--tasks", "piqa2"]) == 2
    assert "task 'piqa2' is unknown; allowed values: wikitext" in capsys.readouterr().err

    other = make_run(tmp_path / "other", tiny_corpus, "gla-340m")
    (run / "checkpoints" / "last.ckpt").write_bytes((other / "checkpoints" / "last.ckpt").read_bytes())
    assert main(["eval", str(run), "--tasks", "piqa"]) == 2
    err = capsys.readouterr().err
    assert "holds a model of another config than" in err and err.count("\n") == 1

    assert main(["eval", str(tmp_path / "missing"), "--tasks", "piqa"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_niah_scores_the_greedy_answer(tokenizer_300, monkeypatch):
    model = LanguageModel(TABLE2.run("gated_deltanet-340m").config("smoke", ("model.vocab_size=300",)).model)
    lm = MirasLM(model, tokenizer_300, max_length=64)
    scores = evaluate_niah(lm, {"niah_single_1": [500, 600]}, num_samples=2)
    assert set(scores["metrics"]) == {"eval/niah_single_1/500", "eval/niah_single_1/600"}
    assert all(0 <= v <= 1 for v in scores["metrics"].values()) and len(scores["samples"]) == 4

    # an oracle that answers with the needle's value scores 1
    from data.synthetic.niah import generate_niah

    answers = {s["input"]: s["outputs"][0] for s in generate_niah("niah_single_1", tokenizer_300, 500, 2, seed=42)}
    prompts = iter(answers.values())
    monkeypatch.setattr(lm, "greedy", lambda ids, n, until: [lm.tok_encode(" " + next(prompts) + ".")])
    assert evaluate_niah(lm, {"niah_single_1": [500]}, num_samples=2)["metrics"] == {"eval/niah_single_1/500": 1.0}


@pytest.fixture
def tokenizer_300(tiny_corpus):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_corpus / "tokenizer.json"))


def test_table3_evaluates_table2s_runs(tmp_path):
    for run in TABLE3.runs:
        twin = TABLE2.run(run.name)
        assert (twin.preset, twin.overrides) == (run.preset, run.overrides)
    harness, niah = table_tasks(TABLE3.at("paper"))
    assert harness == [] and niah["niah_single_3"] == [1024, 2048, 4096] and niah["niah_single_1"][-1] == 8192
    assert table_tasks(TABLE3.at("tiny"))[1] == {"niah_single_1": [256, 384], "niah_single_2": [256, 384],
                                                  "niah_single_3": [384]}  # fmt: skip
    assert main(["train", str(REPO / "experiments" / "miras" / "table3_niah.py"), "--all"]) != 0

    folder = tmp_path / "miras" / "table2" / "summaries" / "tiny"
    folder.mkdir(parents=True)
    run = TABLE3.run("moneta-760m")
    metrics = {c.key: 0.5 for c in TABLE3.columns}
    summary = {"run": run.name, "seed": 0, "config_hash": config_hash(run.config("tiny")), "metrics": metrics}
    summary |= {"git": {"sha": "0" * 40}, "device": "cpu", "tokens": 1, "eval": {}}
    summary["eval"]["niah"] = {"data": "offline generator", "samples": 5}
    (folder / "moneta-760m.seed0.json").write_text(json.dumps(summary))
    md = render(TABLE3, reports_dir=tmp_path, scale="tiny")[0].read_text()
    row = next(line for line in md.splitlines() if line.startswith("| Moneta |"))
    assert row.split(" | ")[1:3] == ["50.00 [n=5]", "50.00 [n=5]"]  # 5 samples: a pipeline check (tiny lengths)
    assert "S-NIAH from the offline generator, 5 samples per task and length" in md
