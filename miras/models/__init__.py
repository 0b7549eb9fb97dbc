from miras.models.lm import Block, LanguageModel, SwiGLU, count_parameters

__all__ = ["Block", "LanguageModel", "SwiGLU", "count_parameters"]
