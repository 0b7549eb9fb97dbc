import numpy as np
import torch

from benchmarks.miras_precision import _round, measure, operands


def test_bf16_operands_round_as_torch_does():
    a = np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 1e3
    np.testing.assert_array_equal(_round(a, "bf16"), torch.from_numpy(a).bfloat16().float().numpy())


def test_tf32_operands_keep_ten_mantissa_bits():
    a = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    r = _round(a, "tf32")
    assert not (r.view(np.uint32) & 0x1FFF).any()
    assert np.all(np.abs(r - a) <= 2.0**-11 * np.abs(a))
    assert (r != a).any()


def test_rounded_products_move_the_kernel_and_the_interpreter_is_restored():
    from triton.runtime import interpreter

    original = interpreter.InterpreterBuilder.create_dot
    fp32, bf16 = measure("yaad", 9, ["fp32", "bf16"], 16)
    assert interpreter.InterpreterBuilder.create_dot is original
    assert fp32["worst_grad_error"] < 1e-4 < bf16["worst_grad_error"]
    with operands("tf32"):
        assert interpreter.InterpreterBuilder.create_dot is not original
