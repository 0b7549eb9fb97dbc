import json

import lightning as L
import pytest
import torch

from miras.config import (
    ConfigError,
    DataConfig,
    MixerConfig,
    ModelConfig,
    MQARConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    override,
)
from miras.lit import LanguageModelModule
from miras.lit.lm_module import warmup_cosine
from miras.models import LanguageModel
from miras.train import build_datamodule, train


def small_run(corpus, steps=12, **data) -> RunConfig:
    return RunConfig(
        model=ModelConfig(vocab_size=300, d_model=32, n_layer=2, mixer=MixerConfig(n_head=4)),
        optim=OptimConfig(lr=3e-3, warmup_fraction=0.1),
        data=DataConfig(
            dataset="local",
            path=str(corpus),
            tokenizer=str(corpus / "tokenizer.json"),
            seq_len=32,
            batch_size=4,
            val_batches=2,
            shuffle_buffer=50,
            **data,
        ),
        train=TrainConfig(
            tokens=128 * steps, batch_tokens=128, precision="32-true", val_every=4, ckpt_every=4, log_every=2
        ),
    )


META = {"paper": "test", "table": "t", "run": "r", "seed": 0, "scale": "smoke"}


def test_warmup_cosine_schedule():
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_fast_dev_run_on_shards(tiny_corpus, tmp_path):
    config = small_run(tiny_corpus)
    module = LanguageModelModule(LanguageModel(config.model), config)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=build_datamodule(config))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert torch.isfinite(trainer.callback_metrics["val/ppl"])


def test_vocab_larger_than_model_is_a_config_error(tiny_corpus):
    from miras.config import ConfigError, override

    with pytest.raises(ConfigError, match="model.vocab_size=100 .*>= 300"):
        build_datamodule(override(small_run(tiny_corpus), ["model.vocab_size=100"]))


class Interrupt(Exception):
    pass


class KillAt(L.Callback):
    """Simulates a killed job: raises before training step ``step`` (after the checkpoint of step - 2)."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Interrupt


def test_resume_after_interruption_matches_uninterrupted_run(tiny_corpus, tmp_path):
    config = small_run(tiny_corpus)
    whole = train(config, tmp_path / "a" / "t" / "r" / "seed0", META, progress=False, accelerator="cpu")

    out = tmp_path / "b" / "t" / "r" / "seed0"
    with pytest.raises(Interrupt):
        train(config, out, META, progress=False, accelerator="cpu", callbacks=[KillAt(6)])
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "summary.json").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train(config, out, META, progress=False, accelerator="cpu")
    resumed = train(config, out, META, resume=True, progress=False, accelerator="cpu")

    assert whole["steps"] == resumed["steps"] == 12 and whole["tokens"] == 12 * 128
    for key in ("train/loss", "val/loss", "val/ppl"):
        assert resumed["metrics"][key] == pytest.approx(whole["metrics"][key], rel=1e-5), key
    assert whole["metrics"]["val/loss"] < 5.0  # log(300) = 5.7 at initialisation


def test_run_folder_holds_config_events_and_summary(tiny_corpus, tmp_path):
    out = tmp_path / "runs" / "t" / "r" / "seed0"
    summary = train(small_run(tiny_corpus, steps=6), out, META, progress=False, accelerator="cpu")
    saved = json.loads((out / "config.json").read_text())
    assert saved["config_hash"] == summary["config_hash"] and saved["meta"] == META
    assert list(out.glob("events.out.tfevents.*"))
    assert json.loads((out / "summary.json").read_text()) == summary
    assert {"run", "seed", "scale", "git", "device", "tokens", "wall_s"} <= summary.keys()
    assert {"train/loss", "val/loss", "val/ppl"} <= summary["metrics"].keys()

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out))
    events.Reload()
    assert {"train/loss", "val/loss", "val/ppl"} <= set(events.Tags()["scalars"])
    # steps=6 is not a multiple of val_every=4: a final validation after the last step still runs
    assert events.Scalars("val/loss")[-1].step == 6


class RecordBatches(L.Callback):
    """Keeps the input ids of every training batch, by global step."""

    def __init__(self):
        self.batches = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.batches[trainer.global_step] = batch["input_ids"].clone()


@pytest.mark.parametrize("dataset", ["local", "memmap"])
def test_resumed_run_sees_exactly_the_uninterrupted_runs_tokens(tiny_corpus, prepared_corpus, tmp_path, dataset):
    config = small_run(tiny_corpus, steps=8)
    if dataset == "memmap":
        config = override(config, ["data.dataset=memmap", f"data.path={prepared_corpus}"])
    whole, cut, resumed = RecordBatches(), RecordBatches(), RecordBatches()
    train(config, tmp_path / "a" / "seed0", META, progress=False, accelerator="cpu", callbacks=[whole])
    out = tmp_path / "b" / "seed0"
    with pytest.raises(Interrupt):
        train(config, out, META, progress=False, accelerator="cpu", callbacks=[cut, KillAt(6)])
    train(config, out, META, resume=True, progress=False, accelerator="cpu", callbacks=[resumed])
    assert sorted(whole.batches) == list(range(8)) and sorted(resumed.batches) == [4, 5, 6, 7]
    for step in range(8):
        seen = resumed.batches[step] if step >= 4 else cut.batches[step]
        assert torch.equal(seen, whole.batches[step]), step


@pytest.mark.parametrize("mixer", ["transformer", "gated_deltanet"])
def test_varlen_packing_trains(tiny_corpus, mixer):
    config = override(small_run(tiny_corpus), ["data.packing=varlen", f"model.mixer.name={mixer}"])
    module = LanguageModelModule(LanguageModel(config.model), config)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False)
    trainer.fit(module, datamodule=build_datamodule(config))
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def mqar_run(steps=8, early_stop=None) -> RunConfig:
    return RunConfig(
        model=ModelConfig(vocab_size=32, d_model=16, n_layer=1, mlp=False, mixer=MixerConfig(n_head=1)),
        optim=OptimConfig(lr=1e-2, warmup_fraction=0.0),
        data=DataConfig(
            dataset="mqar", seq_len=16, batch_size=4, val_batches=2, mqar=MQARConfig(pairs=2, train_examples=16,
                                                                                     test_examples=8)
        ),
        train=TrainConfig(
            tokens=64 * steps,
            batch_tokens=64,
            precision="32-true",
            val_every=4,
            ckpt_every=4,
            log_every=1,
            early_stop=early_stop,
        ),
    )  # fmt: skip


def test_mqar_validation_logs_zoology_accuracy_over_the_queried_tokens_alone(tmp_path):
    config = mqar_run()
    data = build_datamodule(config)
    data.setup()
    module = LanguageModelModule(LanguageModel(config.model), config)
    batch = next(iter(data.val_dataloader()))
    logits, _ = module.model(batch["input_ids"])
    labels = batch["labels"]
    expected = (logits.argmax(-1) == labels)[labels != -100].float().mean()
    module.validation_step(batch, 0)
    torch.testing.assert_close(module.val_accuracy.compute(), expected)
    assert (labels != -100).sum() == 4 * 2  # every example has its two queries scored, nothing else

    summary = train(config, tmp_path / "r" / "seed0", META, progress=False, accelerator="cpu")
    assert summary["steps"] == 8 and {"val/accuracy", "val/loss"} <= summary["metrics"].keys()


class PerfectRecall(LanguageModelModule):
    """Validates every model as perfect, so that an early stop is certain."""

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        self.val_accuracy.reset()
        self.val_accuracy.update(torch.tensor(1.0))


def test_an_early_stop_ends_training_at_that_validation_and_writes_its_summary(tmp_path, monkeypatch):
    monkeypatch.setattr("miras.train.LanguageModelModule", PerfectRecall)
    out = tmp_path / "r" / "seed0"
    summary = train(mqar_run(early_stop=0.99), out, META, progress=False, accelerator="cpu")
    assert summary["steps"] == 4 and summary["tokens"] == 4 * 64 and summary["metrics"]["val/accuracy"] == 1.0
    assert (out / "checkpoints" / "last.ckpt").exists()
    assert train(mqar_run(early_stop=None), tmp_path / "u", META, progress=False, accelerator="cpu")["steps"] == 8


def test_mqar_data_needs_its_task_and_pairs_that_fit():
    with pytest.raises(ConfigError, match=r"data\.mqar=None is invalid with data\.dataset='mqar'"):
        DataConfig(dataset="mqar", seq_len=16)
    with pytest.raises(ConfigError, match=r"data\.mqar\.pairs=5 is invalid at data\.seq_len=16; .*at most .* 4"):
        DataConfig(dataset="mqar", seq_len=16, mqar=MQARConfig(pairs=5))
    with pytest.raises(ConfigError, match=r"train\.early_stop=1\.5 is invalid"):
        TrainConfig(early_stop=1.5)
