import pytest

from miras.config import ConfigError, override
from miras.presets import preset
from miras.scales import apply_scale


def test_tiny_keeps_sizes_ordered_and_shrinks_width_and_depth():
    widths = [apply_scale(preset(f"moneta-{s}"), "tiny").model.d_model for s in ("340m", "780m", "1.3b")]
    assert widths == sorted(widths) and widths[0] == 128
    tiny = apply_scale(preset("moneta-340m"), "tiny")
    assert tiny.model.n_layer == 4 and tiny.model.d_model // tiny.model.mixer.n_head == 32
    assert tiny.model.mixer.memory == preset("moneta-340m").model.mixer.memory


@pytest.mark.parametrize("scale, ratio", [("small", 2), ("tiny", 16)])
def test_contexts_shrink_in_proportion_at_fixed_tokens_per_step(scale, ratio):
    configs = [apply_scale(preset("moneta-340m", [f"data.seq_len={n}"]), scale) for n in (2048, 4096, 16384)]
    assert [c.data.seq_len for c in configs] == [2048 // ratio, 4096 // ratio, 16384 // ratio]
    assert len({c.data.seq_len * c.data.batch_size * c.accumulation() for c in configs}) == 1


def test_unknown_scale_is_named():
    with pytest.raises(ConfigError, match="scale='huge' is invalid; allowed values: paper, small, tiny, smoke"):
        apply_scale(override(preset("transformer-340m"), []), "huge")
