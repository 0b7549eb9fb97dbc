"""S-NIAH (RULER single needle) for our models: the offline generator of ``data.synthetic.niah``, greedy decoding
through the lm-eval adapter, RULER's string-match score.

lm-eval's own ``niah_single_*`` tasks need wonderwords, nltk data and Paul Graham's essays from the Hub, none of
which is available offline; the generator reproduces their templates, depths and scoring (see its module doc
for the substitutions), with the offline corpus as the essay haystack.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from tqdm import tqdm

from data.synthetic.niah import generate_niah, score_niah
from miras.evaluation.adapter import MirasLM

TOKENS_TO_GENERATE = 128
"""RULER's answer budget per sample."""


def haystack_documents() -> Iterator[str]:
    """Documents of the offline corpus (validation split first), the essay haystack of ``niah_single_2/3``."""
    import pyarrow.parquet as pq

    from data.corpus import DEFAULT_OUT

    files = sorted(DEFAULT_OUT.glob("validation-*.parquet")) + sorted(DEFAULT_OUT.glob("train-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no offline corpus under {DEFAULT_OUT}; run `make corpus`")
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(columns=["text"], batch_size=64):
            yield from batch.column(0).to_pylist()


def evaluate_niah(lm: MirasLM, tasks: Mapping[str, Sequence[int]], num_samples: int = 50, seed: int = 42) -> dict:
    """Accuracy (in [0, 1]) of every task (``niah_single_1/2/3``) at each of its context lengths.

    Each prompt is ``input + " " + gen_prefix`` (lm-eval's rendering for base models) of ``length`` tokens at
    most, read whole (no truncation to the training context) and answered by up to 128 greedy tokens.

    Returns ``{"metrics": {"eval/<task>/<length>": accuracy}, "samples": [...]}``.
    """
    metrics, records = {}, []
    for task, lengths in tasks.items():
        for length in lengths:
            samples = generate_niah(
                task,
                lm.tokenizer,
                length,
                num_samples=num_samples,
                seed=seed,
                haystack_texts=haystack_documents(),
                tokens_to_generate=TOKENS_TO_GENERATE,
            )
            scores = []
            for sample in tqdm(samples, desc=f"{task} {length}", leave=False):
                ids = lm.tok_encode(sample["input"] + " " + sample["gen_prefix"])
                tokens = lm.greedy(torch.tensor([ids], device=lm.device), TOKENS_TO_GENERATE, [[]])[0]
                answer = lm.tok_decode(tokens)
                scores.append(score_niah(answer, sample["outputs"]))
                records.append({"task": task, "length": length, "index": sample["index"], "answer": answer})
            metrics[f"eval/{task}/{length}"] = sum(scores) / len(scores)
    return {"metrics": metrics, "samples": records}
