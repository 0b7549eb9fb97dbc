"""The ahead-of-time resource report names a value for every constexpr of every chunk kernel it compiles, gives
each kernel's launch grid and the retentions it runs, and merges a partial run into the record already there
(no compile here: ``compile_kernel`` is replaced)."""

import inspect
import json

import pytest

from benchmarks import miras_resources as resources
from kernels.miras import chunk_mlp
from kernels.miras.chunk_linear import RETENTIONS as PARALLEL
from kernels.miras.chunk_linear import launch_grids


@pytest.mark.parametrize("name", resources.KERNELS)
def test_every_constexpr_has_a_value(name):
    kernel, extra = resources._kernels()[name]
    while hasattr(kernel, "fn"):  # autotuner -> jit (or interpreted) function -> the Python function
        kernel = kernel.fn
    params = inspect.signature(kernel).parameters.values()
    needed = {p.name for p in params if "constexpr" in str(p.annotation)}
    for retention in PARALLEL if name in resources.CHUNK_LINEAR else ("l2",):
        assert needed and set(resources.constexprs(name, 64, 64, extra, retention)) == needed


@pytest.mark.parametrize("name", resources.KERNELS)
def test_signature_types_every_argument(name):
    types = resources.signature(name)
    assert set(types.values()) <= {"constexpr", "*bf16", "*fp32", "*i32", "i32", "fp32"}
    assert types.get("q_ptr", "*bf16") == "*bf16" and types.get("T", "i32") == "i32"


def test_chunk_linear_kernels_take_the_value_block_and_grids_of_chunk_linear():
    assert set(resources.GROUPS["chunk_linear"]) == set(resources.CHUNK_LINEAR)
    assert set(resources.CHUNK_LINEAR.values()) == set(launch_grids(1, 1, 1, 1))
    assert resources.constexprs("linear_state_bwd", 128, 64, {})["BV"] == 32
    assert resources.constexprs("linear_output_fwd", 64, 64, {}, "none")["BV"] == 64
    assert not resources.constexprs("linear_read_bwd", 64, 64, {}, "none")["HAS_ALPHA"]
    assert resources.launch_grid("linear_grads_bwd", 128, "l2", 4, 4096, 16, 64) == (256, 16, 4)
    assert resources.launch_grid("linear_state_fwd", 128, "l2", 1, 32768, 16, 64) == (1, 16, 4)
    assert resources.launch_grid("linear_state_fwd", 128, "lq", 4, 4096, 16, 64) == (4, 16, 1)
    assert resources.launch_grid("mlp_carry_bwd", 64, "kl", 1, 32768, 16, 64) == (1, 16)
    assert resources.launch_grid("mlp_read_bwd", 64, "kl", 4, 4096, 16, 64) == (64, 16)
    assert resources.constexprs("linear_state_bwd", 128, 64, {}, "kl")["BV"] == 32
    assert resources.constexprs("linear_grads_bwd", 64, 64, {}, "lq")["RETENTION"] == 2
    assert resources.constexprs("linear_decode", 128, 64, {}, "kl")["BV"] == 128  # decoding keeps whole heads


def test_serves_follows_the_dispatch():
    for name in resources.CHUNK_LINEAR:
        assert resources.serves(name) == (*PARALLEL, "tangent")
    assert "elastic" not in resources.serves("mlp_read_bwd") and "mlp_bwd" not in resources.KERNELS
    assert "tangent" not in resources.serves("linear_decode")  # decoding reads linearly (check_supported)
    assert resources.constexprs("linear_state_fwd", 64, 64, {}, "tangent")["RETENTION"] == 5
    robust = resources.constexprs("linear_state_bwd", 128, 64, {}, "l2", bias="robust")
    assert robust["BV"] == 128 and robust["BIAS"] == 8 and robust["HAS_DELTA"]  # whole rows, the radius read


def _row(kernel, head_dim, retention, shared, git=None):
    row = {"kernel": kernel, "head_dim": head_dim, "chunk": 64, "retention": retention, "num_warps": 4}
    row |= {"num_stages": 1, "shared_bytes": shared, "fits": shared <= 232448, "registers": 255}
    return row | ({"git": git, "triton": "3.9.0"} if git else {})


def test_a_partial_run_replaces_only_its_rows(tmp_path, monkeypatch):
    old = {"arch": "sm_90a", "triton": "3.9.0", "git": "old", "command": "python -m ...", "results": []}
    old["results"] = [_row("linear_bwd", 128, "l2", 180224), _row("mlp_bwd", 64, "l2", 65536)]
    old["results"] += [_row("mlp_state_fwd", 64, "l2", 65536)]
    old["results"] += [_row("linear_grads_bwd", 128, "lq", 2048)]
    (tmp_path / "miras_resources_sm_90a.json").write_text(json.dumps(old))
    calls = []

    def fake(name, head_dim, chunk, arch, warps, stages, retention, bias="l2"):
        calls.append((name, head_dim, retention))
        return _row(name, head_dim, retention, 1024 if name != "mlp_carry_bwd" else 999999)

    monkeypatch.setattr(resources, "compile_kernel", fake)
    argv = ["--kernels", "mlp_carry_bwd", "chunk_linear", "--head-dims", "128", "--retentions", "l2", "elastic"]
    assert resources.main([*argv, "--out", str(tmp_path)]) == 0
    assert ("mlp_carry_bwd", 128, "elastic") not in calls and len(calls) == 1 + 2 * len(resources.CHUNK_LINEAR)
    record = json.loads((tmp_path / "miras_resources_sm_90a.json").read_text())
    rows = {(r["kernel"], r["head_dim"], r["retention"]): r for r in record["results"]}
    carry = rows["mlp_carry_bwd", 128, "l2"]
    assert carry["shared_bytes"] == 999999 and rows["mlp_state_fwd", 64, "l2"]["git"] == "old"
    assert carry["git"] == record["git"] != "old"
    assert rows["linear_grads_bwd", 128, "lq"]["git"] == "old"
    assert ("linear_bwd", 128, "l2") not in rows and ("mlp_bwd", 64, "l2") not in rows  # kernels the code lost
    assert [r["kernel"] for r in record["results"]][:2] == ["linear_state_fwd", "linear_state_fwd"]
    state = rows["linear_state_fwd", 128, "l2"]
    assert state["runs"] and state["grids"] == {"4x4096x16": [4, 16, 4], "1x32768x16": [1, 16, 4]}
    md = (tmp_path / "miras_resources_sm_90a.md").read_text()
    assert f"git {record['git']}" in md
    assert "| linear_grads_bwd | 128 | 64 | lq | none, l2, lq, elastic, kl, tangent |" in md
    assert "| **no** |" in md and "| (256, 16, 4) | (512, 16, 4) |" in md


def test_mlp_split_kernels_follow_the_dispatch():
    assert set(resources.GROUPS["mlp_split"]) == set(resources.CHUNK_MLP)
    assert set(resources.CHUNK_MLP.values()) == set(chunk_mlp.launch_grids(1, 1, 1))
    for name in resources.CHUNK_MLP:
        assert resources.serves(name) == ("none", "l2", "lq", "kl", "tangent")
    assert resources.launch_grid("mlp_output_fwd", 64, "l2", 4, 4096, 16, 64) == (256, 16)
    assert resources.launch_grid("mlp_state_fwd", 128, "lq", 1, 32768, 16, 64) == (1, 16)
    assert "BW" not in resources.constexprs("mlp_output_fwd", 64, 64, {})
    assert resources.constexprs("mlp_state_fwd", 64, 64, {}, "kl")["RETENTION"] == 4
