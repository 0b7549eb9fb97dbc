"""Byte-level BPE tokenizer trained on the offline corpus."""

from __future__ import annotations

import hashlib
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


EOS_CANDIDATES = (EOS, "</s>", "<eos>", "<|end_of_text|>")
LLAMA2 = "meta-llama/Llama-2-7b-hf"


def load_tokenizer(spec: str | Path, field: str = "data.tokenizer") -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` path, a SentencePiece ``.model`` path or a Hub repo id.

    A Hub id (``meta-llama/Llama-2-7b-hf``, the Llama-2 32K tokenizer of the papers' recipe) is read from the
    local Hub cache first and downloaded when online. Errors name ``field``, the config field that chose it.
    """
    path = Path(spec)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(
                f"{field}={str(spec)!r}: no tokenizer file there; build the offline corpus with `make install` "
                "or set the field to a tokenizer.json path, a SentencePiece .model path or a Hub repo id"
            )
        if path.suffix == ".model":
            return _from_sentencepiece(path, field)
        return Tokenizer.from_file(str(path))
    if path.suffix == ".model":
        raise FileNotFoundError(f"{field}={str(spec)!r}: no SentencePiece model there")
    try:
        return Tokenizer.from_pretrained(str(spec))
    except Exception as exc:  # the Hub client raises several unrelated types for "not cached and offline"
        raise FileNotFoundError(
            f"{field}={str(spec)!r}: cannot load this Hub tokenizer ({type(exc).__name__}); when offline, "
            "set the field to a local tokenizer.json or SentencePiece .model path"
        ) from exc


def _from_sentencepiece(path: Path, field: str) -> Tokenizer:
    try:
        from transformers import LlamaTokenizerFast
    except ImportError as exc:
        raise ImportError(f"{field}={str(path)!r}: reading a .model file needs `transformers`") from exc
    try:
        fast = LlamaTokenizerFast(vocab_file=str(path))
    except Exception as exc:
        raise ValueError(
            f"{field}={str(path)!r}: cannot convert this SentencePiece model ({exc}); install `sentencepiece` "
            "and `protobuf`, or give a tokenizer.json"
        ) from exc
    return fast.backend_tokenizer


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """Hash of a tokenizer's full serialisation: two tokenizers with the same hash encode alike."""
    return hashlib.sha256(tokenizer.to_str().encode()).hexdigest()


def eos_id(tokenizer: Tokenizer) -> int:
    """Id of the end-of-text token (``<|endoftext|>`` of our BPE, ``</s>`` of Llama's SentencePiece, ...)."""
    for token in EOS_CANDIDATES:
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id
    raise ValueError(f"tokenizer has none of the end-of-text tokens {EOS_CANDIDATES}")
