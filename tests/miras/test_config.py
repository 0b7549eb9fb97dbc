import dataclasses

import pytest

from miras.config import (
    ConfigError,
    DataConfig,
    MixerConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    config_hash,
    from_dict,
    override,
    to_dict,
)


@pytest.mark.parametrize(
    "build, field, allowed",
    [
        (lambda: MixerConfig(name="attn"), "mixer.name='attn'", "'transformer'"),
        (lambda: MixerConfig(backend="cuda"), "mixer.backend='cuda'", "'triton'"),
        (lambda: MixerConfig(window=0), "mixer.window=0", "> 0"),
        (lambda: ModelConfig(d_model=100, mixer=MixerConfig(n_head=16)), "model.d_model=100", "multiple of"),
        (lambda: ModelConfig(n_layer=0), "model.n_layer=0", "> 0"),
        (lambda: OptimConfig(beta2=1.5), "optim.beta2=1.5", "[0, 1)"),
        (lambda: OptimConfig(min_lr_ratio=2.0), "optim.min_lr_ratio=2.0", "[0, 1]"),
        (lambda: DataConfig(dataset="fineweb-xl"), "data.dataset='fineweb-xl'", "'offline'"),
        (lambda: DataConfig(dataset="local"), "data.path", "folder"),
        (lambda: TrainConfig(precision="bf16"), "train.precision='bf16'", "'bf16-mixed'"),
    ],
)
def test_invalid_values_name_field_and_allowed_values(build, field, allowed):
    with pytest.raises(ConfigError) as err:
        build()
    assert field in str(err.value) and "allowed values" in str(err.value) and allowed in str(err.value)


def test_override_parses_literals_and_rejects_unknown_fields():
    config = override(
        RunConfig(),
        [
            "model.d_model=64",
            "model.mixer.n_head=4",
            "optim.lr=1e-3",
            "model.mixer.window=None",
            "data.path=/tmp/x",
            "data.dataset=local",
        ],
    )
    assert (config.model.d_model, config.model.mixer.n_head, config.optim.lr) == (64, 4, 1e-3)
    assert config.data.path == "/tmp/x" and config.model.mixer.window is None
    with pytest.raises(ConfigError, match="no field 'dmodel'.*d_model"):
        override(RunConfig(), ["model.dmodel=64"])
    with pytest.raises(ConfigError, match="section.field=value"):
        override(RunConfig(), ["model.d_model"])
    # validation runs again on the overridden value
    with pytest.raises(ConfigError, match="model.d_model=65"):
        override(RunConfig(), ["model.d_model=65"])


def test_accumulation_fills_batch_tokens_or_fails():
    config = RunConfig(data=DataConfig(seq_len=128, batch_size=4), train=TrainConfig(batch_tokens=2048, tokens=10_000))
    assert config.accumulation(1) == 4 and config.accumulation(2) == 2 and config.steps() == 5
    with pytest.raises(ConfigError, match="train.batch_tokens=2048.*1536"):
        config.accumulation(3)


def test_round_trip_and_hash():
    config = override(RunConfig(), ["model.d_model=64", "model.mixer.n_head=4"])
    again = from_dict(RunConfig, to_dict(config))
    assert again == config and config_hash(again) == config_hash(config)
    assert config_hash(config) != config_hash(override(config, ["optim.lr=1e-2"]))
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RunConfig, {**to_dict(config), "extra": 1})


def test_fields_added_later_leave_old_hashes_alone_until_they_are_changed():
    import hashlib
    import json

    from kernels.miras import MemorySpec
    from miras.config import ADDED_FIELDS

    config = RunConfig()
    # a memory spec, so that the fields added to it are there to leave out
    mixer = dataclasses.replace(config.model.mixer, name="miras", memory=MemorySpec())
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, mixer=mixer))
    before = to_dict(config)
    for path in ADDED_FIELDS:
        *parents, name = path.split(".")
        node = before
        for key in parents:
            node = node[key]
        del node[name]
    old_hash = hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert config_hash(config) == old_hash
    assert config_hash(override(config, ["data.packing=varlen"])) != old_hash
    assert config_hash(override(config, ["data.name=sample-10BT"])) != old_hash


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("model.n_layer=abc", "model.n_layer='abc' is invalid; allowed values: an integer"),
        ("model.n_layer=2.5", "model.n_layer='2.5' is invalid; allowed values: an integer"),
        ("optim.lr=nan", "optim.lr='nan' is invalid; allowed values: a finite number"),
        ("optim.lr=inf", "optim.lr='inf' is invalid; allowed values: a finite number"),
        ("train.early_stop=nan", "train.early_stop='nan' is invalid; allowed values: None or a finite number"),
        ("data.streaming=maybe", "data.streaming='maybe' is invalid; allowed values: True or False"),
        ("model.mixer.window=wide", "model.mixer.window='wide' is invalid; allowed values: None or an integer"),
        ("data.mqar=8", "data.mqar='8' is invalid; allowed values: None or a dict of MQARConfig fields"),
        ("model.n_layer.depth=2", "model.n_layer is not a section, so model.n_layer.depth cannot be set"),
    ],
)
def test_an_override_that_does_not_parse_names_field_value_and_allowed_values(assignment, message):
    with pytest.raises(ConfigError) as err:
        override(RunConfig(), ["data.path=x", assignment])
    assert str(err.value) == message


def test_overrides_are_parsed_by_the_declared_type():
    config = override(
        RunConfig(),
        ["train.tokens=1e6", "data.streaming=false", "model.tie_embeddings=yes", "data.name=10", "optim.lr=1"],
    )
    assert config.train.tokens == 1_000_000 and isinstance(config.train.tokens, int)
    assert config.data.streaming is False and config.model.tie_embeddings is True and config.data.name == "10"
    # a float field keeps an int as given, so a config (and its hash) is what it was before overrides were typed
    assert config.optim.lr == 1 and isinstance(config.optim.lr, int)
    mqar = override(RunConfig(), ["data.mqar={'pairs': 4}", "data.dataset=mqar", "data.seq_len=64"]).data.mqar
    assert mqar.pairs == 4 and mqar.seed == 123


@pytest.mark.parametrize(
    "assignments",
    [
        ["data.dataset=memmap", "data.path=shards"],
        ["model.d_model=99", "model.mixer.n_head=3"],
        ["data.dataset=mqar", "data.mqar={'pairs': 2}", "data.seq_len=16"],
    ],
)
def test_overrides_are_validated_together_in_any_order(assignments):
    # the first assignment alone is invalid: applied one at a time, it failed whatever came after it
    with pytest.raises(ConfigError):
        override(RunConfig(), assignments[:1])
    forward, backward = override(RunConfig(), assignments), override(RunConfig(), assignments[::-1])
    assert forward == backward


def test_bad_overrides_fail_the_same_way_in_both_orders():
    for assignments in (["model.n_layer=abc", "optim.lr=nan"], ["optim.lr=nan", "model.n_layer=abc"]):
        with pytest.raises(ConfigError, match="=.* is invalid; allowed values: "):
            override(RunConfig(), assignments)
    wrong = ["data.dataset=memmap", "model.d_model=100"]
    messages = set()
    for assignments in (wrong, wrong[::-1]):
        with pytest.raises(ConfigError) as err:
            override(RunConfig(), assignments)
        messages.add(str(err.value))
    assert len(messages) == 1


def test_a_run_validates_its_command_line_overrides_once(tmp_path):
    from miras.experiment import Run

    run = Run("r", "R", "g", "transformer-340m")
    sets = ("data.dataset=memmap", f"data.path={tmp_path}")
    assert run.config("smoke", sets, seed=3) == run.config("smoke", sets[::-1], seed=3)
    assert run.config("smoke", sets, seed=3).train.seed == 3
    with pytest.raises(ConfigError, match="train.seed='x' is invalid; allowed values: an integer"):
        run.config("smoke", ("train.seed=x",))
