"""xdrec: generative cross-domain recommendation, reproduced.

Layout (one paper, one sub-package; shared mechanisms once):

- ``xdrec.data``        datasets in one canonical multi-domain form, raw Amazon loaders, splits
- ``xdrec.encoders``    pretrained text encoder (MiniLM) and LLM backbones (SmolLM2, local HF dirs)
- ``xdrec.metrics``     Recall / NDCG / Hit / MRR; full-ranking and sampled evaluation
- ``xdrec.baselines``   ID-based sequential recommenders: SASRec, BERT4Rec
- ``xdrec.training``    one training loop (Accelerate, checkpoints, resume, early stopping)
- ``xdrec.results``     results/<profile>/<name>.json with provenance
"""

__version__ = "0.1.0"
