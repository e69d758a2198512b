"""LETTER's two regularisers of an RQ-VAE tokenizer (Wang et al., CIKM 2024, Sec. 3.1).

**Collaborative regularisation** (LETTER Eq. 5) aligns each item's quantised embedding
``z_hat_i`` with its collaborative-filtering embedding ``h_i`` (from a SASRec trained on the
interactions), contrastively over the batch::

    L_CF = -1/B sum_i log( exp(<z_hat_i, h_i>) / sum_j exp(<z_hat_i, h_j>) )

**Diversity regularisation** (LETTER Eq. 6) counters code-assignment bias: the code vectors of
each codebook are grouped into clusters (constrained, i.e. size-balanced, k-means), and the code
chosen for an item is pulled towards another code of its cluster and pushed from the rest of the
codebook::

    L_Div = -1/B sum_i log( exp(<e_{c_i}, e_+>) / sum_{j != c_i} exp(<e_{c_i}, e_j>) )

where ``e_+`` is drawn uniformly from the other codes of ``c_i``'s cluster. Clusters are
recomputed from the current code vectors at the start of every epoch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def collaborative_loss(z_hat: torch.Tensor, cf: torch.Tensor) -> torch.Tensor:
    """``L_CF``: InfoNCE of ``z_hat`` [B, D] against the CF embeddings ``cf`` [B, D] of the same items."""
    if z_hat.shape != cf.shape:
        raise ValueError(f"z_hat {tuple(z_hat.shape)} and CF embeddings {tuple(cf.shape)} must have the same shape")
    logits = z_hat @ cf.T
    return F.cross_entropy(logits, torch.arange(len(z_hat), device=z_hat.device))


@torch.no_grad()
def balanced_kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Cluster labels [N] of the rows of ``x`` into ``k`` clusters of at most ``ceil(N / k)`` rows.

    Lloyd iterations whose assignment step is capacity-constrained: (row, centroid) pairs are
    taken in order of increasing distance, and a row joins the centroid of its pair if it has no
    cluster yet and the centroid still has room. Centroids start at ``k`` distinct random rows.
    """
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} vectors")
    cap = math.ceil(n / k)
    g = torch.Generator().manual_seed(seed)
    x = x.detach().float().cpu()
    centroids = x[torch.randperm(n, generator=g)[:k]].clone()
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(iters):
        d = torch.cdist(x, centroids)
        order = torch.argsort(d.flatten(), stable=True)
        new = torch.full((n,), -1, dtype=torch.long)
        room = torch.full((k,), cap, dtype=torch.long)
        left = n
        for flat in order.tolist():
            i, j = divmod(flat, k)
            if new[i] < 0 and room[j] > 0:
                new[i] = j
                room[j] -= 1
                left -= 1
                if left == 0:
                    break
        if torch.equal(new, labels):
            break
        labels = new
        for j in range(k):
            centroids[j] = x[labels == j].mean(0)
    return labels


def diversity_loss(codebook: torch.Tensor, codes: torch.Tensor, clusters: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``L_Div`` of one codebook [K, D] for the chosen ``codes`` [B] and the code clusters [K].

    Rows whose code is alone in its cluster have no positive and are left out (0 if none is left).
    """
    K = len(codebook)
    codes = codes.long()
    clusters = clusters.to(codes.device)
    same = clusters[codes][:, None] == clusters[None, :]  # [B, K]
    same[torch.arange(len(codes)), codes] = False
    has = same.any(1)
    if not has.any():
        return codebook.new_zeros(())
    codes, same = codes[has], same[has]
    # e_+: uniform over the other codes of the cluster
    weights = same.float().cpu()
    pos = torch.multinomial(weights, 1, generator=generator).squeeze(1).to(codes.device)
    e = codebook[codes]
    logits = e @ codebook.T  # [B, K]
    logits = logits.masked_fill(F.one_hot(codes, K).bool(), float("-inf"))  # the denominator leaves c_i out
    return (torch.logsumexp(logits, 1) - logits.gather(1, pos[:, None]).squeeze(1)).mean()
