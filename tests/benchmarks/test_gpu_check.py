"""The prepared GPU check on a CPU: it finds the gpu-marked tests (skipped here), runs the benchmark harness and
leaves its logs and record in the folder it is given."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def test_run_leaves_test_results_and_the_benchmark_record(tmp_path):
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "TRITON_INTERPRET": "1",
        "WHEELS": str(tmp_path / "no-wheels"),
        "BENCH_ARGS": "--shapes 1x20x1x16 --methods sdpa --decoders --warmup 0 --repeats 1",
    }
    logs = tmp_path / "logs"
    done = subprocess.run(["bash", str(SCRIPT), "run", str(logs)], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "gpu tests: exit 0; benchmark: exit 0" in (logs / "env.txt").read_text()
    suite = ET.parse(logs / "gpu_tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) >= 20 and int(suite.get("skipped")) == int(suite.get("tests"))
    files = {case.get("classname").split(".")[-1] for case in suite.iter("testcase")}
    assert {"test_chunk", "test_hosa", "test_miras_layer", "test_baselines"} <= files
    record = json.loads((logs / "miras_cpu.json").read_text())
    assert [(r["method"], r["status"]) for r in record["results"]] == [("sdpa", "ok")]
    assert record["autotune"] == "first" and "autotune first" in (logs / "miras_cpu.md").read_text()


def test_no_command_prints_the_usage():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 2 and "gpu_check.sh run LOGDIR" in done.stderr
