from __future__ import annotations

import itertools
import random
import re
import uuid

import numpy as np
import pytest

from data.synthetic.niah import (
    ADJECTIVES,
    DEPTHS,
    NEEDLE,
    NOUNS,
    REPEAT_HAYSTACK,
    TASKS,
    TEMPLATE,
    generate_niah,
    score_niah,
)
from data.tokenizer import train_bpe

# RULER's multi-needle template as written in lm-eval's niah_utils.py, before its single-needle rewrite
RULER_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
VOCAB = "memory river stone light winter garden model state token chunk gate quick slow green old new bright".split()
MAX_LEN = 1024
TTG = 128


class WhitespaceTokenizer:
    def encode(self, text: str) -> list[int]:
        return [len(w) for w in text.split()]


def essay_docs(n: int = 60, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sentences = [" ".join(rng.choices(VOCAB, k=rng.randint(4, 12))).capitalize() + "." for _ in range(8)]
        docs.append(" ".join(sentences))
    return docs


@pytest.fixture(scope="module", params=["whitespace", "bpe"])
def tokenizer(request, tmp_path_factory):
    if request.param == "whitespace":
        return WhitespaceTokenizer()
    texts = essay_docs() + [REPEAT_HAYSTACK] * 20 + [RULER_TEMPLATE] * 5
    return train_bpe(texts, vocab_size=400, path=tmp_path_factory.mktemp("bpe") / "tokenizer.json")


def count(tokenizer, text: str) -> int:
    encoded = tokenizer.encode(text)
    return len(getattr(encoded, "ids", encoded))


def split_prompt(sample: dict) -> tuple[str, str, str]:
    """(key, value, context) of a sample, checking the template around the context."""
    singular = TASKS[sample["task"]][1][:-1]
    head, tail = RULER_TEMPLATE.split("{context}")
    head = head.replace("Some", "A").replace("are", "is").format(type_needle_v=singular)
    text = sample["input"]
    assert text.startswith(head)
    footer = re.fullmatch(
        rf"(?s).*\nWhat is the special magic {singular} for ([a-z]+-[a-z]+) mentioned in the provided text\?", text
    )
    assert footer, text[-200:]
    key = footer.group(1)
    tail = tail.replace("are all", "is").format(type_needle_v=singular, query=key)
    assert text.endswith(tail)
    assert sample["gen_prefix"] == f"The special magic {singular} for {key} mentioned in the provided text is"
    (value,) = sample["outputs"]
    return key, value, text[len(head) : len(text) - len(tail)]


def test_templates_and_depths_are_rulers():
    assert TEMPLATE == (
        RULER_TEMPLATE.replace("Some", "A").replace("are all", "is").replace("are", "is").replace("answers", "answer")
    )
    assert NEEDLE == "One of the special magic {type_needle_v} for {key} is: {value}."
    assert REPEAT_HAYSTACK == (
        "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
    )
    assert list(DEPTHS) == np.round(np.linspace(0, 100, num=40, endpoint=True)).astype(int).tolist()
    assert set(TASKS) == {"niah_single_1", "niah_single_2", "niah_single_3"}
    for words in (ADJECTIVES, NOUNS):
        assert len(set(words)) == len(words) and all(w.isalpha() and w.islower() for w in words)
    assert len(ADJECTIVES) + len(NOUNS) >= 250


@pytest.mark.parametrize("task", sorted(TASKS))
def test_samples_follow_the_template_and_fill_the_context(task, tokenizer):
    docs = essay_docs()
    samples = generate_niah(task, tokenizer, MAX_LEN, num_samples=6, seed=1, haystack_texts=docs)
    haystack_type, value_type = TASKS[task]
    all_words = " ".join(docs).split()
    for i, sample in enumerate(samples):
        assert sample["index"] == i and sample["max_length"] == MAX_LEN and sample["depth"] in DEPTHS
        key, value, context = split_prompt(sample)
        if value_type == "numbers":
            assert re.fullmatch(r"[1-9]\d{6}", value)
        else:
            assert str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4
        needle = NEEDLE.format(type_needle_v=value_type, key=key, value=value)
        assert sample["input"].count(needle) == 1 and sample["input"].count(value) == 1

        before, after = context.split(needle)
        if haystack_type == "repeat":
            lines = context.split("\n")
            n = len(lines) - 1
            assert lines.count(REPEAT_HAYSTACK) == n and lines.index(needle) == int(n * sample["depth"] / 100)
            unit = count(tokenizer, "\n" + REPEAT_HAYSTACK)
        else:
            words_before, words_after = before.split(), after.split()
            n = len(words_before) + len(words_after)
            assert words_before + words_after == all_words[:n]
            # RULER's rule: the needle goes before sentence int(n_sentences * depth / 100)
            assert not words_before or words_before[-1].endswith(".")
            n_sentences = 1 + sum(w.endswith(".") for w in all_words[: n - 1])
            assert sum(w.endswith(".") for w in words_before) == int(n_sentences * (sample["depth"] / 100))
            assert abs(100 * len(words_before) / n - sample["depth"]) <= 10
            unit = max(count(tokenizer, " " + w) for w in VOCAB)

        assert sample["length"] == count(tokenizer, sample["input"])
        budget = MAX_LEN - TTG - count(tokenizer, value)
        # one more unit (plus a possible merge at each seam) would not have fit
        assert budget - unit - 2 < sample["length"] <= budget


def test_seed_determinism_and_lazy_haystack(tokenizer):
    def run(seed: int, task: str = "niah_single_2") -> list[dict]:
        # an endless iterable: the generator must read only the documents it needs
        return generate_niah(
            task, tokenizer, 512, num_samples=4, seed=seed, haystack_texts=itertools.cycle(essay_docs())
        )

    assert run(0) == run(0)
    assert run(0) != run(1)
    assert generate_niah("niah_single_1", tokenizer, 512, num_samples=3) == generate_niah(
        "niah_single_1", tokenizer, 512, num_samples=3
    )


def test_extreme_depths_place_the_needle_at_the_ends():
    tok = WhitespaceTokenizer()
    first, last = (generate_niah("niah_single_1", tok, 600, num_samples=1, depths=[d])[0] for d in (0, 100))
    for sample, line in ((first, 0), (last, -1)):
        key, value, context = split_prompt(sample)
        assert context.split("\n")[line] == NEEDLE.format(type_needle_v="numbers", key=key, value=value)


def test_score_niah_is_string_match_all():
    assert score_niah("The special magic number is 1234567.", ["1234567"]) == 1.0
    assert score_niah(" 7654321\x00", ["1234567"]) == 0.0
    uid = "46685257-bdd6-40fb-8667-1ad11c80317f"
    assert score_niah(uid.upper(), [uid]) == 1.0
    assert score_niah("1234567", ["1234567", "7654321"]) == 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(task="niah_single_4"), r"task must be one of niah_single_1, niah_single_2, niah_single_3, got"),
        (dict(max_seq_length=100), r"max_seq_length must be at least \d+ for niah_single_1 .* got 100"),
        (dict(task="niah_single_2"), r"haystack_texts must be an iterable of documents for niah_single_2"),
        (dict(task="niah_single_3", haystack_texts=essay_docs(2)), r"haystack_texts must hold more than \d+ words"),
        (dict(depths=[0, 101]), r"depths must be .* in \[0, 100\]"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs, match):
    args = dict(task="niah_single_1", tokenizer=WhitespaceTokenizer(), max_seq_length=MAX_LEN, num_samples=2)
    with pytest.raises(ValueError, match=match) as error:
        generate_niah(**{**args, **kwargs})
    assert "\n" not in str(error.value)
