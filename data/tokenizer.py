"""Byte-level BPE tokenizer trained on the offline corpus."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOS = "<|endoftext|>"


def train_bpe(texts: Iterable[str], vocab_size: int, path: str | Path) -> Tokenizer:
    """Train a byte-level BPE tokenizer (``EOS`` is the only special token, id 0) and save it to ``path``."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"vocab_size must be at least {len(alphabet) + 1} (bytes + EOS), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path))
    return tokenizer


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a tokenizer.json written by :func:`train_bpe`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer not found at {path}; build the offline corpus with `make install` (or `python -m data.corpus`)"
        )
    return Tokenizer.from_file(str(path))


def eos_id(tokenizer: Tokenizer) -> int:
    """Id of the end-of-text token."""
    token_id = tokenizer.token_to_id(EOS)
    if token_id is None:
        raise ValueError(f"tokenizer has no {EOS} token")
    return token_id
