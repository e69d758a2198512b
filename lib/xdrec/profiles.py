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

from . import smoke

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

# How every generative recommender (GenCDR, TIGER, UTGRec) is evaluated: the same rows, the same
# beam search. ``None`` = all rows; the CPU profiles score a seeded sample of users per domain.
_GENERATIVE_EVAL_PAPER = {
    "beams": 20,  # beams of the constrained search; the top 10 IDs are ranked (Recall/NDCG@5/10)
    "top_k": 10,
    "valid_rows_per_domain": None,
    "test_rows_per_domain": None,
    "batch_size": 64,
    "max_items": 20,  # items of history in a prompt (the most recent ones)
}

_GENCDR_RECOMMENDER_PAPER = {
    # GenCDR, Implementation Details: Qwen2.5-7B, N = 4 universal LoRA experts (r = 64, alpha = 128),
    # 10 epochs, then domain adapters for 10-20 epochs; AdamW lr 5e-5, batch 8, fp16.
    "backbone": "smollm2-135m",  # XDREC_BACKBONE (a local folder) replaces it at the paper profile
    "num_layers": None,  # None = every layer of the backbone
    "prompt_prefix": "",  # text before the history (tokenised by the backbone's tokenizer)
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "experts": {"n": 4, "r": 64, "alpha": 128, "dropout": 0.05, "balance_weight": 0.01},
    "domain_lora": {"r": 64, "alpha": 128, "dropout": 0.05},
    "router": {"hidden": 128, "latent_dim": 1, "vib_weight": 1e-3},
    "universal": {"epochs": 10, "lr": 5e-5, "batch_size": 8, "patience": 3},
    "domain": {"epochs": 15, "lr": 5e-5, "batch_size": 8, "patience": 3},
    "mixed_precision": "fp16",
    "seeds": [0, 1, 2],
}

_TIGER_PAPER = {
    # TIGER (Rajput et al., NeurIPS 2023, Sec. 4): RQ-VAE IDs (3 x 256 codes + a collision level),
    # T5 encoder-decoder with 4 + 4 layers, 6 heads of 64, d_model 128, MLP 1024, dropout 0.1.
    "d_model": 128,
    "n_layers": 4,
    "n_heads": 6,
    "d_kv": 64,
    "d_ff": 1024,
    "dropout": 0.1,
    "collision_rule": "extra_level",
    "epochs": 50,
    "lr": 1e-3,
    "batch_size": 256,
    "patience": 5,
    "seeds": [0, 1, 2],
}

_GENCDR_STUDIES_PAPER = {
    # GenCDR RQ2 (Table 3: Phones, Electronics, Sports, Clothing) and RQ4 (Figure 4, on Clothing). Of these
    # domains our data has Sports; the ablations run on both cross-domain sets at the recommender's full
    # budget. The paper names its optimum (N = 4, r = 64, dropout 0.05), not the values it swept.
    "datasets": ["amazon14-food-kitchen", "amazon18-xcross"],
    "universal": {},  # overrides of gencdr_recommender.universal / .domain (none: the full budget)
    "domain": {},
    "eval": {},  # overrides of generative_eval
    "sensitivity": ("amazon18-xcross", "Sports"),
    "sweeps": {"n_experts": [2, 4, 6, 8], "r": [16, 32, 64, 128], "alpha": [32, 64, 128, 256],
               "dropout": [0.0, 0.05, 0.1, 0.2]},
    "sweep_scope": "all",  # r, alpha, dropout of every LoRA ("domain": of the domain adapters only)
    "seeds": [0],
}

# X-Cross (Hadad et al., SIGIR 2025), Sec. 4.1: four Amazon-2018 domains as each other's sources;
# user split 3:1:1; 29 popularity-sampled negatives (30 choices) in training and evaluation; titles
# cut to 8 words; DeBERTa-v3-base (a local path in the paper profile); LoRA r=16, alpha=32; AdamW,
# lr 5e-5, weight decay 0.01, batch 1, 40 epochs; n=2 sources picked by zero-shot accuracy on a
# holdout set; the top 9 (of 12) layers integrated; beta=0.5, gamma=0.4. Figure 3 / Table 3: training
# sizes 50..1000, five random subsets each. Figure 4: 1, 2, 4, 8 integrated layers.
_XCROSS_PAPER = {
    "dataset": "amazon18-xcross",
    "domains": ["Tools", "Sports", "Toys", "Electronics"],
    "backbone": "microsoft/deberta-v3-base",  # XDREC_ENCODER (a local folder) replaces it: nothing is downloaded
    "ratios": [3, 1, 1],
    "split_seed": 0,
    "title_words": 8,
    "max_history": 15,
    "max_length": 512,
    "n_neg_train": 29,
    "n_neg_eval": 29,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query_proj", "value_proj"]},
    "train": {"epochs": 40, "lr": 5e-5, "weight_decay": 0.01, "batch_size": 1, "patience": None},
    "max_train_rows": None,   # training users per domain (None: all)
    "max_valid_rows": None,   # holdout users for source selection
    "max_test_rows": None,    # test users per domain
    "xcross": {"n_sources": 2, "n_layers": 9, "beta": 0.5, "gamma": 0.4},
    "mixture_lr": 5e-5,
    "layers_study": [1, 2, 4, 8],
    "limited": {"sizes": [50, 75, 100, 200, 300, 400, 500, 750, 1000], "subsets": 5},
    "id_baselines": {"epochs": 200, "patience": 10, "hidden": 64, "layers": 2, "max_len": 50, "dropout": 0.2,
                     "lr": 1e-3, "batch_size": 128},
    "seed": 0,
}

# UTGRec (Sec. 3.1.4): Qwen2-VL-2B with LoRA as content encoder (a local folder: XDREC_LLM), L = 3 codes,
# root / leaf codebooks of 256 / 512, one-layer decoders, lambda 200, alpha 3, mu 0.01, eta 0.03 (the
# tuned optima of Sec. 3.4.2), AdamW with a cosine schedule at 3e-4 (pre-training, 3 epochs) and 1e-4
# (fine-tuning, 20 epochs), batch 16 per GPU x 16 GPUs. What the paper does not give: the codebook
# dimension, LoRA's rank, the InfoNCE temperature and the text length (ours: 32, 16/32, 0.07, 64 tokens).
_UTGREC_TOKENIZER_PAPER = {
    "dataset": "amazon18-xcross",
    "backbone": "qwen2-vl-2b",  # XDREC_LLM (a local folder) replaces it: nothing is downloaded
    "num_layers": None,  # all layers
    "n_codes": 3, "code_dim": 32, "root_size": 256, "leaf_size": 512, "beta": 0.25, "tree": True,
    "mlp_hidden": 1024,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
    "decoder": {"d_model": 512, "n_heads": 8, "d_ff": 2048},
    "max_text_tokens": 64,
    "lambda": 200.0, "alpha": 3.0, "mu": 0.01, "eta": 0.03, "temperature": 0.07,
    "image": False,  # no dataset here has item images
    "max_items_per_domain": None,  # items a tokenizer trains on, per domain (None: all)
    "max_source_items_per_domain": None,  # the source domains' item universe, per domain (None: all)
    "pretrain": {"epochs": 3, "lr": 3e-4, "batch_size": 256},
    "finetune": {"epochs": 20, "lr": 1e-4, "batch_size": 256},
    "seed": 0,
}

# UTGRec's recommender (Sec. 3.1.4): TIGER's T5 (layers tuned in 1..6: Figure 2), AdamW with a cosine
# schedule at 5e-3 for 50 epochs of multi-domain pre-training and 3e-3 for fine-tuning with early
# stopping; batch 256 per GPU x 4 GPUs; beam 50 (Sec. 3.1.3).
_UTGREC_RECOMMENDER_PAPER = {
    "t5": {k: v for k, v in _TIGER_PAPER.items() if k not in ("seeds", "collision_rule")},
    "eval": {"beams": 50},
    "pretrain": {"epochs": 50, "lr": 5e-3, "batch_size": 1024},
    "finetune": {"epochs": 200, "lr": 3e-3, "batch_size": 1024, "patience": 10},
}

# LETTER (Wang et al., CIKM 2024; UTGRec's baseline): its published defaults, alpha = 0.02 for L_CF,
# beta = 1e-4 for L_Div, 10 code clusters per codebook; the RQ-VAE itself is TIGER's.
_LETTER_PAPER = {"alpha": 0.02, "beta": 1e-4, "n_clusters": 10}

# UTGRec's studies: Figure 2 (T5 depth 1..6) and Figure 3 (alpha, mu, eta as the paper tunes them).
_UTGREC_STUDIES_PAPER = {
    "targets": ["Tools", "Sports", "Toys", "Electronics"],  # each held out in turn; the others are sources
    "depths": [1, 2, 3, 4, 5, 6],
    "sweeps": {"alpha": [0.3, 1, 3, 5, 10], "mu": [0.001, 0.003, 0.01, 0.03], "eta": [0.01, 0.03, 0.1, 0.3]},
}

PROFILES: dict[str, dict[str, Any]] = {
    "paper": {
        "device": "cuda",
        "torch_threads": None,
        "text_encoder": {"batch_size": 1024, "max_length": 64},
        "id_baselines": _ID_BASELINES_PAPER,
        "gencdr_tokenizer": _GENCDR_TOKENIZER_PAPER,
        "generative_eval": _GENERATIVE_EVAL_PAPER,
        "gencdr_recommender": _GENCDR_RECOMMENDER_PAPER,
        "tiger": _TIGER_PAPER,
        "gencdr_studies": _GENCDR_STUDIES_PAPER,
        "xcross": _XCROSS_PAPER,
        "utgrec_tokenizer": _UTGREC_TOKENIZER_PAPER,
        "utgrec_recommender": _UTGREC_RECOMMENDER_PAPER,
        "letter": _LETTER_PAPER,
        "utgrec_studies": _UTGREC_STUDIES_PAPER,
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
        "generative_eval": {**_GENERATIVE_EVAL_PAPER, "valid_rows_per_domain": 200, "test_rows_per_domain": 1000,
                            "batch_size": 32},
        "gencdr_recommender": {
            **_GENCDR_RECOMMENDER_PAPER,
            # SmolLM2-135M cut to its first 2 of 30 layers: ~4.7k tokens/s forward+backward on 2 cores
            # (4 layers: 2.0k; all 30 would take hours per epoch). Small ranks, a few epochs at a larger lr.
            "num_layers": 2,
            "experts": {"n": 4, "r": 8, "alpha": 16, "dropout": 0.05, "balance_weight": 0.01},
            "domain_lora": {"r": 8, "alpha": 16, "dropout": 0.05},
            "universal": {"epochs": 2, "lr": 1e-3, "batch_size": 16, "patience": None},
            "domain": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "patience": None},
            "mixed_precision": "no",
            "seeds": [0],
        },
        # 2 + 2 layers, MLP 512, 900k target tokens an epoch (~3,500 steps): ~7 min an epoch on 2 cores.
        "tiger": {**_TIGER_PAPER, "n_layers": 2, "d_ff": 512, "lr": 3e-3, "epochs": 4, "tokens_per_epoch": 900_000,
                  "patience": 3, "seeds": [0]},
        # The studies' 12 trained runs fit in ~4 core-hours only on a smaller budget than the main
        # results: one dataset, 4,000 users x 2 epochs in phase 1 (500 steps; 3,000 x 1 epoch left the
        # validation Recall@10 at 0), 2,000 users per domain in phase 2, 500 test rows per domain, and
        # the r / alpha / dropout sweeps on the domain adapters over the reference's phase 1. About
        # 25 min per ablation and 6 min per r / alpha / dropout point on one core.
        "gencdr_studies": {
            **_GENCDR_STUDIES_PAPER,
            "datasets": ["amazon14-food-kitchen"],
            "universal": {"epochs": 2, "max_users": 4000},
            "domain": {"epochs": 1, "max_users": 2000},
            "eval": {"valid_rows_per_domain": 100, "test_rows_per_domain": 500},
            "sensitivity": ("amazon14-food-kitchen", "Food"),
            "sweeps": {"n_experts": [2, 4, 8], "r": [4, 8, 16], "alpha": [8, 16, 32], "dropout": [0.0, 0.05, 0.1]},
            "sweep_scope": "domain",
        },
        "xcross": {
            **_XCROSS_PAPER,
            "backbone": "minilm",  # all-MiniLM-L6-v2: 6 layers, d = 384
            "lora": {"r": 16, "alpha": 32, "dropout": 0.1, "target_modules": ["query", "value"]},
            "n_neg_train": 9,  # 10 choices in training (a third of the compute); evaluation keeps 30
            "train": {"epochs": 1, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 2, "patience": None},
            "mixture_lr": 1e-3,
            "max_train_rows": 200,
            "max_valid_rows": 40,
            "max_test_rows": 100,
            "xcross": {"n_sources": 2, "n_layers": 4, "beta": 0.5, "gamma": 0.4},  # top 4 of 6 layers
            "layers_study": [1, 2, 4],  # of 6 layers (the paper: 1, 2, 4, 8 of 12); 4 is the main run
            "limited": {"sizes": [50, 100, 200], "subsets": 2},
            "id_baselines": {**_XCROSS_PAPER["id_baselines"], "epochs": 50, "patience": 3},
        },
        # SmolLM2-135M cut to its first 2 of 30 layers, 16-token texts. Measured on this machine
        # (benchmarks/utgrec_tokenizer_throughput.py, one thread, both cores busy): 39 items/s encoded,
        # 3.6 items/s trained (30 layers: 1.8 and 0.3). So the tokenizer trains on the 500 most
        # interacted items of a domain for 2 + 2 epochs, and each source domain keeps its 2,000 most
        # interacted items (for the tokenizer and the T5's pre-training); the target keeps all of them.
        "utgrec_tokenizer": {
            **_UTGREC_TOKENIZER_PAPER,
            "backbone": "smollm2-135m", "num_layers": 2, "mlp_hidden": 256,
            "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "decoder": {"d_model": 128, "n_heads": 4, "d_ff": 512},
            "max_text_tokens": 16, "max_items_per_domain": 500, "max_source_items_per_domain": 2000,
            # the paper's learning rates: at 1e-3 the ~100 steps of the book's budget collapse the
            # codebooks (Tools: 1 code per level used, 99.98% of the items on one raw ID)
            "pretrain": {"epochs": 2, "lr": 3e-4, "batch_size": 32},
            "finetune": {"epochs": 2, "lr": 1e-4, "batch_size": 32},
        },
        # the book's TIGER T5 (2 + 2 layers, MLP 512); 300k encoder tokens an epoch (~1.5 min on 1 thread).
        # Recall@10 is ~1% on Tools: every test row (10,962, ~7 min of beam search on 1 thread) rather
        # than a sample of 1,000 (~10 hits, too few to tell two variants apart); 500 validation rows.
        "utgrec_recommender": {
            "t5": {**{k: v for k, v in _TIGER_PAPER.items() if k not in ("seeds", "collision_rule")},
                   "n_layers": 2, "d_ff": 512},
            "eval": {"beams": 20, "valid_rows_per_domain": 500, "test_rows_per_domain": None},
            "pretrain": {"epochs": 2, "lr": 3e-3, "batch_size": 256, "tokens_per_epoch": 300_000},
            "finetune": {"epochs": 4, "lr": 3e-3, "batch_size": 256, "tokens_per_epoch": 300_000, "patience": 2},
        },
        "letter": _LETTER_PAPER,
        # Tools held out (the smallest domain: every target item is encoded); 4 of the paper's 6 depths
        # (its smallest, the book's own, and two deeper), 3 values per sweep; tree against plain
        # codebooks at two seeds (one seed left the question at p = .055)
        "utgrec_studies": {**_UTGREC_STUDIES_PAPER, "targets": ["Tools"], "depths": [1, 2, 4, 6], "seeds": [0, 1],
                           "sweeps": {"alpha": [1, 3, 10], "mu": [0.001, 0.01, 0.03], "eta": [0.01, 0.03, 0.3]}},
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
        "generative_eval": {**_GENERATIVE_EVAL_PAPER, "beams": 10, "valid_rows_per_domain": 30,
                            "test_rows_per_domain": 60, "batch_size": 30},
        "gencdr_recommender": {
            **_GENCDR_RECOMMENDER_PAPER,
            "num_layers": 1,
            "target_modules": ["q_proj", "v_proj"],
            "experts": {"n": 2, "r": 4, "alpha": 8, "dropout": 0.0, "balance_weight": 0.01},
            "domain_lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "universal": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "patience": None, "max_users": 300},
            "domain": {"epochs": 1, "lr": 1e-3, "batch_size": 16, "patience": None, "max_users": 300},
            "mixed_precision": "no",
            "seeds": [0],
        },
        "tiger": {**_TIGER_PAPER, "n_layers": 1, "d_ff": 256, "epochs": 1, "tokens_per_epoch": 20_000, "patience": None,
                  "seeds": [0]},
        "gencdr_studies": {
            **_GENCDR_STUDIES_PAPER,
            "datasets": ["amazon18-xcross"],
            "universal": {"max_users": 200},
            "domain": {"max_users": 100},
            "eval": {"valid_rows_per_domain": 20, "test_rows_per_domain": 30},
            "sensitivity": ("amazon18-xcross", "Tools"),
            "sweeps": {"n_experts": [1, 2], "r": [2, 4], "alpha": [8], "dropout": [0.0]},
            "sweep_scope": "domain",
        },
        "xcross": {
            **_XCROSS_PAPER,
            "domains": ["Tools", "Sports", "Toys"],
            "backbone": "tiny",  # a randomly initialised 2-layer BERT with MiniLM's tokenizer
            "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["query", "value"]},
            "n_neg_train": 4,
            "train": {"epochs": 1, "lr": 1e-3, "weight_decay": 0.0, "batch_size": 4, "patience": None},
            "mixture_lr": 1e-3,
            "max_train_rows": 16,
            "max_valid_rows": 8,
            "max_test_rows": 12,
            "xcross": {"n_sources": 2, "n_layers": 1, "beta": 0.5, "gamma": 0.4},
            "layers_study": [1, 2],
            "limited": {"sizes": [4, 8], "subsets": 2},
            "id_baselines": {**_XCROSS_PAPER["id_baselines"], "epochs": 1, "patience": None},
        },
        "utgrec_tokenizer": {
            **_UTGREC_TOKENIZER_PAPER,
            "backbone": "tiny", "num_layers": None, "code_dim": 8, "root_size": 32, "leaf_size": 64, "mlp_hidden": 32,
            "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "decoder": {"d_model": 16, "n_heads": 2, "d_ff": 32},
            "max_text_tokens": 8, "max_items_per_domain": 60, "max_source_items_per_domain": 200,
            "pretrain": {"epochs": 1, "lr": 1e-3, "batch_size": 16},
            "finetune": {"epochs": 1, "lr": 1e-3, "batch_size": 16},
        },
        "utgrec_recommender": {
            "t5": {"d_model": 32, "n_layers": 1, "n_heads": 2, "d_kv": 16, "d_ff": 64, "dropout": 0.0},
            "eval": {},
            "pretrain": {"epochs": 1, "lr": 3e-3, "batch_size": 64, "tokens_per_epoch": 20_000},
            "finetune": {"epochs": 1, "lr": 3e-3, "batch_size": 64, "tokens_per_epoch": 20_000, "patience": None},
        },
        "letter": {**_LETTER_PAPER, "n_clusters": 4},
        "utgrec_studies": {"targets": ["Tools"], "depths": [1], "sweeps": {"mu": [0.01], "eta": [0.0]}},
    },
}


def get_profile(name: str) -> dict[str, Any]:
    """A copy of profile ``name``; also sets torch's thread count for bit-reproducible CPU runs."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}: choose one of {sorted(PROFILES)}")
    prof = smoke.reduce_profile(copy.deepcopy(PROFILES[name]))  # a smoke run's grids and batches (xdrec.smoke)
    prof["name"] = name
    threads = prof.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(os.environ.get("XDREC_TORCH_THREADS", threads)))
    return prof
