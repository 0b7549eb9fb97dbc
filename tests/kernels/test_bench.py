"""The kernel benchmark harness on a CPU: every row gets times or a stated reason, and the targets are judged."""

import json

import pytest

from benchmarks.speed import Shape, main, targets


def test_bench_writes_rows_statuses_and_targets(tmp_path, monkeypatch):
    monkeypatch.delenv("MIRAS_AUTOTUNE", raising=False)
    methods = ["yaad_linear", "memora", "naive:memora", "gated_deltanet", "sdpa"]
    argv = ["--shapes", "1x20x1x16", "--methods", *methods, "--decoders", "--warmup", "0", "--repeats", "1"]
    assert main([*argv, "--device", "cpu", "--dtype", "fp32", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "miras_cpu.json").read_text())
    rows = {r["method"]: r for r in record["results"]}
    assert set(rows) == set(methods)
    for method in ("yaad_linear", "memora", "naive:memora", "sdpa"):
        assert rows[method]["status"] == "ok", rows[method]
        assert rows[method]["fwd_s"] > 0 and rows[method]["tflops_fwd_bwd"] > 0
    assert rows["gated_deltanet"]["status"] == "unavailable: needs CUDA"
    assert record["git"] and record["versions"]["torch"] and record["autotune"] == "all"
    markdown = (tmp_path / "miras_cpu.md").read_text()
    assert "| memora | 1x20x1x16 |" in markdown and "unavailable: needs CUDA" in markdown
    assert "| fwd+bwd / GDN | / DeltaNet | / SDPA | peak MiB | peak / GDN |" in markdown


def test_the_peers_of_the_issue_are_methods():
    from benchmarks.speed import METHODS

    assert {"gated_deltanet", "deltanet", "sdpa", "flash_attention", "memora_tangent"} <= set(METHODS)


def test_bench_times_decoding_steps(tmp_path):
    decoders = ["fused:yaad", "torch:yaad", "torch:memora_linear"]
    argv = ["--shapes", "2x20x1x16", "--methods", "sdpa", "--decoders", *decoders, "--chunk-size", "16"]
    assert main([*argv, "--warmup", "0", "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "miras_cpu.json").read_text())["decoding"]}
    for method in decoders:
        assert rows[method]["status"] == "ok" and rows[method]["shape"] == "2x1x16" and rows[method]["position"] == 8
        assert rows[method]["tokens_per_s"] == 2 / rows[method]["step_s"]
    markdown = (tmp_path / "miras_cpu.md").read_text()
    assert "| torch:yaad | 2x1x16 |" in markdown and "| fused:yaad | 2x1x16 |" in markdown


def test_targets_judge_ratios_at_4096():
    shape = "4x4096x16x64"

    def ok(method, fwd_bwd, peak):
        return {"method": method, "shape": shape, "status": "ok", "fwd_bwd_s": fwd_bwd, "peak_mib": peak}

    results = [ok("gated_deltanet", 1.0, 100.0), ok("yaad_linear", 1.4, 250.0), ok("yaad", 5.0, 150.0)]
    results += [ok("naive:yaad", 40.0, 900.0), ok("titans_pytorch", 60.0, 900.0)]
    checks = {t["target"]: t for t in targets(results) if t["shape"] == shape}
    assert checks["yaad_linear fwd+bwd / gated_deltanet <= 1.5"]["met"] is True
    assert checks["yaad fwd+bwd / gated_deltanet <= 4"]["met"] is False
    assert checks["naive:yaad / yaad fwd+bwd >= 10"]["ratio"] == 8.0
    assert checks["naive:yaad / yaad fwd+bwd >= 10"]["met"] is False
    assert checks["titans_pytorch / yaad fwd+bwd >= 10"]["met"] is True
    assert checks["yaad_linear peak memory / gated_deltanet <= 2"]["met"] is False
    assert checks["moneta fwd+bwd / gated_deltanet <= 4"]["met"] is None
    assert not targets([{**ok("yaad", 1.0, 1.0), "shape": "1x2048x1x16"}])
    assert str(Shape.parse("8x2048x16x64")) == "8x2048x16x64"


def test_a_method_that_raises_gets_a_failed_row(monkeypatch):
    from benchmarks import speed as bench

    def broken(*args):
        raise RuntimeError("out of resources: shared memory\ndetails")

    monkeypatch.setitem(bench.METHODS, "broken", (broken, bench.linear_flops))
    row = bench.measure("broken", Shape(1, 16, 1, 16), None, bench.torch.device("cpu"), 16, 0, 1)
    assert row["status"] == "failed: RuntimeError: out of resources: shared memory"


def test_an_interrupted_run_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    from benchmarks import speed as bench

    measured = bench.measure

    def measure(method, *args):
        if method == "yaad_linear":
            raise KeyboardInterrupt  # what a time limit's signal does to the second row
        return measured(method, *args)

    monkeypatch.setattr(bench, "measure", measure)
    argv = ["--shapes", "1x20x1x16", "--methods", "sdpa", "yaad_linear", "--decoders", "--warmup", "0"]
    with pytest.raises(KeyboardInterrupt):
        main([*argv, "--repeats", "1", "--device", "cpu", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "miras_cpu.json").read_text())
    assert [r["method"] for r in record["results"]] == ["sdpa"] and record["results"][0]["status"] == "ok"
    assert "| sdpa | 1x20x1x16 |" in (tmp_path / "miras_cpu.md").read_text()
