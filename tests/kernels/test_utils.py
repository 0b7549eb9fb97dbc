import pytest
import torch

from kernels.utils import assert_close, autotune, git_state, git_tag, is_interpreting, relative_rms


def test_assert_close_can_fail():
    ref = torch.randn(64)
    assert_close("same", ref, ref + 1e-7 * torch.randn(64), ratio=1e-5)
    with pytest.raises(AssertionError, match="relative RMS"):
        assert_close("off", ref, ref + 0.1 * torch.randn(64), ratio=1e-3)
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close("nan", ref, torch.full_like(ref, float("nan")), ratio=1.0)


def test_relative_rms_of_zero_reference_is_absolute():
    assert relative_rms(torch.zeros(4), torch.zeros(4)) == 0
    assert relative_rms(torch.zeros(4), torch.ones(4)) == 1


def test_autotune_keeps_one_config_under_the_interpreter(monkeypatch):
    import triton
    import triton.language as tl

    def noop(x, T, BT: tl.constexpr):
        pass

    kernel = triton.jit(noop)
    configs = [triton.Config({"BT": 16}), triton.Config({"BT": 64})]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert is_interpreting()
    assert autotune(configs, key=["T"])(kernel).configs == configs[:1]
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert autotune(configs, key=["T"])(kernel).configs == configs
    monkeypatch.setenv("MIRAS_AUTOTUNE", "first")
    assert autotune(configs, key=["T"])(kernel).configs == configs[:1]
    monkeypatch.setenv("MIRAS_AUTOTUNE", "fastest")
    with pytest.raises(ValueError, match="MIRAS_AUTOTUNE='fastest': allowed values are all, first"):
        autotune(configs, key=["T"])


def test_git_state_outside_git_takes_the_sha_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("MIRAS_GIT_SHA", raising=False)
    assert git_state(tmp_path) == {"sha": "unknown", "dirty": None}
    monkeypatch.setenv("MIRAS_GIT_SHA", "0123456789abcdef0123")
    assert git_state(tmp_path) == {"sha": "0123456789abcdef0123", "dirty": None}
    assert git_tag(tmp_path) == "0123456789ab"
