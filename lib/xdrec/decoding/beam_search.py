"""Beam search over semantic IDs, constrained by a domain's prefix tree (GenCDR Eq. 12).

The search is model-agnostic: a ``step_fn(prefix, allowed)`` returns, for every row and beam,
log-probabilities over the next level's codes. :func:`masked_log_softmax` is Eq. 12 (the softmax
taken over the valid codes only). GenCDR's step mixes two such distributions (Eq. 11); TIGER's
is one decoder. Beams are tensors ``[batch, beams, ...]`` throughout, the trie is
:class:`~xdrec.decoding.TrieTensors`, and nothing loops over rows or beams in Python.

With ``beams`` at least the number of items of a domain the search is exhaustive: it returns
every item, ordered exactly as scoring each item's whole ID by teacher forcing would
(:func:`score_all_items` does that, and the tests check the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .trie import TrieTensors

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(prefix [B, n, t] codes, allowed [B, n, K_t] bool) -> [B, n, K_t]`` log-probabilities (``-inf`` off ``allowed``)."""

NEG_INF = float("-inf")


def masked_log_softmax(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Eq. 12: ``log softmax`` over the allowed codes only; ``-inf`` elsewhere (all ``-inf`` if none is allowed)."""
    masked = logits.float().masked_fill(~allowed, NEG_INF)
    norm = torch.logsumexp(masked, dim=-1, keepdim=True)
    out = masked - norm.masked_fill(~allowed.any(-1, keepdim=True), 0.0)
    return out.masked_fill(~allowed, NEG_INF)


@dataclass
class BeamResult:
    items: torch.Tensor  # [B, beams] item ids, best first; -1 where fewer valid IDs exist than beams
    codes: torch.Tensor  # [B, beams, L] the generated IDs
    scores: torch.Tensor  # [B, beams] log-probability of each ID (sum over its levels); -inf for padding


@torch.no_grad()
def constrained_beam_search(step_fn: StepFn, trie: TrieTensors, domains: torch.Tensor, beams: int) -> BeamResult:
    """Top-``beams`` IDs of each row's target-domain trie (``domains [B]``), by beam search over the levels.

    Only codes the trie allows are ever expanded, so every returned ID is an item of its row's
    domain. Ties in score are broken by ``torch.topk`` (lower flat index first).
    """
    if beams < 1:
        raise ValueError("beams must be >= 1")
    B = domains.shape[0]
    device = trie.child.device
    nodes = trie.root(domains.to(device)).unsqueeze(1)  # [B, 1]
    scores = torch.zeros(B, 1, device=device)
    prefix = torch.zeros(B, 1, 0, dtype=torch.long, device=device)
    for level in range(trie.n_levels):
        allowed = trie.allowed(nodes, level)  # [B, n, K]
        logp = step_fn(prefix, allowed).to(scores.dtype).masked_fill(~allowed, NEG_INF)
        if torch.isnan(logp).any():  # NaN would rank as a real score and return an arbitrary item
            rows = torch.isnan(logp).flatten(1).any(1).nonzero().flatten()[:5].tolist()
            raise ValueError(f"level {level}: the step function scored allowed codes as NaN (rows {rows}); "
                             "the model's outputs are not finite")
        cand = (scores.unsqueeze(-1) + logp).flatten(1)  # [B, n*K]
        K = allowed.shape[-1]
        top, idx = cand.topk(min(beams, cand.shape[1]), dim=1)
        parent, code = idx // K, idx % K
        prefix = torch.cat([prefix.gather(1, parent.unsqueeze(-1).expand(-1, -1, prefix.shape[-1])),
                            code.unsqueeze(-1)], dim=-1)
        nodes = trie.step(nodes.gather(1, parent), code)
        dead = torch.isinf(top)
        nodes = nodes.masked_fill(dead, -1)
        scores = top
    items = nodes.masked_fill(torch.isinf(scores), -1)
    if items.shape[1] < beams:  # fewer candidates than beams (tiny tries): pad
        pad = beams - items.shape[1]
        items = torch.cat([items, items.new_full((B, pad), -1)], 1)
        scores = torch.cat([scores, scores.new_full((B, pad), NEG_INF)], 1)
        prefix = torch.cat([prefix, prefix.new_full((B, pad, prefix.shape[-1]), -1)], 1)
    return BeamResult(items, prefix, scores)


@torch.no_grad()
def score_all_items(step_fn: StepFn, trie: TrieTensors, domain: int, ids: torch.Tensor, batch_rows: int = 1) -> torch.Tensor:
    """Teacher-forced log-probability of every given ID (``ids [n, L]``, one domain) for ``batch_rows`` rows.

    The exhaustive oracle of :func:`constrained_beam_search`: each ID is scored level by level
    with the same masked softmax. Returns ``[batch_rows, n]``.
    """
    n, L = ids.shape
    doms = torch.full((batch_rows,), domain, dtype=torch.long)
    total = torch.zeros(batch_rows, n)
    for level in range(L):
        prefix = ids[:, :level].unsqueeze(0).expand(batch_rows, -1, -1)
        nodes = trie.walk(doms.unsqueeze(1).expand(-1, n), prefix)
        allowed = trie.allowed(nodes, level)
        logp = step_fn(prefix, allowed).masked_fill(~allowed, NEG_INF)
        total += logp.gather(-1, ids[:, level].view(1, n, 1).expand(batch_rows, -1, -1)).squeeze(-1)
    return total
