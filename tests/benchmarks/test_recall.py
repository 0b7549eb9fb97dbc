"""The recall benchmark of the Miras memories (``python -m benchmarks.recall``)."""

import json

from benchmarks.recall import GDN, MEMORIES, Probe, chunk_distance, main, recall


def test_the_delta_rule_recalls_and_the_ln_gain_lets_the_mlp_memory_store():
    exact = recall(GDN, 0.3, 0.999, Probe(batch=4), chunk_size=1)
    assert exact["acc"] > 0.95
    yaad = MEMORIES["yaad"][0]
    gained = recall(yaad, 0.3, 0.999, Probe(batch=8))
    paper_ln = recall(yaad, 0.3, 0.999, Probe(batch=8, gain=None))
    assert gained["acc"] > 0.4 > 0.2 > paper_ln["acc"]


def test_chunk_form_equals_the_recurrence_at_chunk_one():
    assert chunk_distance(MEMORIES["yaad"][0], 0.1, 0.99, Probe(chunk_size=1), T=16) < 1e-12
    assert chunk_distance(MEMORIES["yaad"][0], 0.1, 0.99, Probe(chunk_size=16), T=16) > 1e-2


def test_command_writes_the_report(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path / "recall")]) == 0
    md = (tmp_path / "recall.md").read_text()
    assert "## Recall against the step size" in md and "| gated_deltanet | 16 |" in md
    results = json.loads((tmp_path / "recall.json").read_text())
    assert {"step", "chunk", "prefix", "influence"} <= set(results)
