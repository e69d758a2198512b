"""What generative recommenders share: the semantic-ID vocabulary, token batches, evaluation by decoding."""
from .evaluation import evaluate_generative
from .sequences import IGNORE, ItemTokens, evaluation_rows, next_id_batch, prompt_batch, sample_rows, user_timelines
from .vocab import SemanticIdVocab

__all__ = ["IGNORE", "ItemTokens", "SemanticIdVocab", "evaluate_generative", "evaluation_rows", "next_id_batch", "prompt_batch",
           "sample_rows", "user_timelines"]
