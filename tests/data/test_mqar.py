import itertools
from types import SimpleNamespace

import pytest
import torch

from data.synthetic.mqar import (
    TEST_SEGMENTS,
    TRAIN_SEGMENTS,
    MQARDataModule,
    MQARSegment,
    mqar_accuracy,
    multiquery_ar,
    segment_seeds,
)

V = 256


def check_example(inputs, labels, vocab_size, num_kv_pairs, num_passes=1):
    context = 2 * num_kv_pairs * num_passes
    keys, values = inputs[0 : 2 * num_kv_pairs : 2], inputs[1 : 2 * num_kv_pairs : 2]
    assert ((keys >= 1) & (keys < vocab_size // 2)).all()
    assert ((values >= vocab_size // 2) & (values < vocab_size)).all()
    assert len(set(keys.tolist())) == num_kv_pairs and len(set(values.tolist())) == num_kv_pairs
    assert torch.equal(inputs[:context], inputs[: 2 * num_kv_pairs].repeat(num_passes))
    scored = (labels != -100).nonzero().flatten()
    assert len(scored) == num_kv_pairs
    assert (scored >= context).all() and ((scored - context) % 2 == 0).all()
    answer = dict(zip(keys.tolist(), values.tolist(), strict=True))
    assert sorted(inputs[scored].tolist()) == sorted(answer)
    for t in scored.tolist():
        assert labels[t] == answer[int(inputs[t])]


@pytest.mark.parametrize("zoology_rng", [False, True])
@pytest.mark.parametrize("random_non_queries", [False, True])
@pytest.mark.parametrize("T, kv, passes", [(64, 4, 1), (64, 16, 1), (128, 8, 3)])
def test_examples_follow_the_definition(zoology_rng, random_non_queries, T, kv, passes):
    options = dict(num_kv_pairs=kv, num_passes=passes, random_non_queries=random_non_queries)
    x, y = multiquery_ar(V, 50, T, 7, zoology_rng=zoology_rng, **options)
    assert x.shape == y.shape == (50, T) and x.dtype == y.dtype == torch.int64
    assert ((x >= 0) & (x < V)).all()
    for inputs, labels in zip(x, y, strict=True):
        check_example(inputs, labels, V, kv, passes)
    filler = (y == -100) & (torch.arange(T) >= 2 * kv * passes)
    assert (x[filler] == 0).all() != random_non_queries


def test_bit_identical_to_zoology():
    # zoology's multiquery_ar(vocab_size=40, num_examples=3, input_seq_len=16, seed=123, num_kv_pairs=3),
    # run right after torch.manual_seed(123)
    inputs = [
        [19, 28, 6, 23, 5, 32, 6, 17, 19, 34, 5, 1, 6, 1, 32, 9],
        [7, 22, 9, 33, 14, 24, 9, 17, 14, 22, 7, 36, 0, 16, 36, 25],
        [5, 24, 15, 28, 16, 34, 15, 15, 24, 21, 16, 7, 5, 11, 16, 12],
    ]
    labels = torch.full((3, 16), -100)
    labels[0, [6, 8, 10]] = torch.tensor([23, 28, 32])
    labels[1, [6, 8, 10]] = torch.tensor([33, 24, 22])
    labels[2, [6, 12, 14]] = torch.tensor([28, 24, 34])
    x, y = multiquery_ar(40, 3, 16, 123, num_kv_pairs=3, zoology_rng=True)
    assert x.tolist() == inputs and torch.equal(y, labels)
    x, _ = multiquery_ar(40, 3, 16, 123, num_kv_pairs=3, random_non_queries=False, zoology_rng=True)
    query_or_context = (labels != -100) | (torch.arange(16) < 6)
    assert torch.equal(x, torch.where(query_or_context, torch.tensor(inputs), 0))


def test_fast_and_zoology_draws_share_the_query_position_law():
    fast = (multiquery_ar(V, 1500, 64, 1, num_kv_pairs=4)[1] != -100).double().mean(0)
    exact = (multiquery_ar(V, 1500, 64, 2, num_kv_pairs=4, zoology_rng=True)[1] != -100).double().mean(0)
    assert fast[8] > 0.6 and fast[8] > fast[10] > fast[12] > fast[30]
    torch.testing.assert_close(fast, exact, atol=0.05, rtol=0)


def test_uniform_power_gives_flat_query_positions():
    freq = (multiquery_ar(V, 4000, 64, 0, num_kv_pairs=4, power_a=1.0)[1] != -100).double().mean(0)[8::2]
    torch.testing.assert_close(freq, torch.full_like(freq, 4 / 28), atol=0.03, rtol=0)


def test_seeds_decide_the_data():
    a, b = multiquery_ar(V, 20, 64, 5, num_kv_pairs=4), multiquery_ar(V, 20, 64, 5, num_kv_pairs=4)
    c = multiquery_ar(V, 20, 64, 6, num_kv_pairs=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_segment_seeds_are_zoologys_and_disjoint():
    train, test = segment_seeds(123, 5, 7)
    # zoology's prepare_data with DataConfig.seed = 123 and 5 train, 7 test segments
    assert train == [843828734, 914636141, 1228959102, 1840268610, 974319580]
    assert test[:2] == [2967327842, 2367878886]
    train, test = segment_seeds(0, 200, 200)
    assert all(0 <= s < 2**31 for s in train) and all(2**31 <= s < 2**32 for s in test)
    assert not set(train) & set(test)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(input_seq_len=63), "input_seq_len"),
        (dict(vocab_size=64), "vocab_size"),
        (dict(num_kv_pairs=17), r"num_kv_pairs must be in \[1, 16\]"),
        (dict(num_kv_pairs=9, num_passes=3), r"num_kv_pairs must be in \[1, 8\]"),
        (dict(num_kv_pairs=0), "num_kv_pairs"),
        (dict(num_passes=0), "num_passes"),
        (dict(power_a=0.0), "power_a"),
        (dict(num_examples=0), "num_examples"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = dict(vocab_size=V, num_examples=4, input_seq_len=64, seed=0, num_kv_pairs=4)
    with pytest.raises(ValueError, match=match):
        multiquery_ar(**{**args, **kwargs})


def test_accuracy_is_zoologys():
    labels = torch.full((2, 6), -100)
    labels[0, [1, 3]] = torch.tensor([5, 6])
    labels[1, [0, 2, 4, 5]] = torch.tensor([7, 8, 9, 9])
    preds = torch.tensor([[0, 5, 0, 0, 0, 0], [7, 0, 8, 0, 9, 9]])
    assert mqar_accuracy(preds, labels).item() == pytest.approx((0.5 + 1.0) / 2)
    assert mqar_accuracy(preds, labels, reduction="pooled").item() == pytest.approx(5 / 6)
    assert mqar_accuracy(preds, labels, reduction="none").tolist() == [0.5, 1.0]
    logits = torch.nn.functional.one_hot(preds, 10).float()
    assert mqar_accuracy(logits, labels).item() == pytest.approx(0.75)


def test_canonical_config_is_zoologys():
    train = [(64, 4, 100_000), (128, 8, 20_000), (256, 16, 20_000), (256, 32, 20_000), (256, 64, 20_000)]
    test = [(64, 4), (64, 8), (64, 16), (128, 32), (256, 64), (512, 128), (1024, 256)]
    assert [(s.input_seq_len, s.num_kv_pairs, s.num_examples) for s in TRAIN_SEGMENTS] == train
    assert [(s.input_seq_len, s.num_kv_pairs) for s in TEST_SEGMENTS] == test
    assert {s.num_examples for s in TEST_SEGMENTS} == {1000}
    assert MQARDataModule().train_batch_size == 256 and MQARDataModule().test_batch_size == 32


def small_module(**kwargs):
    train = [MQARSegment(32, 2, 50), MQARSegment(64, 8, 30)]
    test = [MQARSegment(32, 4, 12), MQARSegment(128, 16, 9)]
    return MQARDataModule(vocab_size=V, train_segments=train, test_segments=test, batch_size=(8, 4), **kwargs)


def take(dm, n):
    return list(itertools.islice(iter(dm.train_dataloader()), n))


def same(a, b):
    return len(a) == len(b) and all(all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b, strict=True))


def test_datamodule_batches():
    dm = small_module()
    dm.setup()
    assert dm.batches_per_epoch == 7 + 4
    epoch = take(dm, dm.batches_per_epoch)
    sizes = {32: 0, 64: 0}
    for b in epoch:
        T = b["input_ids"].shape[1]
        assert b["input_ids"].dtype == b["labels"].dtype == b["num_kv_pairs"].dtype == torch.int64
        assert b["labels"].shape == b["input_ids"].shape and b["num_kv_pairs"].shape == (len(b["input_ids"]),)
        assert (b["num_kv_pairs"] == {32: 2, 64: 8}[T]).all() and len(b["input_ids"]) <= 8
        assert ((b["labels"] != -100).sum(1) == b["num_kv_pairs"]).all()
        sizes[T] += len(b["input_ids"])
    assert sizes == {32: 50, 64: 30}
    seen = {tuple(x.tolist()) for b in epoch if b["input_ids"].shape[1] == 32 for x in b["input_ids"]}
    assert seen == {tuple(x.tolist()) for x in dm.train.inputs[0]}
    second = take(dm, 2 * dm.batches_per_epoch)[dm.batches_per_epoch :]
    assert not same(epoch, second)
    assert same(take(dm, 5), take(small_module(), 5))
    val = list(dm.val_dataloader())
    assert [tuple(b["input_ids"].shape) for b in val] == [(4, 32)] * 3 + [(4, 128), (4, 128), (1, 128)]
    assert [b["num_kv_pairs"][0].item() for b in val] == [4] * 3 + [16] * 3


def test_unshuffled_order_is_zoologys():
    dm = small_module(shuffle=False)
    dm.setup()
    batches = take(dm, 8)
    assert torch.equal(batches[0]["input_ids"], dm.train.inputs[0][:8].long())
    assert torch.equal(batches[6]["input_ids"], dm.train.inputs[0][48:].long())
    assert torch.equal(batches[7]["labels"], dm.train.labels[1][:8].long())


@pytest.mark.parametrize("skip", [0, 3, 11, 17])
def test_resume_sees_the_uninterrupted_batches(skip):
    full = take(small_module(), 30)
    dm = small_module()
    dm.load_state_dict({"batches_seen": skip})
    assert dm.state_dict() == {"batches_seen": skip}
    assert same(take(dm, 30 - skip), full[skip:])


def test_state_dict_counts_optimizer_steps_times_accumulation_and_ranks_interleave():
    dm = small_module()
    dm.trainer = SimpleNamespace(global_step=3, accumulate_grad_batches=2, global_rank=0, world_size=1)
    assert dm.state_dict() == {"batches_seen": 6}
    full = take(small_module(), 24)
    ranks = []
    for rank in (0, 1):
        dm = small_module()
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2)
        dm.load_state_dict({"batches_seen": 2})
        ranks.append(take(dm, 10))
    assert same([b for pair in zip(*ranks, strict=True) for b in pair], full[4:])


def test_workers_preserve_the_order():
    dm = small_module(num_workers=2)
    dm.load_state_dict({"batches_seen": 5})
    assert same(take(dm, 9), take(small_module(), 14)[5:])
