"""Three scales, one code path, in typed settings.

- ``paper`` the papers' settings, for GPUs (``./reproduce.sh --profile paper``): every dataclass
  below defaults to them, each field commented with the table or section it comes from.
- ``book``  real data, sized for two CPU cores: what the rendered book shows.
- ``ci``    tiny: every notebook finishes in seconds to a minute; for smoke runs.

``book`` and ``ci`` are built from ``paper`` by explicit replacement (:func:`dataclasses.replace`),
so what a profile changes is what its definition lists. A notebook reads its section as a dict,
e.g. ``get_profile("book")["id_baselines"]`` (:data:`PROFILES` holds the dicts, :data:`SETTINGS`
the typed objects), and prints what differs from the paper.
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
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

Overrides = dict  # a study's overrides of another section's settings: any subset of its fields


def _list(*values):
    return field(default_factory=lambda: list(values))


def _of(cls, **kw):
    return field(default_factory=lambda: cls(**kw))


# ------------------------------------------------------------------ shared blocks
@dataclass(frozen=True)
class TextEncoder:
    """The item text encoder (all-MiniLM-L6-v2) that embeds every item's title and description."""

    batch_size: int = 1024  # texts per forward pass
    max_length: int = 64  # tokens of text per item


@dataclass(frozen=True)
class Optimisation:
    """One training phase of a tokenizer: epochs, AdamW's learning rate and the batch."""

    epochs: int
    lr: float
    batch_size: int


@dataclass(frozen=True)
class Router:
    """A VIB router (GenCDR Eq. 7 and 11): a 2-layer MLP of ``hidden`` units, a ``latent_dim``-wide
    stochastic bottleneck, its KL term weighted ``vib_weight`` ("Implementation Details")."""

    hidden: int = 128
    latent_dim: int = 1
    vib_weight: float = 1e-3


# ------------------------------------------------------------------ ID baselines
@dataclass(frozen=True)
class IDBaselines:
    """SASRec (Kang & McAuley 2018) and BERT4Rec (Sun et al. 2019): their defaults for sparse Amazon sets."""

    max_len: int = 50
    hidden: int = 64
    layers: int = 2
    sasrec_heads: int = 1
    bert4rec_heads: int = 2
    dropout: float = 0.2
    bert4rec_mask_prob: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128
    epochs: int = 200
    patience: int | None = 10
    epochs_by_model: dict = field(default_factory=dict)  # per-model caps on ``epochs``
    patience_by_model: dict = field(default_factory=dict)  # per-model early-stopping patience (validations)
    max_valid_rows: int | None = None  # validate on a seeded sample of users (None: all); testing uses all
    # (dataset, domain, models): every shared domain, every model.
    runs: list = field(default_factory=lambda: [(ds, dom, ["pop", "sasrec-bce", "sasrec-ce", "bert4rec"])
                                                 for ds, dom in CALIBRATION_TARGETS + CROSS_DOMAIN_TARGETS])
    seeds: list = _list(0, 1, 2)


# ------------------------------------------------------------------ GenCDR
@dataclass(frozen=True)
class MaskedCodeModel:
    """The transformer of GenCDR's masked-code loss (Eq. 3): predicts masked codes of an item's ID."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    mask_prob: float = 0.3


@dataclass(frozen=True)
class PEFTLoRA:
    """A LoRA adapter in PEFT's own argument names (GenCDR "Implementation Details": r=64, alpha=32, dropout 0.05)."""

    r: int = 64
    lora_alpha: int = 32
    lora_dropout: float = 0.05


@dataclass(frozen=True)
class GenCDRTokenizer:
    """GenCDR's domain-adaptive tokenizer ("Implementation Details").

    The paper gives the optimiser, lr, batch, epochs, LoRA, router and the VIB weight; it does not give
    the RQ-VAE's shape, M, K, mu or lambda: we use TIGER's (Rajput et al. 2023) encoder 512-256-128 -> 32
    and M=3 codebooks of K=256, mu=1, lambda=0.01. Measured on Food-Kitchen (20 epochs, lr 1e-3):
    lambda=0.1 collapses the codes after epoch 12 (collision rate 0.17 -> 0.99: the encoder learns to
    make codes trivially predictable); 0.01 trains like lambda=0.
    """

    # None: all domains of a set
    datasets: dict = field(default_factory=lambda: {"amazon14-food-kitchen": None,
                                                    "amazon18-xcross": ["Sports", "Tools"]})
    hidden: list = _list(512, 256, 128)
    latent_dim: int = 32
    n_levels: int = 3
    codebook_size: int = 256
    beta: float = 0.25  # Eq. 2
    quant_weight: float = 1.0  # mu
    mtm_weight: float = 0.01  # lambda
    mtm: MaskedCodeModel = _of(MaskedCodeModel)
    kmeans_init_items: int = 4096  # k-means on the latents of the first batches (8 x 512)
    revive_dead_codes: bool = True  # codes no item chose in an epoch move onto residuals of the data
    pretrain: Optimisation = _of(Optimisation, epochs=100, lr=1e-4, batch_size=512)
    lora: PEFTLoRA = _of(PEFTLoRA)
    router: Router = _of(Router)
    adapters: Optimisation = _of(Optimisation, epochs=50, lr=5e-5, batch_size=512)
    collision_rule: str = "reassign"  # the rule of the IDs used downstream; both are always reported
    seeds: list = _list(0)


@dataclass(frozen=True)
class GenerativeEval:
    """How every generative recommender (GenCDR, TIGER, UTGRec) is evaluated: the same rows, the same beam
    search. ``None`` = all rows; the CPU profiles score a seeded sample of users per domain."""

    beams: int = 20  # beams of the constrained search; the top 10 IDs are ranked (Recall/NDCG@5/10)
    top_k: int = 10
    valid_rows_per_domain: int | None = None
    test_rows_per_domain: int | None = None
    batch_size: int = 64
    max_items: int = 20  # items of history in a prompt (the most recent ones)


@dataclass(frozen=True)
class LoRA:
    """One LoRA adapter: rank, scale alpha, dropout (and the linear layers it adapts, where a model names them)."""

    r: int = 64
    alpha: int = 128
    dropout: float = 0.05


@dataclass(frozen=True)
class LoRAExperts(LoRA):
    """GenCDR's universal LoRA experts (Eq. 9): N = 4 experts of r = 64, alpha = 128, and the MoE gate's
    load-balancing weight."""

    n: int = 4
    balance_weight: float = 0.01


@dataclass(frozen=True)
class TargetedLoRA(LoRA):
    target_modules: list = _list()


@dataclass(frozen=True)
class LLMPhase:
    """A phase of GenCDR's recommender: AdamW lr 5e-5, batch 8 ("Implementation Details")."""

    epochs: int
    lr: float = 5e-5
    batch_size: int = 8
    patience: int | None = 3  # validations without improvement before stopping (None: never)
    max_users: int | None = None  # a seeded sample of the phase's users (None: all)


@dataclass(frozen=True)
class GenCDRRecommender:
    """GenCDR, Implementation Details: Qwen2.5-7B, N = 4 universal LoRA experts (r = 64, alpha = 128),
    10 epochs, then domain adapters for 10-20 epochs; AdamW lr 5e-5, batch 8, fp16."""

    backbone: str = "smollm2-135m"  # XDREC_BACKBONE (a local folder) replaces it at the paper profile
    num_layers: int | None = None  # None = every layer of the backbone
    prompt_prefix: str = ""  # text before the history (tokenised by the backbone's tokenizer)
    target_modules: list = _list("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    experts: LoRAExperts = _of(LoRAExperts)
    domain_lora: LoRA = _of(LoRA)
    router: Router = _of(Router)
    universal: LLMPhase = _of(LLMPhase, epochs=10)
    domain: LLMPhase = _of(LLMPhase, epochs=15)
    mixed_precision: str = "fp16"
    seeds: list = _list(0, 1, 2)


@dataclass(frozen=True)
class GenCDRStudies:
    """GenCDR RQ2 (Table 3: Phones, Electronics, Sports, Clothing) and RQ4 (Figure 4, on Clothing). Of
    these domains our data has Sports; the ablations run on both cross-domain sets at the recommender's
    full budget. The paper names its optimum (N = 4, r = 64, dropout 0.05), not the values it swept."""

    datasets: list = _list("amazon14-food-kitchen", "amazon18-xcross")
    universal: Overrides = field(default_factory=dict)  # of gencdr_recommender.universal / .domain
    domain: Overrides = field(default_factory=dict)
    eval: Overrides = field(default_factory=dict)  # of generative_eval
    sensitivity: tuple = ("amazon18-xcross", "Sports")
    sweeps: dict = field(default_factory=lambda: {"n_experts": [2, 4, 6, 8], "r": [16, 32, 64, 128],
                                                  "alpha": [32, 64, 128, 256], "dropout": [0.0, 0.05, 0.1, 0.2]})
    sweep_scope: str = "all"  # r, alpha, dropout of every LoRA ("domain": of the domain adapters only)
    seeds: list = _list(0)


# ------------------------------------------------------------------ TIGER
@dataclass(frozen=True)
class T5:
    """The T5 of TIGER's recommender (Sec. 4: 4 + 4 layers, 6 heads of 64, d_model 128, MLP 1024, dropout
    0.1), as TIGER and UTGRec use it (UTGRec Sec. 3.1.4; its depth tuned in 1..6: Figure 2)."""

    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 6
    d_kv: int = 64
    d_ff: int = 1024
    dropout: float = 0.1


@dataclass(frozen=True)
class TIGER(T5):
    """TIGER (Rajput et al., NeurIPS 2023, Sec. 4): RQ-VAE IDs (3 x 256 codes + a collision level) and
    its T5, trained with AdamW."""

    collision_rule: str = "extra_level"
    epochs: int = 50
    lr: float = 1e-3
    batch_size: int = 256
    patience: int | None = 5
    tokens_per_epoch: int | None = None  # an epoch's cap in encoder tokens (None: one pass over the data)
    warmup_steps: int = 0  # linear warm-up of the learning rate (optimiser steps)
    seeds: list = _list(0, 1, 2)


@dataclass(frozen=True)
class TIGERBenchmark:
    """TIGER on its own benchmark (Rajput et al. 2023, Table 2): Amazon 2014 Beauty, leave-last-out,
    constrained beam search over all 12,101 items. ``tiger`` and ``eval`` override the profile's
    ``tiger`` and ``generative_eval`` sections for this run only; the paper profile needs none."""

    dataset: str = "amazon14-5core-sequences"
    domains: list = _list("Beauty")
    tiger: dict = field(default_factory=dict)
    eval: dict = field(default_factory=dict)
    seeds: list = _list(0, 1, 2)
    peer_seeds: list = _list(0, 1, 2)  # seeds of the ID baselines beside it (id_baselines' Beauty run)


# ------------------------------------------------------------------ X-Cross
@dataclass(frozen=True)
class EncoderPhase:
    """X-Cross's training (Sec. 4.1): AdamW, lr 5e-5, weight decay 0.01, batch 1, 40 epochs."""

    epochs: int = 40
    lr: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 1
    patience: int | None = None


@dataclass(frozen=True)
class Integration:
    """X-Cross's integrator (Sec. 3): n = 2 sources, the top 9 (of 12) layers integrated, beta 0.5, gamma 0.4."""

    n_sources: int = 2
    n_layers: int = 9
    beta: float = 0.5
    gamma: float = 0.4


@dataclass(frozen=True)
class LimitedData:
    """Figure 3 / Table 3: training sizes 50..1000, five random subsets each."""

    sizes: list = _list(50, 75, 100, 200, 300, 400, 500, 750, 1000)
    subsets: int = 5


@dataclass(frozen=True)
class XCrossIDBaselines:
    """The ID baselines X-Cross is compared with, on its split (IDBaselines' SASRec defaults)."""

    epochs: int = 200
    patience: int | None = 10
    hidden: int = 64
    layers: int = 2
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 128


@dataclass(frozen=True)
class XCross:
    """X-Cross (Hadad et al., SIGIR 2025), Sec. 4.1: four Amazon-2018 domains as each other's sources;
    user split 3:1:1; 29 popularity-sampled negatives (30 choices) in training and evaluation; titles
    cut to 8 words; DeBERTa-v3-base (a local path in the paper profile); LoRA r=16, alpha=32; sources
    picked by zero-shot accuracy on a holdout set. Figure 4: 1, 2, 4, 8 integrated layers."""

    dataset: str = "amazon18-xcross"
    domains: list = _list("Tools", "Sports", "Toys", "Electronics")
    backbone: str = "microsoft/deberta-v3-base"  # XDREC_ENCODER (a local folder) replaces it: nothing is downloaded
    ratios: list = _list(3, 1, 1)
    split_seed: int = 0
    title_words: int = 8
    max_history: int = 15
    max_length: int = 512
    n_neg_train: int = 29
    n_neg_eval: int = 29
    lora: TargetedLoRA = _of(TargetedLoRA, r=16, alpha=32, dropout=0.1, target_modules=["query_proj", "value_proj"])
    train: EncoderPhase = _of(EncoderPhase)
    max_train_rows: int | None = None  # training users per domain (None: all)
    max_valid_rows: int | None = None  # holdout users for source selection
    max_test_rows: int | None = None  # test users per domain
    xcross: Integration = _of(Integration)
    mixture_lr: float = 5e-5
    layers_study: list = _list(1, 2, 4, 8)
    limited: LimitedData = _of(LimitedData)
    id_baselines: XCrossIDBaselines = _of(XCrossIDBaselines)
    seed: int = 0


# ------------------------------------------------------------------ UTGRec
@dataclass(frozen=True)
class ReconstructionDecoder:
    """UTGRec's one-layer content decoders (Sec. 3.1.4; their width is ours)."""

    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048


@dataclass(frozen=True)
class UTGRecTokenizer:
    """UTGRec (Sec. 3.1.4): Qwen2-VL-2B with LoRA as content encoder (a local folder: XDREC_LLM), L = 3
    codes, root / leaf codebooks of 256 / 512, one-layer decoders, lambda 200, alpha 3, mu 0.01, eta 0.03
    (the tuned optima of Sec. 3.4.2), AdamW with a cosine schedule at 3e-4 (pre-training, 3 epochs) and
    1e-4 (fine-tuning, 20 epochs), batch 16 per GPU x 16 GPUs. What the paper does not give: the
    codebook dimension, LoRA's rank, the InfoNCE temperature and the text length (ours: 32, 16/32,
    0.07, 64 tokens)."""

    dataset: str = "amazon18-xcross"
    backbone: str = "qwen2-vl-2b"  # XDREC_LLM (a local folder) replaces it: nothing is downloaded
    num_layers: int | None = None  # all layers
    n_codes: int = 3
    code_dim: int = 32
    root_size: int = 256
    leaf_size: int = 512
    beta: float = 0.25
    tree: bool = True
    mlp_hidden: int = 1024
    lora: TargetedLoRA = _of(TargetedLoRA, r=16, alpha=32, dropout=0.05,
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    decoder: ReconstructionDecoder = _of(ReconstructionDecoder)
    max_text_tokens: int = 64
    # the loss weights (Eq. 14), named as the dict keys the runners read
    lambda_: float = field(default=200.0, metadata={"key": "lambda"})
    alpha: float = 3.0
    mu: float = 0.01
    eta: float = 0.03
    temperature: float = 0.07
    image: bool = False  # no dataset here has item images
    max_items_per_domain: int | None = None  # items a tokenizer trains on, per domain (None: all)
    max_source_items_per_domain: int | None = None  # the source domains' item universe, per domain (None: all)
    pretrain: Optimisation = _of(Optimisation, epochs=3, lr=3e-4, batch_size=256)
    finetune: Optimisation = _of(Optimisation, epochs=20, lr=1e-4, batch_size=256)
    seed: int = 0


@dataclass(frozen=True)
class T5Phase:
    """A phase of UTGRec's recommender: AdamW with a cosine schedule (Sec. 3.1.4)."""

    epochs: int
    lr: float
    batch_size: int
    tokens_per_epoch: int | None = None  # an epoch's cap in encoder tokens (None: one pass over the data)


@dataclass(frozen=True)
class T5FinetunePhase(T5Phase):
    patience: int | None = None  # validations without improvement before stopping (None: never)


@dataclass(frozen=True)
class UTGRecRecommender:
    """UTGRec's recommender (Sec. 3.1.4): TIGER's T5, AdamW with a cosine schedule at 5e-3 for 50 epochs
    of multi-domain pre-training and 3e-3 for fine-tuning with early stopping; batch 256 per GPU x 4
    GPUs; beam 50 (Sec. 3.1.3)."""

    t5: T5 = _of(T5)
    eval: Overrides = field(default_factory=lambda: {"beams": 50})  # of generative_eval
    pretrain: T5Phase = _of(T5Phase, epochs=50, lr=5e-3, batch_size=1024)
    finetune: T5FinetunePhase = _of(T5FinetunePhase, epochs=200, lr=3e-3, batch_size=1024, patience=10)


@dataclass(frozen=True)
class LETTER:
    """LETTER (Wang et al., CIKM 2024; UTGRec's baseline): its published defaults, alpha = 0.02 for L_CF,
    beta = 1e-4 for L_Div, 10 code clusters per codebook; the RQ-VAE itself is TIGER's."""

    alpha: float = 0.02
    beta: float = 1e-4
    n_clusters: int = 10


@dataclass(frozen=True)
class UTGRecStudies:
    """UTGRec's studies: Figure 2 (T5 depth 1..6) and Figure 3 (alpha, mu, eta as the paper tunes them)."""

    targets: list = _list("Tools", "Sports", "Toys", "Electronics")  # each held out in turn
    depths: list = _list(1, 2, 3, 4, 5, 6)
    sweeps: dict = field(default_factory=lambda: {"alpha": [0.3, 1, 3, 5, 10], "mu": [0.001, 0.003, 0.01, 0.03],
                                                  "eta": [0.01, 0.03, 0.1, 0.3]})
    seeds: list = _list(0)  # seeds of the tree-versus-plain-codebooks comparison


# ------------------------------------------------------------------ a profile
@dataclass(frozen=True)
class Profile:
    device: str = "cuda"
    torch_threads: int | None = None  # torch's CPU threads (None: torch's own choice)
    text_encoder: TextEncoder = _of(TextEncoder)
    id_baselines: IDBaselines = _of(IDBaselines)
    gencdr_tokenizer: GenCDRTokenizer = _of(GenCDRTokenizer)
    generative_eval: GenerativeEval = _of(GenerativeEval)
    gencdr_recommender: GenCDRRecommender = _of(GenCDRRecommender)
    tiger: TIGER = _of(TIGER)
    tiger_benchmark: TIGERBenchmark = _of(TIGERBenchmark)
    gencdr_studies: GenCDRStudies = _of(GenCDRStudies)
    xcross: XCross = _of(XCross)
    utgrec_tokenizer: UTGRecTokenizer = _of(UTGRecTokenizer)
    utgrec_recommender: UTGRecRecommender = _of(UTGRecRecommender)
    letter: LETTER = _of(LETTER)
    utgrec_studies: UTGRecStudies = _of(UTGRecStudies)


PAPER = Profile()
_P = PAPER

BOOK = replace(
    _P,
    device="cpu",
    torch_threads=2,
    text_encoder=replace(_P.text_encoder, batch_size=256),
    id_baselines=replace(
        _P.id_baselines, batch_size=256, epochs=30, patience=3,
        # measured on 2 cores, Sports: 8.5 s/epoch (sasrec-bce), 33 s (sasrec-ce), 18 s (bert4rec)
        epochs_by_model={"sasrec-bce": 50, "sasrec-ce": 10, "bert4rec": 15},
        # noisy validation curves (one sampled negative; few masked targets per sequence) need a longer
        # patience: BERT4Rec trains all its epochs and keeps the best one on validation
        patience_by_model={"sasrec-bce": 8, "bert4rec": 15},
        max_valid_rows=3000,
        # Sports (the calibration against GenCDR Table 2) gets both SASRec losses; the domains of the
        # cross-domain sets get the stronger variant and BERT4Rec.
        # Beauty: the peers of TIGER's own benchmark (tiger_benchmark).
        runs=[("amazon14-5core-sequences", "Sports", ["pop", "sasrec-bce", "sasrec-ce", "bert4rec"]),
              ("amazon14-5core-sequences", "Beauty", ["pop", "sasrec-ce", "bert4rec"])]
        + [(ds, dom, ["pop", "sasrec-ce", "bert4rec"]) for ds, dom in CROSS_DOMAIN_TARGETS],
        seeds=[0]),
    # 2 CPU cores: ~3.7 s per phase-1 epoch and ~3.5 s per phase-2 epoch on Food-Kitchen (28k items)
    gencdr_tokenizer=replace(_P.gencdr_tokenizer, pretrain=Optimisation(epochs=30, lr=1e-3, batch_size=512),
                             adapters=Optimisation(epochs=15, lr=1e-3, batch_size=512)),
    generative_eval=replace(_P.generative_eval, valid_rows_per_domain=200, test_rows_per_domain=1000, batch_size=32),
    # SmolLM2-135M cut to its first 2 of 30 layers: ~4.7k tokens/s forward+backward on 2 cores (4 layers:
    # 2.0k; all 30 would take hours per epoch). Small ranks, a few epochs at a larger lr.
    gencdr_recommender=replace(
        _P.gencdr_recommender, num_layers=2,
        experts=replace(_P.gencdr_recommender.experts, r=8, alpha=16),
        domain_lora=replace(_P.gencdr_recommender.domain_lora, r=8, alpha=16),
        universal=LLMPhase(epochs=2, lr=1e-3, batch_size=16, patience=None),
        domain=LLMPhase(epochs=1, lr=1e-3, batch_size=16, patience=None),
        mixed_precision="no", seeds=[0]),
    # 2 + 2 layers, MLP 512, one budget of encoder tokens for every dataset: 10 epochs, each a fresh
    # sample of 1.2M encoder tokens (examples.NextItemExamples), 12M in all. Training cost grows with
    # the encoder tokens, so each dataset gets the same compute: about 1.5 passes over Food-Kitchen's
    # 137,828 examples (59 tokens each), about 9 over Sports+Tools' 96,691 (14 each). A fixed budget:
    # no early stopping, the best of the 10 validations kept. lr 1e-3 after 100 warm-up steps: at
    # 3e-3 without warm-up the T5 ignored the history (benchmarks/tiger_history_use.py; every
    # Food-Kitchen user got the same top item). Measured, it still barely reads it (3-5 different top
    # items for 150 users of a domain, level with popularity): a defect not yet fixed (notebook 8).
    tiger=replace(_P.tiger, n_layers=2, d_ff=512, lr=1e-3, warmup_steps=100, epochs=10, tokens_per_epoch=1_200_000,
                  patience=None, seeds=[0]),
    # TIGER's own benchmark at the paper's T5 (4 + 4 layers, MLP 1024) on 2 cores. Beauty has 131,413
    # training targets (4.53M encoder tokens a pass); an epoch is a fresh sample of 1.5M tokens (about
    # 170 steps, a third of a pass), validated on 500 users; 1,100 steps of 256 (about 2.1 passes)
    # under a cosine schedule after 100 warm-up steps; 5,000 test users (of 22,363). Measured on 2
    # threads (fp32): 85 min of training (4.4 s a step, 31 s per validation) and 6 min of test. The
    # option "mixed_precision": "bf16" trains 1.8-2.0x faster on a CPU with AMX and 8x slower on one
    # without bf16 instructions (benchmarks/training_speed.py, both measured); this row is fp32.
    tiger_benchmark=replace(
        _P.tiger_benchmark,
        tiger={"n_layers": 4, "d_ff": 1024, "lr": 3e-3, "epochs": 7, "max_steps": 1100, "tokens_per_epoch": 1_500_000,
               "patience": None, "schedule": "cosine", "warmup_steps": 100},
        eval={"valid_rows_per_domain": 500, "test_rows_per_domain": 5000}, seeds=[0]),
    # The studies' 12 trained runs fit in ~4 core-hours only on a smaller budget than the main results:
    # one dataset, 4,000 users x 2 epochs in phase 1 (500 steps; 3,000 x 1 epoch left the validation
    # Recall@10 at 0), 2,000 users per domain in phase 2, 500 test rows per domain, and the r / alpha /
    # dropout sweeps on the domain adapters over the reference's phase 1. About 25 min per ablation
    # and 6 min per r / alpha / dropout point on one core.
    gencdr_studies=replace(
        _P.gencdr_studies, datasets=["amazon14-food-kitchen"],
        universal={"epochs": 2, "max_users": 4000}, domain={"epochs": 1, "max_users": 2000},
        eval={"valid_rows_per_domain": 100, "test_rows_per_domain": 500},
        sensitivity=("amazon14-food-kitchen", "Food"),
        sweeps={"n_experts": [2, 4, 8], "r": [4, 8, 16], "alpha": [8, 16, 32], "dropout": [0.0, 0.05, 0.1]},
        sweep_scope="domain"),
    xcross=replace(
        _P.xcross,
        backbone="minilm",  # all-MiniLM-L6-v2: 6 layers, d = 384
        lora=replace(_P.xcross.lora, target_modules=["query", "value"]),
        n_neg_train=9,  # 10 choices in training (a third of the compute); evaluation keeps 30
        train=EncoderPhase(epochs=1, lr=1e-3, weight_decay=0.01, batch_size=2),
        mixture_lr=1e-3, max_train_rows=200, max_valid_rows=40, max_test_rows=100,
        xcross=replace(_P.xcross.xcross, n_layers=4),  # top 4 of 6 layers
        layers_study=[1, 2, 4],  # of 6 layers (the paper: 1, 2, 4, 8 of 12); 4 is the main run
        limited=LimitedData(sizes=[50, 100, 200], subsets=2),
        id_baselines=replace(_P.xcross.id_baselines, epochs=50, patience=3)),
    # SmolLM2-135M cut to its first 2 of 30 layers, 16-token texts. Measured on this machine
    # (benchmarks/utgrec_tokenizer_throughput.py, one thread, both cores busy): 39 items/s encoded, 3.6
    # items/s trained (30 layers: 1.8 and 0.3). So the tokenizer trains on the 500 most interacted items
    # of a domain for 2 + 2 epochs, and each source domain keeps its 2,000 most interacted items (for the
    # tokenizer and the T5's pre-training); the target keeps all of them.
    utgrec_tokenizer=replace(
        _P.utgrec_tokenizer, backbone="smollm2-135m", num_layers=2, mlp_hidden=256,
        lora=TargetedLoRA(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        decoder=ReconstructionDecoder(d_model=128, n_heads=4, d_ff=512),
        max_text_tokens=16, max_items_per_domain=500, max_source_items_per_domain=2000,
        # the paper's learning rates: at 1e-3 the ~100 steps of the book's budget collapse the codebooks
        # (Tools: 1 code per level used, 99.98% of the items on one raw ID)
        pretrain=Optimisation(epochs=2, lr=3e-4, batch_size=32),
        finetune=Optimisation(epochs=2, lr=1e-4, batch_size=32)),
    # the book's TIGER T5 (2 + 2 layers, MLP 512); 300k encoder tokens an epoch (~1.5 min on 1 thread).
    # Recall@10 is ~1% on Tools: every test row (10,962, ~7 min of beam search on 1 thread) rather than a
    # sample of 1,000 (~10 hits, too few to tell two variants apart); 500 validation rows.
    utgrec_recommender=replace(
        _P.utgrec_recommender, t5=replace(_P.utgrec_recommender.t5, n_layers=2, d_ff=512),
        eval={"beams": 20, "valid_rows_per_domain": 500, "test_rows_per_domain": None},
        pretrain=T5Phase(epochs=2, lr=3e-3, batch_size=256, tokens_per_epoch=300_000),
        finetune=T5FinetunePhase(epochs=4, lr=3e-3, batch_size=256, tokens_per_epoch=300_000, patience=2)),
    # Tools held out (the smallest domain: every target item is encoded); 4 of the paper's 6 depths (its
    # smallest, the book's own, and two deeper), 3 values per sweep; tree against plain codebooks at two
    # seeds (one seed left the question at p = .055)
    utgrec_studies=replace(_P.utgrec_studies, targets=["Tools"], depths=[1, 2, 4, 6], seeds=[0, 1],
                           sweeps={"alpha": [1, 3, 10], "mu": [0.001, 0.01, 0.03], "eta": [0.01, 0.03, 0.3]}),
)

CI = replace(
    _P,
    device="cpu",
    torch_threads=2,
    text_encoder=replace(_P.text_encoder, batch_size=256),
    id_baselines=replace(_P.id_baselines, batch_size=256, epochs=2, patience=1, max_valid_rows=1000,
                         runs=[("amazon18-xcross", "Tools", ["pop", "sasrec-ce"])], seeds=[0]),
    gencdr_tokenizer=replace(_P.gencdr_tokenizer, datasets={"amazon18-xcross": ["Sports", "Tools"]},
                             pretrain=Optimisation(epochs=5, lr=1e-3, batch_size=512),
                             adapters=Optimisation(epochs=2, lr=1e-3, batch_size=512),
                             collision_rule="extra_level"),
    generative_eval=replace(_P.generative_eval, beams=10, valid_rows_per_domain=30, test_rows_per_domain=60,
                            batch_size=30),
    gencdr_recommender=replace(
        _P.gencdr_recommender, num_layers=1, target_modules=["q_proj", "v_proj"],
        experts=LoRAExperts(n=2, r=4, alpha=8, dropout=0.0), domain_lora=LoRA(r=4, alpha=8, dropout=0.0),
        universal=LLMPhase(epochs=1, lr=1e-3, batch_size=16, patience=None, max_users=300),
        domain=LLMPhase(epochs=1, lr=1e-3, batch_size=16, patience=None, max_users=300),
        mixed_precision="no", seeds=[0]),
    tiger=replace(_P.tiger, n_layers=1, d_ff=256, epochs=1, tokens_per_epoch=20_000, patience=None, seeds=[0]),
    gencdr_studies=replace(
        _P.gencdr_studies, datasets=["amazon18-xcross"], universal={"max_users": 200}, domain={"max_users": 100},
        eval={"valid_rows_per_domain": 20, "test_rows_per_domain": 30}, sensitivity=("amazon18-xcross", "Tools"),
        sweeps={"n_experts": [1, 2], "r": [2, 4], "alpha": [8], "dropout": [0.0]}, sweep_scope="domain"),
    xcross=replace(
        _P.xcross, domains=["Tools", "Sports", "Toys"],
        backbone="tiny",  # a randomly initialised 2-layer BERT with MiniLM's tokenizer
        lora=TargetedLoRA(r=2, alpha=4, dropout=0.0, target_modules=["query", "value"]),
        n_neg_train=4, train=EncoderPhase(epochs=1, lr=1e-3, weight_decay=0.0, batch_size=4),
        mixture_lr=1e-3, max_train_rows=16, max_valid_rows=8, max_test_rows=12,
        xcross=replace(_P.xcross.xcross, n_layers=1), layers_study=[1, 2],
        limited=LimitedData(sizes=[4, 8], subsets=2),
        id_baselines=replace(_P.xcross.id_baselines, epochs=1, patience=None)),
    utgrec_tokenizer=replace(
        _P.utgrec_tokenizer, backbone="tiny", num_layers=None, code_dim=8, root_size=32, leaf_size=64, mlp_hidden=32,
        lora=TargetedLoRA(r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]),
        decoder=ReconstructionDecoder(d_model=16, n_heads=2, d_ff=32),
        max_text_tokens=8, max_items_per_domain=60, max_source_items_per_domain=200,
        pretrain=Optimisation(epochs=1, lr=1e-3, batch_size=16),
        finetune=Optimisation(epochs=1, lr=1e-3, batch_size=16)),
    utgrec_recommender=UTGRecRecommender(
        t5=T5(d_model=32, n_layers=1, n_heads=2, d_kv=16, d_ff=64, dropout=0.0), eval={},
        pretrain=T5Phase(epochs=1, lr=3e-3, batch_size=64, tokens_per_epoch=20_000),
        finetune=T5FinetunePhase(epochs=1, lr=3e-3, batch_size=64, tokens_per_epoch=20_000, patience=None)),
    letter=replace(_P.letter, n_clusters=4),
    utgrec_studies=UTGRecStudies(targets=["Tools"], depths=[1], sweeps={"mu": [0.01], "eta": [0.0]}),
)

SETTINGS: dict[str, Profile] = {"paper": PAPER, "book": BOOK, "ci": CI}


def as_dict(settings: Any) -> Any:
    """A settings object as the plain dict the runners read and store with every result (a field's
    ``metadata["key"]`` names its dict key where the paper's name is a Python keyword, e.g. lambda)."""
    if is_dataclass(settings):
        return {f.metadata.get("key", f.name): as_dict(getattr(settings, f.name)) for f in fields(settings)}
    if isinstance(settings, (list, tuple)):
        return type(settings)(as_dict(v) for v in settings)
    if isinstance(settings, dict):
        return {k: as_dict(v) for k, v in settings.items()}
    return copy.deepcopy(settings)


PROFILES: dict[str, dict[str, Any]] = {name: as_dict(s) for name, s in SETTINGS.items()}


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
