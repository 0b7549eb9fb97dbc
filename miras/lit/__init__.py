from miras.lit.callbacks import RunSummary, Throughput
from miras.lit.lm_module import LanguageModelModule

__all__ = ["LanguageModelModule", "RunSummary", "Throughput"]
