"""Three scales, one code path.

- ``ci``    tiny: every notebook finishes in seconds to a minute; for smoke runs.
- ``book``  real data, sized for two CPU cores: what the rendered book shows.
- ``paper`` the papers' settings, for GPUs (``./reproduce.sh --profile paper``).

A notebook reads its section, e.g. ``get_profile("book")["id_baselines"]``, and prints what
differs from the paper. Values that come from a paper cite it in a comment.
"""
from __future__ import annotations

import copy
import os
from typing import Any

# The domains of the two cross-domain sets, each a target of single-domain ID baselines.
CROSS_DOMAIN_TARGETS = [
    ("amazon14-food-kitchen", "Food"),
    ("amazon14-food-kitchen", "Kitchen"),
    ("amazon18-xcross", "Electronics"),
    ("amazon18-xcross", "Sports"),
    ("amazon18-xcross", "Tools"),
    ("amazon18-xcross", "Toys"),
]
# The 5-core sets without text, on which the papers report ID baselines (Sports: GenCDR Table 2).
CALIBRATION_TARGETS = [("amazon14-5core-sequences", d) for d in ("Sports", "Beauty", "Toys")]

_ID_BASELINES_PAPER = {
    # SASRec (Kang & McAuley 2018) / BERT4Rec (Sun et al. 2019) defaults for sparse Amazon sets.
    "max_len": 50,
    "hidden": 64,
    "layers": 2,
    "sasrec_heads": 1,
    "bert4rec_heads": 2,
    "dropout": 0.2,
    "bert4rec_mask_prob": 0.2,
    "lr": 1e-3,
    "batch_size": 128,
    "epochs": 200,
    "patience": 10,
    "epochs_by_model": {},  # per-model caps on "epochs"
    "patience_by_model": {},  # per-model early-stopping patience (validations without improvement)
    "max_valid_rows": None,  # validate on a seeded sample of users (None: all); testing always uses all
    # (dataset, domain, models): every shared domain, every model.
    "runs": [(ds, dom, ["pop", "sasrec-bce", "sasrec-ce", "bert4rec"])
             for ds, dom in CALIBRATION_TARGETS + CROSS_DOMAIN_TARGETS],
    "seeds": [0, 1, 2],
}

# GenCDR's domain-adaptive tokenizer ("Implementation Details"). The paper gives the optimiser, lr,
# batch, epochs, LoRA (r=64, alpha=32, dropout=0.05), router (2-layer MLP, 128 hidden) and the VIB
# weight (1e-3); it does not give the RQ-VAE's shape, M, K, mu or lambda: we use TIGER's (Rajput et
# al. 2023) encoder 512-256-128 -> 32 and M=3 codebooks of K=256, mu=1, lambda=0.01. Measured on
# Food-Kitchen (20 epochs, lr 1e-3): lambda=0.1 collapses the codes after epoch 12 (collision rate
# 0.17 -> 0.99: the encoder learns to make codes trivially predictable); 0.01 trains like lambda=0.
_GENCDR_TOKENIZER_PAPER = {
    "datasets": {"amazon14-food-kitchen": None, "amazon18-xcross": ["Sports", "Tools"]},  # None: all domains
    "hidden": [512, 256, 128],
    "latent_dim": 32,
    "n_levels": 3,
    "codebook_size": 256,
    "beta": 0.25,  # Eq. 2
    "quant_weight": 1.0,  # mu
    "mtm_weight": 0.01,  # lambda
    "mtm": {"d_model": 64, "n_layers": 2, "n_heads": 4, "mask_prob": 0.3},
    "kmeans_init_items": 4096,  # k-means on the latents of the first batches (8 x 512)
    "revive_dead_codes": True,  # codes no item chose in an epoch move onto residuals of the data
    "pretrain": {"epochs": 100, "lr": 1e-4, "batch_size": 512},
    "lora": {"r": 64, "lora_alpha": 32, "lora_dropout": 0.05},
    "router": {"hidden": 128, "latent_dim": 1, "vib_weight": 1e-3},
    "adapters": {"epochs": 50, "lr": 5e-5, "batch_size": 512},
    "collision_rule": "reassign",  # the rule of the IDs used downstream; both are always reported
    "seeds": [0],
}

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "device": "cuda",
        "torch_threads": None,
        "text_encoder": {"batch_size": 1024, "max_length": 64},
        "id_baselines": _ID_BASELINES_PAPER,
        "gencdr_tokenizer": _GENCDR_TOKENIZER_PAPER,
    },
    "book": {
        "device": "cpu",
        "torch_threads": 2,
        "text_encoder": {"batch_size": 256, "max_length": 64},
        "id_baselines": {
            **_ID_BASELINES_PAPER,
            "batch_size": 256,
            "epochs": 30,
            "patience": 3,
            # measured on 2 cores, Sports: 8.5 s/epoch (sasrec-bce), 33 s (sasrec-ce), 18 s (bert4rec)
            "epochs_by_model": {"sasrec-bce": 50, "sasrec-ce": 10, "bert4rec": 15},
            # noisy validation curves (one sampled negative; few masked targets per sequence) need a
            # longer patience: BERT4Rec trains all its epochs and keeps the best one on validation
            "patience_by_model": {"sasrec-bce": 8, "bert4rec": 15},
            "max_valid_rows": 3000,
            # Sports (the calibration against GenCDR Table 2) gets both SASRec losses; the domains
            # of the cross-domain sets get the stronger variant and BERT4Rec.
            "runs": [("amazon14-5core-sequences", "Sports", ["pop", "sasrec-bce", "sasrec-ce", "bert4rec"])]
            + [(ds, dom, ["pop", "sasrec-ce", "bert4rec"]) for ds, dom in CROSS_DOMAIN_TARGETS],
            "seeds": [0],
        },
        "gencdr_tokenizer": {
            **_GENCDR_TOKENIZER_PAPER,
            # 2 CPU cores: ~3.7 s per phase-1 epoch and ~3.5 s per phase-2 epoch on Food-Kitchen (28k items)
            "pretrain": {"epochs": 30, "lr": 1e-3, "batch_size": 512},
            "adapters": {"epochs": 15, "lr": 1e-3, "batch_size": 512},
        },
    },
    "ci": {
        "device": "cpu",
        "torch_threads": 2,
        "text_encoder": {"batch_size": 256, "max_length": 64},
        "id_baselines": {
            **_ID_BASELINES_PAPER,
            "batch_size": 256,
            "epochs": 2,
            "patience": 1,
            "max_valid_rows": 1000,
            "runs": [("amazon18-xcross", "Tools", ["pop", "sasrec-ce"])],
            "seeds": [0],
        },
        "gencdr_tokenizer": {
            **_GENCDR_TOKENIZER_PAPER,
            "datasets": {"amazon18-xcross": ["Sports", "Tools"]},
            "pretrain": {"epochs": 5, "lr": 1e-3, "batch_size": 512},
            "adapters": {"epochs": 2, "lr": 1e-3, "batch_size": 512},
            "collision_rule": "extra_level",
        },
    },
}


def get_profile(name: str) -> dict[str, Any]:
    """A copy of profile ``name``; also sets torch's thread count for bit-reproducible CPU runs."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {sorted(PROFILES)}")
    prof = copy.deepcopy(PROFILES[name])
    prof["name"] = name
    threads = prof.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(os.environ.get("XDREC_TORCH_THREADS", threads)))
    return prof
