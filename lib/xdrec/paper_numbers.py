"""Numbers the papers report, transcribed from their tables, for side-by-side display.

Every table in the book that mirrors a paper shows these beside our measurements, labelled
"paper-reported" with the paper's own dataset. Nothing here is ever used as a result of ours.
Sources: ``shared/papers/gencdr-aaai26-full.txt`` (GenCDR, AAAI 2026), ``xcross-sigir25.txt``
(X-Cross, SIGIR 2025), ``utgrec.txt`` (UTGRec).
"""
from __future__ import annotations

import pandas as pd

# GenCDR Table 1: dataset statistics (sparsity and overlap computed after merging a pair).
GENCDR_TABLE1 = pd.DataFrame(
    [
        ("Sports", 35598, 18357, 296337, "99.95%", "1.73% (704)"),
        ("Clothing", 39387, 23033, 278677, "99.97%", "1.73% (704)"),
        ("Phones", 27879, 10429, 194439, "99.93%", "0.55% (404)"),
        ("Electronics", 192403, 63001, 1689188, "99.99%", "0.55% (404)"),
        ("Books", 1713, 8601, 104295, "99.29%", "7.48% (2,058)"),
        ("Movies", 2628, 20964, 1249016, "97.73%", "7.48% (2,058)"),
    ],
    columns=["domain", "users", "items", "interactions", "sparsity", "overlap"],
)

# X-Cross Table 1 (after user sampling, except Tools); density in parentheses in the paper.
XCROSS_TABLE1 = pd.DataFrame(
    [
        ("Electronics", 26319, 12031, 165541, 5.2e-4, "Tools+Toys"),
        ("Sports", 19244, 10036, 120122, 6.2e-4, "Toys+Electronics"),
        ("Tools", 10962, 5820, 66164, 1.0e-3, "Sports+Electronics"),
        ("Toys", 21342, 10457, 131485, 5.9e-4, "Sports+Electronics"),
    ],
    columns=["domain", "users", "items", "interactions", "density", "source domains"],
)

# UTGRec Table 1 (Amazon 2023; pre-training = five domains merged).
UTGREC_TABLE1 = pd.DataFrame(
    [
        ("Pre-training", 999334, 344412, 8609909, 8.62, "99.997%"),
        ("Instrument", 57439, 24587, 511836, 8.91, "99.964%"),
        ("Scientific", 50985, 25848, 412947, 8.10, "99.969%"),
        ("Game", 94762, 25612, 814586, 8.60, "99.966%"),
        ("Office", 223308, 77551, 1577570, 7.07, "99.991%"),
    ],
    columns=["dataset", "users", "items", "interactions", "avg_len", "sparsity"],
)

# GenCDR Table 2: Recall/NDCG@5/10, leave-last-out, full ranking. Rows: (domain, metric).
_GENCDR_T2_MODELS = ["BERT4Rec", "SASRec", "STOSA", "VQ-Rec", "TIGER", "HSTU", "C2DSR", "TriCDR", "LLM4CDSR", "GenCDR"]
_GENCDR_T2 = {
    ("Sports", "recall@5"): [0.0188, 0.0197, 0.0236, 0.0261, 0.0267, 0.0254, 0.0265, 0.0266, 0.0263, 0.0274],
    ("Sports", "ndcg@5"): [0.0121, 0.0126, 0.0162, 0.0238, 0.0244, 0.0241, 0.0253, 0.0255, 0.0257, 0.0261],
    ("Sports", "recall@10"): [0.0325, 0.0334, 0.0346, 0.0389, 0.0397, 0.0381, 0.0395, 0.0396, 0.0398, 0.0403],
    ("Sports", "ndcg@10"): [0.0169, 0.0173, 0.0283, 0.0281, 0.0287, 0.0277, 0.0258, 0.0259, 0.0260, 0.0262],
    ("Clothing", "recall@5"): [0.0128, 0.0132, 0.0162, 0.0171, 0.0173, 0.0175, 0.0172, 0.0174, 0.0176, 0.0181],
    ("Clothing", "ndcg@5"): [0.0078, 0.0081, 0.0119, 0.0129, 0.0125, 0.0132, 0.0158, 0.0161, 0.0163, 0.0167],
    ("Clothing", "recall@10"): [0.0219, 0.0227, 0.0223, 0.0248, 0.0241, 0.0253, 0.0255, 0.0258, 0.0261, 0.0265],
    ("Clothing", "ndcg@10"): [0.0105, 0.0108, 0.0135, 0.0170, 0.0167, 0.0174, 0.0191, 0.0194, 0.0196, 0.0203],
    ("Phones", "recall@5"): [0.0331, 0.0345, 0.0415, 0.0411, 0.0423, 0.0415, 0.0428, 0.0434, 0.0431, 0.0436],
    ("Phones", "ndcg@5"): [0.0215, 0.0224, 0.0283, 0.0308, 0.0315, 0.0327, 0.0392, 0.0396, 0.0401, 0.0411],
    ("Phones", "recall@10"): [0.0524, 0.0537, 0.0618, 0.0607, 0.0613, 0.0615, 0.0589, 0.0593, 0.0614, 0.0621],
    ("Phones", "ndcg@10"): [0.0278, 0.0287, 0.0346, 0.0399, 0.0406, 0.0425, 0.0493, 0.0505, 0.0506, 0.0512],
    ("Electronics", "recall@5"): [0.0179, 0.0186, 0.0213, 0.0219, 0.0228, 0.0232, 0.0235, 0.0238, 0.0237, 0.0241],
    ("Electronics", "ndcg@5"): [0.0118, 0.0122, 0.0148, 0.0211, 0.0214, 0.0226, 0.0229, 0.0231, 0.0230, 0.0235],
    ("Electronics", "recall@10"): [0.0276, 0.0285, 0.0315, 0.0318, 0.0322, 0.0328, 0.0336, 0.0339, 0.0338, 0.0342],
    ("Electronics", "ndcg@10"): [0.0149, 0.0154, 0.0172, 0.0262, 0.0269, 0.0271, 0.0278, 0.0280, 0.0279, 0.0283],
    ("Books", "recall@5"): [0.0089, 0.0093, 0.0142, 0.0175, 0.0172, 0.0181, 0.0152, 0.0155, 0.0161, 0.0192],
    ("Books", "ndcg@5"): [0.0071, 0.0076, 0.0117, 0.0178, 0.0177, 0.0180, 0.0143, 0.0148, 0.0153, 0.0187],
    ("Books", "recall@10"): [0.0176, 0.0182, 0.0219, 0.0224, 0.0221, 0.0230, 0.0205, 0.0211, 0.0216, 0.0237],
    ("Books", "ndcg@10"): [0.0158, 0.0164, 0.0165, 0.0201, 0.0198, 0.0206, 0.0182, 0.0185, 0.0189, 0.0212],
    ("Movies", "recall@5"): [0.1503, 0.1542, 0.1562, 0.1680, 0.1652, 0.1682, 0.1588, 0.1601, 0.1613, 0.1713],
    ("Movies", "ndcg@5"): [0.1015, 0.1047, 0.1063, 0.1182, 0.1156, 0.1189, 0.1092, 0.1105, 0.1149, 0.1215],
    ("Movies", "recall@10"): [0.1798, 0.1825, 0.1753, 0.1922, 0.1893, 0.1931, 0.1854, 0.1865, 0.1878, 0.1971],
    ("Movies", "ndcg@10"): [0.1211, 0.1265, 0.1223, 0.1261, 0.1255, 0.1268, 0.1203, 0.1217, 0.1225, 0.1275],
}
GENCDR_TABLE2 = pd.DataFrame(
    [(d, m, model, v) for (d, m), vals in _GENCDR_T2.items() for model, v in zip(_GENCDR_T2_MODELS, vals)],
    columns=["domain", "metric", "model", "value"],
)


def gencdr_table2(domain: str, models: list[str] | None = None) -> pd.DataFrame:
    """GenCDR Table 2 rows for one domain as a models x metrics frame (paper-reported)."""
    t = GENCDR_TABLE2[GENCDR_TABLE2.domain == domain]
    if t.empty:
        raise KeyError(f"GenCDR Table 2 has no domain {domain!r}; it has {sorted(set(GENCDR_TABLE2.domain))}")
    wide = t.pivot(index="model", columns="metric", values="value")
    wide = wide[["recall@5", "ndcg@5", "recall@10", "ndcg@10"]]
    order = [m for m in _GENCDR_T2_MODELS if m in wide.index and (models is None or m in models)]
    return wide.loc[order]


# GenCDR Table 3: ablations, NDCG@10 on four domains (the drop from the full model in parentheses there).
_GENCDR_T3_DOMAINS = ["Phones", "Electronics", "Sports", "Clothing"]
GENCDR_TABLE3 = pd.DataFrame(
    [
        ("full", "Full model", [0.0512, 0.0283, 0.0262, 0.0203]),
        ("no-mtm", "w/o MTM", [0.0483, 0.0267, 0.0245, 0.0190]),
        ("no-adapter", "w/o Adapter", [0.0466, 0.0255, 0.0238, 0.0183]),
        ("no-specific", "w/o Specific Expert", [0.0448, 0.0245, 0.0226, 0.0173]),
        ("no-universal", "w/o Universal Experts", [0.0425, 0.0232, 0.0212, 0.0162]),
        ("average-gate", "w/o MoE Gate (Avg.)", [0.0475, 0.0262, 0.0242, 0.0186]),
        ("no-prefix-tree", "w/o Prefix Tree", [0.0498, 0.0274, 0.0255, 0.0198]),
    ],
    columns=["variant", "label", "ndcg@10"],
)
GENCDR_TABLE3 = pd.DataFrame(
    [(v, lab, d, x) for v, lab, xs in GENCDR_TABLE3.itertuples(index=False) for d, x in zip(_GENCDR_T3_DOMAINS, xs)],
    columns=["variant", "label", "domain", "ndcg@10"],
)


def gencdr_table3() -> pd.DataFrame:
    """GenCDR Table 3 (paper-reported) as variants x domains of NDCG@10, with the drop from the full model in %."""
    wide = GENCDR_TABLE3.pivot(index="variant", columns="domain", values="ndcg@10")[_GENCDR_T3_DOMAINS]
    wide = wide.loc[list(dict.fromkeys(GENCDR_TABLE3.variant))]
    drop = 100 * (1 - wide / wide.loc["full"])
    return pd.concat({"ndcg@10": wide, "drop %": drop.round(1)}, axis=1)


# X-Cross Table 2: Hit@1/3/10 and MRR (in %), 30 choices (1 true + 29 popularity-sampled), user split
# 3:1:1, DeBERTa-v3-base. Row order as in the paper; columns per domain: hit@1, hit@3, hit@10, mrr.
XCROSS_DOMAINS = ["Tools", "Sports", "Toys", "Electronics"]
_XCROSS_METRICS = ["hit@1", "hit@3", "hit@10", "mrr@10"]
_XCROSS_T2_GROUPS = {
    "SASRec": "single-domain", "BERT4Rec": "single-domain", "FDSA": "single-domain", "S3-Rec": "single-domain",
    "LLM-Rec": "single-domain", "Tools-LoRA": "LoRA (source) / zero-shot", "Sports-LoRA": "LoRA (source) / zero-shot",
    "Toys-LoRA": "LoRA (source) / zero-shot", "Electronics-LoRA": "LoRA (source) / zero-shot",
    "UniSRec": "cross-domain", "VQ-Rec": "cross-domain", "RecFormer": "cross-domain",
    "XLoRA": "domain integration", "MeteoRA": "domain integration", "Pooler + Scorer": "domain integration",
    "X-Cross": "domain integration",
}
_XCROSS_T2 = [
    ('SASRec', [6.38, 14.23, 37.07, 13.26, 9.79, 22.34, 51.96, 19.99, 8.36, 17.92, 41.46, 16.13, 6.34, 16.19, 44.76, 15.05]),
    ('BERT4Rec', [4.79, 11.13, 33.33, 11.02, 7.85, 18.08, 45.54, 16.56, 6.11, 14.71, 38.86, 13.52, 5.07, 12.96, 39.17, 12.59]),
    ('FDSA', [5.43, 12.59, 36.84, 12.19, 8.21, 20.21, 49.52, 18.02, 7.14, 16.37, 44.25, 15.55, 6.04, 16.0, 43.01, 14.53]),
    ('S3-Rec', [5.15, 11.67, 35.02, 11.56, 8.68, 20.21, 50.58, 18.46, 6.75, 16.44, 41.51, 14.72, 5.62, 14.67, 43.69, 13.98]),
    ('LLM-Rec', [14.77, 35.7, 74.14, 30.14, 22.29, 47.96, 82.49, 39.38, 23.45, 49.87, 83.91, 40.87, 25.57, 51.99, 85.03, 42.82]),
    ('Tools-LoRA', [18.74, 39.26, 74.87, 33.69, 13.3, 28.11, 58.35, 24.64, 13.91, 26.4, 53.99, 23.79, 8.85, 20.11, 45.55, 17.75]),
    ('Sports-LoRA', [12.4, 25.58, 55.95, 22.74, 27.98, 51.49, 82.62, 43.49, 14.1, 25.49, 49.5, 22.92, 8.49, 17.63, 44.03, 16.48]),
    ('Toys-LoRA', [11.26, 22.16, 48.34, 20.06, 14.52, 27.54, 55.55, 24.71, 27.99, 52.02, 84.77, 44.05, 8.98, 18.96, 45.21, 17.47]),
    ('Electronics-LoRA', [12.4, 26.32, 50.39, 21.59, 15.82, 30.32, 59.08, 26.74, 14.34, 25.84, 52.85, 23.74, 25.56, 51.77, 84.08, 42.4]),
    ('UniSRec', [7.8, 16.96, 42.64, 15.95, 13.07, 27.49, 58.92, 24.39, 10.03, 19.98, 46.1, 18.46, 7.66, 17.21, 46.33, 16.28]),
    ('VQ-Rec', [6.84, 15.55, 41.04, 14.42, 10.81, 24.06, 55.18, 21.58, 8.03, 17.36, 43.15, 16.08, 7.09, 16.36, 43.84, 15.34]),
    ('RecFormer', [12.8, 26.83, 54.65, 23.35, 18.76, 36.82, 69.15, 31.83, 16.74, 30.31, 57.08, 26.96, 14.19, 29.2, 60.08, 25.59]),
    ('XLoRA', [18.01, 36.21, 69.95, 31.44, 24.45, 44.89, 77.01, 38.68, 23.28, 45.07, 79.9, 38.66, 15.14, 32.43, 66.66, 28.23]),
    ('MeteoRA', [17.74, 36.53, 70.27, 31.26, 21.38, 41.62, 72.04, 35.1, 22.3, 42.96, 76.76, 37.0, 17.65, 37.1, 72.38, 31.91]),
    ('Pooler + Scorer', [14.09, 31.19, 61.7, 26.48, 22.97, 42.56, 74.69, 36.74, 20.73, 39.73, 73.23, 34.45, 15.69, 33.91, 68.18, 29.07]),
    ('X-Cross', [20.11, 40.36, 76.06, 34.87, 28.4, 50.09, 82.05, 43.36, 28.23, 52.66, 85.66, 44.65, 26.25, 50.72, 84.71, 42.84]),
]
# X-Cross Table 4: ablations (beta = gamma = 0: "- Layers"; gamma = 0: "- Interactions"; beta = 0: "- Experts").
_XCROSS_T4 = [
    ('X-Cross', [20.11, 40.36, 76.06, 34.87, 28.4, 50.09, 82.05, 43.36, 28.23, 52.66, 85.66, 44.65, 26.25, 50.72, 84.71, 42.84]),
    ('- Layers', [16.6, 35.11, 68.99, 30.2, 24.24, 44.58, 76.57, 38.53, 22.96, 45.26, 81.73, 38.73, 15.67, 33.33, 69.47, 29.15]),
    ('- Interactions', [17.46, 38.49, 75.01, 32.62, 26.73, 49.55, 81.84, 42.1, 26.1, 50.97, 83.35, 42.51, 23.02, 46.12, 80.72, 38.95]),
    ('- Experts', [19.33, 39.67, 73.78, 33.68, 27.57, 49.75, 81.55, 42.62, 25.81, 49.03, 83.98, 41.8, 26.06, 50.06, 82.88, 42.13]),
]
# X-Cross Table 3: training data needed (sizes sampled 50..1000, five subsets each).
XCROSS_TABLE3 = pd.DataFrame(
    [("Tools", 1000, 200, 500, 60.0), ("Sports", 100, 75, 200, 62.5), ("Toys", 300, 100, 300, 66.7),
     ("Electronics", 300, 50, 300, 83.3)],
    columns=["domain", "significant_below_M", "xcross_exceeds_reference_at", "lora_exceeds_reference_at", "gap_%"],
)
# Sec. 4.6: mean Hit@1 (in %) over five 1000-sample runs per domain, and the regression of accuracy on
# prompt length (mean) and diversity (std): R^2 = 0.86, coefficients -0.65 (length) and 1.60 (diversity).
XCROSS_CONVERGENCE = {"hit@1_at_1000": {"Sports": 21.82, "Toys": 19.42, "Electronics": 16.40, "Tools": 14.87},
                      "r2": 0.86, "coef_length": -0.65, "coef_diversity": 1.60}


def _xcross_long(rows: list) -> pd.DataFrame:
    return pd.DataFrame(
        [(model, d, m, v / 100) for model, vals in rows
         for (d, m), v in zip([(d, m) for d in XCROSS_DOMAINS for m in _XCROSS_METRICS], vals)],
        columns=["model", "domain", "metric", "value"])


XCROSS_TABLE2 = _xcross_long(_XCROSS_T2)
XCROSS_TABLE4 = _xcross_long(_XCROSS_T4)


def xcross_table(table: pd.DataFrame, domain: str) -> pd.DataFrame:
    """One domain of X-Cross Table 2 or 4 (paper-reported) as models x metrics, values in [0, 1]."""
    t = table[table.domain == domain]
    if t.empty:
        raise KeyError(f"X-Cross tables have no domain {domain!r}; they have {XCROSS_DOMAINS}")
    order = list(dict.fromkeys(t.model))
    return t.pivot(index="model", columns="metric", values="value").loc[order, _XCROSS_METRICS]


# UTGRec Table 2 (Amazon 2023 Instrument / Scientific / Game / Office; leave-last-out, full ranking):
# the columns of the models this book reproduces. Transcribed from ``utgrec.txt``.
UTGREC_DATASETS = ["Instrument", "Scientific", "Game", "Office"]
UTGREC_METRICS = ["recall@5", "ndcg@5", "recall@10", "ndcg@10"]
_UTGREC_T2_MODELS = ["BERT4Rec", "SASRec", "TIGER", "LETTER", "UTGRec"]
_UTGREC_T2 = {
    "Instrument": [[0.0307, 0.0333, 0.0370, 0.0372, 0.0398], [0.0195, 0.0213, 0.0244, 0.0246, 0.0263],
                   [0.0485, 0.0523, 0.0564, 0.0580, 0.0616], [0.0252, 0.0274, 0.0306, 0.0313, 0.0334]],
    "Scientific": [[0.0186, 0.0259, 0.0264, 0.0279, 0.0308], [0.0119, 0.0150, 0.0175, 0.0182, 0.0204],
                   [0.0296, 0.0412, 0.0422, 0.0435, 0.0481], [0.0155, 0.0199, 0.0226, 0.0232, 0.0255]],
    "Game": [[0.0460, 0.0535, 0.0559, 0.0563, 0.0592], [0.0298, 0.0331, 0.0366, 0.0372, 0.0390],
             [0.0735, 0.0847, 0.0868, 0.0877, 0.0909], [0.0386, 0.0438, 0.0467, 0.0473, 0.0491]],
    "Office": [[0.0182, 0.0255, 0.0288, 0.0290, 0.0320], [0.0119, 0.0149, 0.0199, 0.0201, 0.0224],
               [0.0277, 0.0375, 0.0417, 0.0421, 0.0462], [0.0150, 0.0187, 0.0241, 0.0243, 0.0269]],
}
UTGREC_TABLE2 = pd.DataFrame(
    [(model, ds, metric, vals[k]) for ds, rows in _UTGREC_T2.items() for metric, vals in zip(UTGREC_METRICS, rows)
     for k, model in enumerate(_UTGREC_T2_MODELS)],
    columns=["model", "dataset", "metric", "value"])

# UTGRec Table 3: ablations on Instrument and Scientific (Recall@10, NDCG@10); keys are our variant names.
UTGREC_TABLE3 = pd.DataFrame(
    [("full", "(0) UTGRec", 0.0616, 0.0334, 0.0481, 0.0255),
     ("no-tree", "(1) w/o TreeCode", 0.0591, 0.0319, 0.0457, 0.0239),
     ("no-ali", "(2) w/o L_Ali", 0.0599, 0.0321, 0.0464, 0.0243),
     ("no-re", "(3) w/o L_Re", 0.0607, 0.0326, 0.0468, 0.0246),
     ("no-ft-tokenizer", "(4) w/o FT(T)", 0.0551, 0.0302, 0.0415, 0.0218),
     ("full-ft", "(5) Full FT", 0.0559, 0.0304, 0.0423, 0.0225),
     ("no-pt-recommender", "(6) w/o PT(R)", 0.0583, 0.0315, 0.0451, 0.0236),
     ("no-pt", "(7) w/o PT", 0.0575, 0.0310, 0.0444, 0.0232)],
    columns=["variant", "label", "Instrument recall@10", "Instrument ndcg@10", "Scientific recall@10",
             "Scientific ndcg@10"])

# UTGRec Figure 3 (Instrument): the paper plots the sweeps without numbers; Sec. 3.4.2 names the best
# value of each ("the model attains the best results ... when alpha is set to 3", "the optimal value of
# mu is found to be 0.01", "optimal performance when eta is 0.03"). Sec. 3.4.1 (Figure 2): TIGER and
# LETTER improve with depth "only in a few layers" and then degrade; UTGRec "generally improves".
UTGREC_FIGURE3_BEST = {"alpha": 3.0, "mu": 0.01, "eta": 0.03}


def utgrec_table2(dataset: str) -> pd.DataFrame:
    """One dataset of UTGRec Table 2 (paper-reported) as models x metrics."""
    t = UTGREC_TABLE2[UTGREC_TABLE2.dataset == dataset]
    if t.empty:
        raise KeyError(f"UTGRec Table 2 has no dataset {dataset!r}; it has {UTGREC_DATASETS}")
    return t.pivot(index="model", columns="metric", values="value").loc[_UTGREC_T2_MODELS, UTGREC_METRICS]


# TIGER on Amazon Beauty (leave-last-out, full ranking), as reported, with the public ports' own
# reported numbers and RecBole's SASRec with cross-entropy (reported on LETTER's Beauty). Sources:
# Rajput et al., NeurIPS 2023, Table 2; the README of cornac's TIGER port; the README of
# phonism/genrec; RecBole's published SASRec-CE result.
TIGER_BEAUTY = pd.DataFrame(
    [
        ("TIGER", "TIGER paper (Rajput et al. 2023, Table 2)", 0.0454, 0.0648, 0.0321, 0.0384),
        ("TIGER", "cornac's TIGER port (its README)", 0.0419, 0.0634, 0.0270, 0.0338),
        ("TIGER", "phonism/genrec TIGER (its README)", 0.0465, 0.0721, 0.0297, 0.0378),
        ("SASRec-CE", "RecBole, on LETTER's Beauty", 0.0543, 0.0821, 0.0315, 0.0405),
    ],
    columns=["model", "source", "recall@5", "recall@10", "ndcg@5", "ndcg@10"],
)
