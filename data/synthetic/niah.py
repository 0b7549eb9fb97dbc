"""S-NIAH: RULER's three single-needle haystack tasks, generated offline for a given tokenizer.

The tasks follow RULER (Hsieh et al., 2024) as ported into lm-evaluation-harness
(``lm_eval/tasks/ruler/niah_utils.py``, ``prepare_niah.py``, ``niah_single_1.yaml``, ``common_utils.py``):

=============  ========  ====  ==============
task           haystack  key   value
=============  ========  ====  ==============
niah_single_1  repeat    word  7-digit number
niah_single_2  essay     word  7-digit number
niah_single_3  essay     word  uuid4
=============  ========  ====  ==============

The strings ``TEMPLATE``, ``NEEDLE``, ``REPEAT_HAYSTACK`` and the answer prefix, the 40 ``DEPTHS``,
``tokens_to_generate=128`` and the string-match-all metric are RULER's task definition and are reproduced
exactly. lm-eval renders a base-model prompt as ``input + " " + gen_prefix``, decodes greedily for up to
128 tokens and scores the continuation with :func:`score_niah`.

Substitutions of RULER's setup (forced by working offline or chosen for exact lengths):

- Keys: RULER draws ``adjective-noun`` from the cross product of wonderwords' adjective and noun lists. We
  use the same format over our own ``ADJECTIVES`` x ``NOUNS`` (129 x 179 = 23,091 keys instead of wonderwords' set).
- Essay haystack: RULER uses Paul Graham's essays. We take any documents the caller passes
  (``haystack_texts``, e.g. the ``text`` column of the offline corpus shards), joined and cut into
  words as RULER does; documents are read lazily, only as many as the context needs.
- Sentence splitting: RULER places the essay needle at an nltk punkt sentence boundary. We split after a
  word ending in ``.``, ``!`` or ``?`` (closing quotes or brackets allowed) when the next word starts with
  an ASCII capital, a digit or an opening quote.
- Repeat-haystack placement: RULER inserts the needle before a uniformly random line. We draw a depth
  from ``depths`` for both haystacks and insert before line ``int(n * depth / 100)``, so every sample
  records its depth; the placement distribution stays near-uniform over the context.
- Haystack size: RULER grows the haystack in steps of 500 words (essay) or 25 repeats (5 below 4096
  tokens), sizes it once and shrinks a sample by a step on overflow, so prompts can fall hundreds of tokens
  short. We search per sample for the largest number of units (words or repeats) with
  ``len(encode(input)) + len(encode(answer)) + tokens_to_generate <= max_seq_length``, so every prompt is
  within one unit of the budget. RULER encodes ``input + answer`` as one string, which can differ only by a
  merge at the seam; counting the parts lets ``length`` reuse the search's count. RULER silently uses a
  too-short essay haystack whole; we raise.
- Randomness: RULER uses the global ``random`` state; we use ``random.Random(seed)`` per call, drawing key,
  value and depth per sample in that order. Samples are deterministic but not lm-eval's.
- ``length``: lm-eval stores ``len(encode(input)) + tokens_to_generate``; we store ``len(encode(input))``.
"""

from __future__ import annotations

import random
import re
import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

TASKS: dict[str, tuple[str, str]] = {
    "niah_single_1": ("repeat", "numbers"),
    "niah_single_2": ("essay", "numbers"),
    "niah_single_3": ("essay", "uuids"),
}
"""task -> (haystack type, value type), as in lm-eval's ``niah_utils.py``; keys are always words."""

TEMPLATE = (
    "A special magic {type_needle_v} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What is the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
"""RULER's niah prompt after its single-needle rewrite ("Some" -> "A", "are all"/"are" -> "is",
plural -> singular ``type_needle_v``), from lm-eval ``niah_utils.py`` and ``prepare_niah.py``."""

NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
"""RULER's needle (lm-eval ``prepare_niah.py``); ``type_needle_v`` stays plural ("numbers", "uuids")."""

GEN_PREFIX = "The special magic {type_needle_v} for {query} mentioned in the provided text is"
"""RULER's single-needle answer prefix (lm-eval ``prepare_niah.py``), with singular ``type_needle_v``."""

REPEAT_HAYSTACK = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
"""RULER's "repeat" haystack line (lm-eval ``prepare_niah.py``)."""

DEPTHS: tuple[int, ...] = tuple(round(i * 100 / 39) for i in range(40))
"""RULER's 40 insertion depths in percent: ``np.round(np.linspace(0, 100, 40))``."""

ADJECTIVES = (
    "able", "active", "afraid", "ancient", "angry", "anxious", "bold", "brave", "brief", "bright", "broad",
    "broken", "busy", "calm", "careful", "cheap", "clean", "clear", "clever", "cold", "common", "cool",
    "curious", "dark", "deep", "eager", "early", "easy", "empty", "equal", "exact", "fair", "famous", "fancy",
    "fast", "fierce", "fine", "firm", "flat", "fresh", "friendly", "funny", "gentle", "giant", "glad",
    "golden", "grand", "great", "green", "happy", "hard", "heavy", "hidden", "honest", "huge", "humble",
    "hungry", "icy", "kind", "large", "late", "lazy", "light", "little", "lively", "lonely", "loud", "lucky",
    "mighty", "modern", "narrow", "neat", "nervous", "noble", "odd", "old", "pale", "patient", "plain",
    "polite", "proud", "quick", "quiet", "rapid", "rare", "red", "rich", "rough", "round", "royal", "rural",
    "sharp", "shiny", "short", "shy", "silent", "silver", "simple", "slow", "small", "smooth", "soft",
    "solid", "sour", "steady", "strange", "strict", "strong", "sudden", "sweet", "swift", "tall", "tame",
    "tender", "thick", "thin", "tidy", "tiny", "tough", "vast", "warm", "wet", "white", "wide", "wild",
    "wise", "witty", "young", "zealous",
)  # fmt: skip
"""Our adjective list for keys, standing in for wonderwords' (not available offline)."""

NOUNS = (
    "actor", "airport", "anchor", "animal", "apple", "arrow", "artist", "autumn", "baker", "balloon",
    "banana", "basket", "beach", "bear", "bell", "bicycle", "bird", "blanket", "boat", "book", "bottle",
    "bridge", "brother", "bucket", "butter", "cabin", "camera", "candle", "canyon", "captain", "carpet",
    "castle", "cat", "cave", "chair", "cheese", "cherry", "circle", "city", "cloud", "coast", "coffee",
    "comet", "copper", "cottage", "cousin", "crayon", "crown", "cup", "desert", "diamond", "doctor", "dog",
    "dolphin", "door", "dragon", "dream", "drum", "eagle", "engine", "farmer", "feather", "field", "finger",
    "fire", "fish", "flag", "flower", "forest", "fountain", "fox", "garden", "ghost", "giraffe", "glass",
    "glove", "goat", "guitar", "hammer", "harbor", "hat", "helmet", "hill", "horse", "island", "jacket",
    "jungle", "kettle", "king", "kitchen", "kite", "ladder", "lake", "lamp", "lemon", "letter", "library",
    "lion", "lizard", "machine", "magnet", "map", "market", "meadow", "mirror", "monkey", "moon", "mountain",
    "museum", "ocean", "octopus", "orange", "owl", "painter", "palace", "panda", "paper", "parrot", "pencil",
    "pepper", "piano", "pillow", "pilot", "planet", "pocket", "pond", "potato", "puzzle", "queen", "rabbit",
    "radio", "rainbow", "river", "robot", "rocket", "saddle", "sailor", "school", "shadow", "sheep", "shell",
    "ship", "singer", "sister", "spoon", "squirrel", "star", "station", "statue", "stone", "storm", "street",
    "sugar", "sunset", "table", "teacher", "temple", "tiger", "tomato", "tower", "tractor", "train",
    "treasure", "tree", "trumpet", "tunnel", "turtle", "umbrella", "valley", "village", "violin", "wagon",
    "wallet", "whale", "window", "winter", "wizard", "wolf", "zebra",
)  # fmt: skip
"""Our noun list for keys, standing in for wonderwords' (not available offline)."""

_KEYS = sorted({f"{adj}-{noun}" for adj in ADJECTIVES for noun in NOUNS})
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019]*$")
_SENTENCE_START = re.compile(r"[\"'(\[\u201c\u2018]*[A-Z0-9]")


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have an encode(text) method, got {type(tokenizer).__name__}")

    def count(text: str) -> int:
        encoded = tokenizer.encode(text)
        # a tokenizers.Tokenizer returns an Encoding; other tokenizers return the ids
        return len(getattr(encoded, "ids", encoded))

    return count


class _RepeatHaystack:
    """``n`` copies of ``REPEAT_HAYSTACK``, one per line; unbounded, so ``size`` is only a search bound."""

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)

    def grow(self) -> bool:
        self.size *= 2
        return True

    def context(self, n: int, depth: int, needle: str) -> str:
        lines = [REPEAT_HAYSTACK] * n
        lines.insert(int(n * (depth / 100)), needle)
        return "\n".join(lines)


class _EssayHaystack:
    """The first ``n`` whitespace-separated words of the concatenated documents, read lazily."""

    def __init__(self, texts: Iterable[str], min_words: int) -> None:
        self._docs = iter(texts)
        self.words: list[str] = []
        self._read(min_words)

    @property
    def size(self) -> int:
        return len(self.words)

    def grow(self) -> bool:
        before = len(self.words)
        self._read(2 * before)
        return len(self.words) > before

    def _read(self, min_words: int) -> None:
        while len(self.words) < min_words:
            doc = next(self._docs, None)
            if doc is None:
                break
            self.words.extend(doc.split())
        words = self.words
        self._starts = [0] + [
            i + 1
            for i in range(len(words) - 1)
            if _SENTENCE_END.search(words[i]) and _SENTENCE_START.match(words[i + 1])
        ]

    def context(self, n: int, depth: int, needle: str) -> str:
        n_sentences = bisect_left(self._starts, n)
        k = int(n_sentences * (depth / 100))
        cut = self._starts[k] if k < n_sentences else n
        # joined as RULER does: an empty side (depth 0 or 100) leaves a stray space around the needle
        return " ".join([" ".join(self.words[:cut]), needle, " ".join(self.words[cut:n])])


def _largest_fitting(fits: Callable[[int], bool], guess: int, upper: int) -> int:
    """Largest ``n`` in ``[1, upper]`` with ``fits(n)`` (monotone), galloping out from ``guess``; 0 if none."""
    guess = min(max(guess, 1), upper)
    if fits(guess):
        lo, step = guess, 1
        while True:
            hi = min(lo + step, upper + 1)
            if hi > upper or not fits(hi):
                break
            lo, step = hi, 2 * step
    else:
        hi, step = guess, 1
        while True:
            lo = max(hi - step, 0)
            if lo == 0 or fits(lo):
                break
            hi, step = lo, 2 * step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _render(
    haystack: _RepeatHaystack | _EssayHaystack, type_needle_v: str, key: str, depth: int, needle: str, n: int
) -> str:
    context = haystack.context(n, depth, needle)
    return TEMPLATE.format(type_needle_v=type_needle_v, context=context, query=key)


def _fit(
    haystack: _RepeatHaystack | _EssayHaystack,
    count: Callable[[str], int],
    render: Callable[[int], str],
    budget: int,
    guess: int,
) -> tuple[int, int]:
    """Largest haystack size ``n`` with ``count(render(n)) <= budget`` and that count; ``(0, 0)`` if none fits.

    The haystack grows while all of it fits.
    """
    counts: dict[int, int] = {}

    def fits(n: int) -> bool:
        counts[n] = count(render(n))
        return counts[n] <= budget

    n = _largest_fitting(fits, guess, haystack.size)
    while n == haystack.size and haystack.grow():
        n = _largest_fitting(fits, n, haystack.size)
    return n, counts.get(n, 0)


def _random_value(rng: random.Random, type_needle_v: str) -> str:
    if type_needle_v == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate_niah(
    task: str,
    tokenizer: Any,
    max_seq_length: int,
    num_samples: int = 500,
    seed: int = 42,
    depths: Sequence[int] = DEPTHS,
    haystack_texts: Iterable[str] | None = None,
    tokens_to_generate: int = 128,
) -> list[dict[str, Any]]:
    """Generate ``num_samples`` RULER single-needle samples whose prompts fill ``max_seq_length`` tokens.

    Args:
        task: one of ``TASKS`` (``niah_single_1``, ``niah_single_2``, ``niah_single_3``).
        tokenizer: an object whose ``encode(text)`` returns a list of ids, or a ``tokenizers.Tokenizer``
            (whose ``encode`` returns an ``Encoding`` with ``.ids``); lengths are counted with it.
        max_seq_length: token budget of prompt + answer + ``tokens_to_generate``.
        num_samples: number of samples.
        seed: seed of the call's private RNG; same seed, tokenizer and haystack give the same samples.
        depths: insertion depths in percent (0 = start of the haystack, 100 = end), drawn uniformly per sample.
        haystack_texts: documents for the essay haystack (``niah_single_2``/``3``); ignored for ``niah_single_1``.
        tokens_to_generate: tokens reserved for the model's answer (RULER: 128).

    Returns:
        ``num_samples`` dicts with ``index`` (int), ``task`` (str), ``input`` (str, the templated prompt),
        ``gen_prefix`` (str, answer prefix that lm-eval appends after a space), ``outputs`` (list[str], the
        single answer), ``length`` (int, tokens of ``input``), ``depth`` (int, percent) and ``max_length``
        (int, ``max_seq_length``).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not depths or any(not 0 <= d <= 100 for d in depths):
        raise ValueError(f"depths must be a non-empty sequence of percentages in [0, 100], got {depths!r}")
    if num_samples < 0 or tokens_to_generate < 0:
        raise ValueError(f"num_samples and tokens_to_generate must be >= 0, got {num_samples} and {tokens_to_generate}")
    type_haystack, type_needle_v = TASKS[task]
    if type_haystack == "essay":
        if haystack_texts is None:
            raise ValueError(f"haystack_texts must be an iterable of documents for {task} (essay haystack), got None")
        haystack: _RepeatHaystack | _EssayHaystack = _EssayHaystack(haystack_texts, max(max_seq_length, 1))
        if haystack.size == 0:
            raise ValueError(f"haystack_texts must hold at least one word for {task}, got no words")
    else:
        haystack = _RepeatHaystack(max_seq_length)
    count = _token_counter(tokenizer)
    singular = type_needle_v[:-1]
    rng = random.Random(seed)
    samples = []
    n = 1
    for index in range(num_samples):
        key = rng.choice(_KEYS)
        value = _random_value(rng, type_needle_v)
        depth = int(rng.choice(depths))
        needle = NEEDLE.format(type_needle_v=type_needle_v, key=key, value=value)
        render = partial(_render, haystack, singular, key, depth, needle)
        n, length = _fit(haystack, count, render, max_seq_length - tokens_to_generate - count(value), guess=n)
        if n == 0:
            need = count(render(1)) + count(value) + tokens_to_generate
            raise ValueError(
                f"max_seq_length must be at least {need} for {task} (template, needle, one haystack unit, answer and "
                f"tokens_to_generate={tokens_to_generate}), got {max_seq_length}"
            )
        if n == haystack.size:
            raise ValueError(
                f"haystack_texts must hold more than {n} words to fill max_seq_length={max_seq_length} for {task}"
            )
        samples.append(
            {
                "index": index,
                "task": task,
                "input": render(n),
                "gen_prefix": GEN_PREFIX.format(type_needle_v=singular, query=key),
                "outputs": [value],
                "length": length,
                "depth": depth,
                "max_length": max_seq_length,
            }
        )
    return samples


def score_niah(prediction: str, outputs: list[str]) -> float:
    """RULER's ``string_match_all`` for one sample: fraction of ``outputs`` found in ``prediction``.

    Matching is case-insensitive substring search after RULER's post-processing (strip, control
    characters to newlines). Returns a float in ``[0, 1]``.
    """
    if not outputs:
        raise ValueError("outputs must be a non-empty list of reference strings, got []")
    pred = re.sub(r"[\x00-\x1f]", "\n", prediction.strip()).strip().lower()
    return sum(ref.lower() in pred for ref in outputs) / len(outputs)
