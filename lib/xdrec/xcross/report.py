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
