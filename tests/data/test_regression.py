import pytest
import torch
from torch.utils.data import DataLoader

from data.synthetic.regression import (
    OnlineRegressionDataset,
    equicorrelated,
    naive_forecast,
    one_step_mse,
    online_regression,
)


@pytest.fixture(scope="module")
def stream():
    return online_regression(128, seed=0)


def test_shapes_and_dtypes(stream):
    for name in ("keys", "values", "queries", "targets"):
        assert stream[name].shape == (128, 256, 64) and stream[name].dtype == torch.float64
    assert stream["noise"].shape == (128, 257, 64) and stream["decay"].shape == (257,)
    small = online_regression(3, seq_len=10, d_k=5, dtype=torch.float32)
    assert small["keys"].shape == (3, 10, 5) and small["targets"].dtype == torch.float32


def test_ar1_recursion_and_alignment(stream):
    k, v, q, y = stream["keys"], stream["values"], stream["queries"], stream["targets"]
    torch.testing.assert_close(k[:, 1:] - stream["decay"][:-2, None] * k[:, :-1], stream["noise"][:, :-2])
    torch.testing.assert_close(q[:, :-1], k[:, 1:])
    torch.testing.assert_close(q[:, -1], stream["decay"][-2] * k[:, -1] + stream["noise"][:, -2])
    torch.testing.assert_close(v, q / q.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(y[:, :-1], v[:, 1:])
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(128, 256, dtype=torch.float64))
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(128, 256, dtype=torch.float64))


def test_decay_switches_at_a_quarter(stream):
    decay = stream["decay"]
    assert (decay[:64] == 0.9).all() and (decay[64:] == 0.999).all()
    assert (
        online_regression(1, seq_len=40, switch=7)["decay"][:8]
        == torch.tensor([0.9] * 7 + [0.999], dtype=torch.float64)
    ).all()


def test_noise_has_the_stated_covariance(stream):
    noise = stream["noise"].reshape(-1, 64) / 0.02
    cov = noise.T @ noise / len(noise)
    torch.testing.assert_close(cov, equicorrelated(64, 0.5), atol=0.04, rtol=0)
    g = torch.Generator().manual_seed(0)
    assert stream["keys"][:, 0].std().item() == pytest.approx(1.0, abs=0.02)
    assert torch.equal(stream["keys"][:, 0], torch.randn(128, 64, generator=g, dtype=torch.float64))


def test_initial_key_options():
    assert (online_regression(2, seq_len=8, k1="zeros")["keys"][:, 0] == 0).all()
    k0 = torch.arange(4.0)
    assert torch.equal(online_regression(2, seq_len=8, d_k=4, k1=k0)["keys"][:, 0], k0.expand(2, 4).double())
    with pytest.raises(ValueError, match="k1"):
        online_regression(2, k1="uniform")
    with pytest.raises(ValueError, match="noise_corr"):
        online_regression(2, noise_corr=1.0)


def test_seeds_decide_the_stream():
    a, b = online_regression(2, seq_len=16, seed=1), online_regression(2, seq_len=16, seed=1)
    c = online_regression(2, seq_len=16, seed=2)
    assert all(torch.equal(a[n], b[n]) for n in a) and not torch.equal(a["keys"], c["keys"])


def test_naive_forecast_matches_the_papers_curve(stream):
    mse = one_step_mse(naive_forecast(stream["values"]), stream["targets"])
    assert mse.shape == (256,)
    torch.testing.assert_close(mse[5], (stream["values"][:, 5] - stream["values"][:, 6]).pow(2).sum(-1).mean())
    assert mse[0] < 0.02
    assert 20 <= mse.argmax() < 64 and mse.max() > 0.15
    assert mse[100:].mean() < 0.03 and mse[100:].max() < 0.05


def test_dataset_yields_fresh_seeded_batches():
    batches = list(DataLoader(OnlineRegressionDataset(2, num_batches=3, seed=5, seq_len=8), batch_size=None))
    assert len(batches) == 3 and batches[0]["keys"].shape == (2, 8, 64)
    assert torch.equal(batches[1]["keys"], online_regression(2, seq_len=8, seed=6)["keys"])
    assert not torch.equal(batches[0]["keys"], batches[1]["keys"])
