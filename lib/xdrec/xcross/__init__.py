"""X-Cross (Hadad et al., SIGIR 2025): layer-wise integration of per-domain LoRA encoders.

- :mod:`.prompts`: the multiple-choice task (prompts, 30 popularity-sampled choices).
- :mod:`.encoder`: a frozen encoder with one LoRA adapter and one pooler+scorer head per domain.
- :mod:`.integration`: the X-Cross integrator (Eqs. 3-6) and the XLoRA/MeteoRA-style baselines.
- :mod:`.experiment`: Table 2, Table 4, Figures 3-4 on ``amazon18-xcross``.
"""
from .encoder import ChoiceHead, DomainLoRAEncoder, MultiLoRALinear, PoolerScorer, SourceModel
from .integration import BETA, GAMMA, AdapterMixture, XCross, others_index, refine
from .prompts import ChoiceRows, PromptCollator, choice_loader, choice_rows, cut_title, prompt_text

__all__ = ["AdapterMixture", "BETA", "ChoiceHead", "ChoiceRows", "DomainLoRAEncoder", "GAMMA", "MultiLoRALinear",
           "PoolerScorer", "PromptCollator", "SourceModel", "XCross", "choice_loader", "choice_rows", "cut_title",
           "others_index", "prompt_text", "refine"]
