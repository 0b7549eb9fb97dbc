"""The ablation of Moneta and Memora in the ICLR 2026 version of Miras (OpenReview gZyEJ2kMow).

Second-hand numbers (a paper-notes page of the ICLR version of Miras): size and data unknown, so
we run the 340M preset; "Avg" is read as the mean of Table 2's eight zero-shot accuracies (``eval/avg/acc``).
"""

from miras.experiment import Claim, Column, Run, Table

WITH_ROPE = "model.mixer.memory_rope=True"
VARIANTS = {
    "": ("Full", (WITH_ROPE,)),
    "-no-retention": ("w/o Retention Gate", (WITH_ROPE, "model.mixer.memory.retention=none")),
    "-linear-memory": ("linear memory", (WITH_ROPE, "model.mixer.memory.arch=linear")),
    "-no-rope": ("w/o RoPE", ("model.mixer.memory_rope=False",)),
}
"""The paper's full model has RoPE on the memory, so every row but "w/o RoPE" turns it back on; our Moneta and
Memora presets leave it off (``MixerConfig.memory_rope``), which makes their Table 2 rows the "w/o RoPE" one."""
PAPER = {
    "memora": (51.52, 49.75, 50.11, 51.28),
    "moneta": (52.12, 50.49, 50.26, 51.71),
}

TABLE = Table(
    paper="miras",
    key="iclr_ablation",
    title="Ablations of Memora and Moneta (ICLR 2026 version)",
    source="Miras, ICLR 2026 (OpenReview gZyEJ2kMow), ablation table, via secondary notes",
    columns=(
        Column("eval/avg/acc", "Avg", scale=100),
        Column("val/ppl", "Val ppl", higher_is_better=False),
    ),
    runs=tuple(
        Run(f"{model}{suffix}", f"{model.capitalize()} {label}", model.capitalize(), f"{model}-340m", overrides)
        for model in PAPER
        for suffix, (label, overrides) in VARIANTS.items()
    ),
    claims=tuple(
        Claim(
            f"every ablation lowers {model.capitalize()}'s average accuracy",
            "ICLR ablation table",
            "eval/avg/acc",
            (model,),
            tuple(f"{model}{s}" for s in VARIANTS if s),
            proxy="val/ppl",
        )
        for model in PAPER
    ),
    references=tuple(PAPER),
    paper_numbers={
        (f"{model}{suffix}", "eval/avg/acc"): value
        for model, values in PAPER.items()
        for suffix, value in zip(VARIANTS, values, strict=True)
    },
    notes=(
        "Numbers are second-hand and unverified; size and data are not known.",
        "Every row but w/o RoPE puts RoPE on the memory's q and k, as the paper's full model does; the Table 2 "
        "presets do not (it hurt the MLP memory in 96-step probes).",
    ),
)
