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

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "device": "cuda",
        "torch_threads": None,
        "text_encoder": {"batch_size": 1024, "max_length": 64},
        "id_baselines": _ID_BASELINES_PAPER,
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
