"""Tables of the X-Cross notebooks: our results beside the paper's, with paired tests.

Every result of :mod:`xdrec.xcross.experiment` stores the rank of the true item for each test row
(same users and same 30 choices for every model), so two models compare row by row.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..metrics import metrics_from_ranks, paired_ttest
from ..paper_numbers import XCROSS_TABLE2, XCROSS_TABLE4, xcross_table
from .experiment import KS, METRICS

ID_MODELS = ("sasrec", "bert4rec")
INTEGRATIONS = ("xlora", "meteora", "pooler-scorer", "xcross")
ABLATIONS = {"xcross": "X-Cross", "xcross-no-layers": "- Layers", "xcross-no-interactions": "- Interactions",
             "xcross-no-experts": "- Experts"}
LABELS = {"sasrec": "SASRec", "bert4rec": "BERT4Rec", "xlora": "XLoRA", "meteora": "MeteoRA",
          "pooler-scorer": "Pooler + Scorer", "xcross": "X-Cross", **ABLATIONS}


def label(model: str, target: str) -> str:
    """The paper's row label of one of our models on ``target`` (``lora``: the target's own LoRA)."""
    if model == "lora":
        return f"{target}-LoRA"
    if model.startswith("zeroshot-"):
        return f"{model.removeprefix('zeroshot-')}-LoRA"
    return LABELS[model]


def per_row(record: Mapping, metric: str) -> pd.Series:
    """A metric's value on every test row of a result, indexed by user."""
    rows = record["extra"]["rows"]
    values = metrics_from_ranks(np.asarray(rows["rank"]), KS, per_row=True)[metric]
    return pd.Series(values, index=pd.Index(rows["user"], name="user"))


def paired_p(a: Mapping, b: Mapping, metric: str = "hit@1") -> tuple[float, float]:
    """(mean difference a - b, two-sided paired t-test p) of ``metric`` over the rows both share."""
    x, y = per_row(a, metric), per_row(b, metric)
    common = x.index.intersection(y.index)
    if len(common) < 2:
        raise ValueError("fewer than two shared test rows")
    t = paired_ttest(x.loc[common].to_numpy(), y.loc[common].to_numpy())
    return float((x.loc[common] - y.loc[common]).mean()), t.p


def mirror(records: Mapping[str, Mapping], target: str, *, paper: pd.DataFrame = XCROSS_TABLE2,
           reference: str = "xcross", metric: str = "hit@1") -> pd.DataFrame:
    """One target's table: our metrics, the paper's, and the paired p of ``reference`` against each row.

    ``records`` maps our model names (``"sasrec"``, ``"lora"``, ``"zeroshot-Sports"``, ``"xcross"``, ...)
    to their results on ``target``.
    """
    ours = pd.DataFrame({label(m, target): {k: r["metrics"][k] for k in METRICS} for m, r in records.items()}).T
    theirs = xcross_table(paper, target)
    out = pd.concat({"measured here": ours, "paper-reported": theirs.reindex(ours.index)}, axis=1)
    if reference in records:
        ref = records[reference]
        p = {label(m, target): (paired_p(ref, r, metric)[1] if m != reference else np.nan) for m, r in records.items()}
        out[("measured here", f"p ({LABELS.get(reference, reference)} vs row, {metric})")] = pd.Series(p)
    return out


def zero_shot_matrix(records: Mapping[tuple[str, str], Mapping], domains: Sequence[str], metric: str = "hit@1"):
    """(ours, paper's) source x target frames of ``metric`` for every source LoRA on every domain."""
    ours = pd.DataFrame(index=pd.Index(domains, name="source LoRA"), columns=pd.Index(domains, name="target"),
                        dtype=float)
    for (s, t), r in records.items():
        ours.loc[s, t] = r["metrics"][metric]
    paper = ours.copy() * np.nan
    for s in domains:
        for t in domains:
            paper.loc[s, t] = xcross_table(XCROSS_TABLE2, t).loc[f"{s}-LoRA", metric]
    return ours, paper


def ablation_mirror(records: Mapping[str, Mapping], target: str, metric: str = "hit@1") -> pd.DataFrame:
    """Table 4 for one target: ours and the paper's, with the paired p of X-Cross against each variant."""
    return mirror({m: r for m, r in records.items() if m in ABLATIONS}, target, paper=XCROSS_TABLE4, metric=metric)


def parameter_counts(hidden: int, layers: int, *, r: int, lora_modules: int, n_sources: int,
                     integrated_layers: int) -> dict[str, int]:
    """What a new LoRA adapter and what X-Cross train, for a backbone of ``layers`` x ``hidden``.

    LoRA: ``r x (d_in + d_out)`` per adapted square projection, ``lora_modules`` per layer.
    X-Cross: ``W_concat`` (``2n(n-1) x n d``) per integrated layer plus the ``n`` final weights.
    Both also train a pooler+scorer head (``d^2 + d`` and ``d + 1``), counted separately.
    """
    n = n_sources
    return {"lora": layers * lora_modules * r * 2 * hidden,
            "xcross_w_concat": integrated_layers * 2 * n * (n - 1) * n * hidden,
            "xcross_w_final": n,
            "head": hidden * hidden + hidden + hidden + 1}


# ====================================================================== limited data (Figure 3, Table 3)
def per_user_mean(records: Sequence[Mapping], metric: str = "hit@1") -> pd.Series:
    """``metric`` per test user, averaged over several runs (the random training subsets of one size)."""
    return pd.concat([per_row(r, metric) for r in records], axis=1).mean(axis=1)


def limited_summary(runs: Mapping[tuple[str, int], Sequence[Mapping]], reference: float, *,
                    metric: str = "hit@1", alpha: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Figure 3's points and Table 3's row for one target.

    Args:
        runs: ``(model, size) -> results of that model's runs on the size's random subsets``, for
            ``model`` in ``"xcross"`` and ``"lora"`` (subset ``j`` of both models holds the same rows).
        reference: the target's reference ``metric``: the best source model zero-shot on its test rows.
    Returns:
        (one row per size: mean and std over subsets of both models, X-Cross minus LoRA per user
        averaged over subsets, and its paired t-test p over users;
        Table 3's columns: the largest size at which X-Cross is significantly better than LoRA, the
        smallest sizes at which each model's mean exceeds the reference, and the gap in %).
    """
    sizes = sorted({n for _, n in runs})
    rows = []
    for n in sizes:
        x, lo = runs.get(("xcross", n), []), runs.get(("lora", n), [])
        row = {"size": n, "subsets": len(x)}
        for name, recs in (("xcross", x), ("lora", lo)):
            vals = [r["metrics"][metric] for r in recs]
            row[f"{name}_mean"] = float(np.mean(vals)) if vals else np.nan
            row[f"{name}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else np.nan
        if x and lo:
            a, b = per_user_mean(x, metric), per_user_mean(lo, metric)
            common = a.index.intersection(b.index)
            t = paired_ttest(a.loc[common].to_numpy(), b.loc[common].to_numpy())
            row["diff"], row["p"] = float((a.loc[common] - b.loc[common]).mean()), t.p
        rows.append(row)
    curve = pd.DataFrame(rows).set_index("size")

    def first_above(col):
        above = curve.index[curve[col] > reference]
        return int(above[0]) if len(above) else None

    significant = curve.index[(curve["diff"] > 0) & (curve["p"] < alpha)] if "p" in curve else []
    x_at, l_at = first_above("xcross_mean"), first_above("lora_mean")
    table3 = {"significant_below_M": int(significant.max()) if len(significant) else None,
              "xcross_exceeds_reference_at": x_at, "lora_exceeds_reference_at": l_at,
              "gap_%": round(100 * (l_at - x_at) / l_at, 1) if (x_at and l_at) else None,
              "reference": reference}
    return curve, table3


# ====================================================================== convergence (Sec. 4.6)
def prompt_features(titles: Sequence[str], rows, tokenizer, *, max_history: int, max_length: int = 512) -> dict:
    """Prompt length (mean number of tokens) and prompt diversity (their standard deviation).

    Measured on each row's prompt with its true item as the candidate, as the model reads it
    (the last ``max_history`` history items, at most ``max_length`` tokens).
    """
    from .prompts import prompt_text

    texts = [prompt_text([titles[j] for j in h[-max_history:]], titles[c[0]])
             for h, c in zip(rows.histories, rows.candidates)]
    lengths = np.array([min(len(ids), max_length) for ids in tokenizer(texts)["input_ids"]], dtype=float)
    return {"prompt_length": float(lengths.mean()), "prompt_diversity": float(lengths.std(ddof=1))}


def convergence_regression(frame: pd.DataFrame, y: str = "hit@1",
                           x: Sequence[str] = ("prompt_length", "prompt_diversity")) -> dict:
    """Ordinary least squares of ``y`` on the columns ``x`` (with an intercept), as in Sec. 4.6.

    Returns R^2, the p-value of the regression's F-test (all coefficients zero; it assumes
    independent points), the raw coefficients, and the standardised ones (x and y in standard
    deviations), which do not depend on the units of length.
    """
    X = frame[list(x)].to_numpy(dtype=float)
    Y = frame[y].to_numpy(dtype=float)
    if len(Y) <= len(x) + 1:
        raise ValueError(f"{len(Y)} points cannot fit {len(x)} coefficients and an intercept")
    A = np.column_stack([np.ones(len(Y)), X])
    coef, *_ = np.linalg.lstsq(A, Y, rcond=None)
    resid = Y - A @ coef
    ss_tot = float(((Y - Y.mean()) ** 2).sum())
    r2 = 1 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    scale = X.std(axis=0, ddof=1) / Y.std(ddof=1) if ss_tot > 0 else np.full(len(x), np.nan)
    k, dof = len(x), len(Y) - len(x) - 1
    f = (r2 / k) / ((1 - r2) / dof) if r2 < 1 else float("inf")
    from scipy import stats

    return {"n": len(Y), "r2": r2, "f_p": float(stats.f.sf(f, k, dof)), "intercept": float(coef[0]),
            "coef": dict(zip(x, map(float, coef[1:]))), "coef_standardised": dict(zip(x, map(float, coef[1:] * scale)))}
