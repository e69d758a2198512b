"""UTGRec's representation discretisation (Sec. 2.2.2): prefix residual and tree-structured codebooks.

An item's ``L`` content representations ``h'_1 .. h'_L`` (the code tokens' hidden states after the
MLP, dimension ``d_c``) become one *basic* and ``L - 1`` *incremental* representations (Eq. 3)::

    h~_1 = h'_1,    h~_l = h'_l - h'_(l-1)   (l = 2 .. L)

The basic one is quantised with the **root** codebook, every incremental one with the single
shared **leaf** codebook (Eq. 4); each codebook is parameterised as ``C = E W`` (``E``: K x d_c
vectors, ``W``: d_c x d_c), so that a gradient through any chosen code also moves ``W`` and with
it the whole codebook space::

    c_1 = argmin_j ||h~_1 - e^r_j W^r||^2,     c_l = argmin_j ||h~_l - e^f_j W^f||^2  (l > 1)

trained with the VQ loss of Eqs. 5-7 (``beta`` = 0.25)::

    L^r    = ||sg[h~_1] - e^r_c1 W^r||^2 + beta ||h~_1 - sg[e^r_c1 W^r]||^2
    L^f    = 1/(L-1) sum_l ||sg[h~_l] - e^f_cl W^f||^2 + beta ||h~_l - sg[e^f_cl W^f]||^2
    L_Code = (L^r + L^f) / 2

The decoders read the *discrete content* representations, the inverse of Eq. 3 (Sec. 2.3.1)::

    h^_1 = e^r_c1 W^r,    h^_l = h^_(l-1) + e^f_cl W^f

whose gradient reaches the encoder by the straight-through estimator (value of the codes,
gradient of ``h'``). In fine-tuning on a new domain ``E^r`` and ``E^f`` are frozen and only
``W^r`` and ``W^f`` train (Sec. 2.4.2): :meth:`TreeCodebooks.freeze_codebook_vectors`.

``tree=False`` is the ablation "w/o TreeCode" (Table 3): one plain codebook (``E`` alone) per
level, each quantising its own level's representation, with the same number of vectors in all
(``L`` codebooks of ``(K_root + K_leaf) / L``, TIGER's 3 x 256 for the paper's 256 + 512).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..quantization.residual import kmeans
from ..quantization.semantic_ids import resolve_collisions


def prefix_residual(h: torch.Tensor) -> torch.Tensor:
    """Eq. 3 on ``[..., L, d]``: the first representation, then each one minus its predecessor."""
    return torch.cat([h[..., :1, :], h[..., 1:, :] - h[..., :-1, :]], dim=-2)


def inverse_prefix_residual(increments: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`prefix_residual` (Sec. 2.3.1): running sums over the ``L`` axis."""
    return increments.cumsum(dim=-2)


@dataclass
class TreeQuantizerOutput:
    codes: torch.Tensor  # [B, L] chosen code per level (level 0: root codebook, then leaf codebook)
    content: torch.Tensor  # [B, L, d_c] discrete content representations h^ (straight-through to h')
    increments: torch.Tensor  # [B, L, d_c] the quantised representations e_c W (no gradient to h')
    loss: torch.Tensor  # L_Code (Eq. 5), averaged over the batch
    last_distances: torch.Tensor  # [B, K_last] squared distance of h~_L to every code of the last level's codebook
    prev_distances: torch.Tensor  # [B, K] the same for level L-1 (collisions in a full prefix move up to it)


class TreeCodebooks(nn.Module):
    """Root + shared leaf codebooks parameterised as ``E W`` (or, ``tree=False``, per-level plain codebooks).

    Args:
        n_codes: ``L``, codes per item (>= 2).
        dim: ``d_c``.
        root_size, leaf_size: ``K`` of the root and leaf codebooks (the paper: 256 and 512).
        beta: the commitment weight of Eqs. 6-7.
        tree: ``False`` for the "w/o TreeCode" ablation.
    """

    def __init__(self, n_codes: int = 3, dim: int = 32, root_size: int = 256, leaf_size: int = 512,
                 beta: float = 0.25, tree: bool = True):
        super().__init__()
        if n_codes < 2:
            raise ValueError(f"n_codes must be >= 2 (a root and at least one leaf code), got {n_codes}")
        self.n_codes, self.dim, self.beta, self.tree = n_codes, dim, beta, tree
        if tree:
            self.sizes = [root_size] + [leaf_size] * (n_codes - 1)
            self.E_root = nn.Parameter(torch.randn(root_size, dim) / dim ** 0.5)
            self.E_leaf = nn.Parameter(torch.randn(leaf_size, dim) / dim ** 0.5)
            self.W_root = nn.Parameter(torch.eye(dim))
            self.W_leaf = nn.Parameter(torch.eye(dim))
        else:
            total = root_size + leaf_size
            if total % n_codes:
                raise ValueError(f"{total} codebook vectors do not split into {n_codes} equal codebooks")
            self.sizes = [total // n_codes] * n_codes
            self.E_levels = nn.Parameter(torch.randn(n_codes, total // n_codes, dim) / dim ** 0.5)

    # ------------------------------------------------------------------ codebooks
    def codebook(self, level: int) -> torch.Tensor:
        """``C = E W`` of ``level`` (0: root; the leaf codebook is the same for every level > 0)."""
        if not self.tree:
            return self.E_levels[level]
        return self.E_root @ self.W_root if level == 0 else self.E_leaf @ self.W_leaf

    def freeze_codebook_vectors(self) -> None:
        """Downstream fine-tuning (Sec. 2.4.2): ``E^r`` and ``E^f`` fixed, ``W^r`` and ``W^f`` train.

        Plain codebooks (``tree=False``) have no ``W``: their vectors are all frozen, so fine-tuning
        adapts only the encoder and decoders, as it keeps the tree's universal vectors ``E`` fixed.
        """
        if not self.tree:
            self.E_levels.requires_grad_(False)
            return
        self.E_root.requires_grad_(False)
        self.E_leaf.requires_grad_(False)

    @staticmethod
    def _check_finite(h: torch.Tensor) -> None:
        bad = (~torch.isfinite(h)).flatten(1).any(-1).nonzero().flatten()
        if len(bad):
            raise ValueError(f"items {bad[:10].tolist()} have NaN or inf representations")

    # ------------------------------------------------------------------ quantisation
    def forward(self, h: torch.Tensor) -> TreeQuantizerOutput:
        """Quantise content representations ``h'`` ``[B, L, d_c]`` (Eqs. 3-7)."""
        if h.dim() != 3 or h.shape[1] != self.n_codes or h.shape[2] != self.dim:
            raise ValueError(f"expected [B, {self.n_codes}, {self.dim}] representations, got {list(h.shape)}")
        self._check_finite(h)
        target = prefix_residual(h) if self.tree else h
        codes, quantised, level_losses, dists = [], [], [], []
        for level in range(self.n_codes):
            c_book = self.codebook(level)
            x = target[:, level]
            d2 = torch.cdist(x.detach(), c_book.detach()).pow(2)  # [B, K]
            c = d2.argmin(-1)
            q = c_book[c]
            level_losses.append(((x.detach() - q) ** 2).sum(-1).mean() + self.beta * ((x - q.detach()) ** 2).sum(-1).mean())
            codes.append(c)
            quantised.append(q)
            dists.append(d2.detach())
        quantised = torch.stack(quantised, 1)
        if self.tree:
            loss = 0.5 * (level_losses[0] + torch.stack(level_losses[1:]).mean())
            content_q = inverse_prefix_residual(quantised)
        else:
            loss = torch.stack(level_losses).mean()
            content_q = quantised
        content = h + (content_q - h).detach()  # straight-through: value of the codes, gradient to h'
        return TreeQuantizerOutput(torch.stack(codes, 1), content, quantised, loss, dists[-1], dists[-2])

    @torch.no_grad()
    def encode(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes ``[B, L]``, last level's squared distances ``[B, K]``) without a loss."""
        out = self.forward(h)
        return out.codes, out.last_distances

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Discrete content representations ``h^`` ``[B, L, d_c]`` of codes ``[B, L]``."""
        q = torch.stack([self.codebook(level)[codes[:, level]] for level in range(self.n_codes)], 1)
        return inverse_prefix_residual(q) if self.tree else q

    @torch.no_grad()
    def init_kmeans(self, h: torch.Tensor, iters: int = 25, seed: int = 0) -> None:
        """Codebook vectors from k-means of the representations they quantise (``W`` set to identity).

        The root codebook on the basic representations, the leaf codebook on the incremental
        representations of every level pooled (``tree=False``: each level on its own).
        """
        target = prefix_residual(h) if self.tree else h
        if self.tree:
            self.W_root.copy_(torch.eye(self.dim))
            self.W_leaf.copy_(torch.eye(self.dim))
            self.E_root.copy_(kmeans(target[:, 0], self.sizes[0], iters=iters, seed=seed))
            self.E_leaf.copy_(kmeans(target[:, 1:].reshape(-1, self.dim), self.sizes[1], iters=iters, seed=seed + 1))
        else:
            for level in range(self.n_codes):
                self.E_levels[level].copy_(kmeans(target[:, level], self.sizes[level], iters=iters, seed=seed + level))

    def usage(self, codes: torch.Tensor) -> list[float]:
        """Fraction of each level's codebook that ``codes`` ``[N, L]`` use (the paper's collapse concern)."""
        return [len(torch.unique(codes[:, level])) / self.sizes[level] for level in range(self.n_codes)]


def unique_ids(codes: torch.Tensor | np.ndarray, last_distances: torch.Tensor | np.ndarray,
               prev_distances: torch.Tensor | np.ndarray | None = None) -> np.ndarray:
    """Item identifiers without collisions (Sec. 2.4.1), still ``L`` codes long.

    Items that share all ``L`` codes: the one nearest its last code keeps it; each other one moves
    its last code to the nearest code still free under its prefix ("the second-nearest or a farther
    neighbour code"), those nearest their original code choosing first. Only when every last-level
    code under a prefix is taken does an item move up a level: it takes the nearest level-``L-1``
    code (by ``prev_distances``) whose prefix still has a free last code, and there its nearest free
    last code. (Each row of distances is the item's squared distance to every code of that level.)
    """
    codes = codes.cpu().numpy() if isinstance(codes, torch.Tensor) else np.asarray(codes)
    last = last_distances.cpu().numpy() if isinstance(last_distances, torch.Tensor) else np.asarray(last_distances)
    try:
        return resolve_collisions(codes, "reassign", last)
    except ValueError:
        if prev_distances is None:
            raise
    prev = prev_distances.cpu().numpy() if isinstance(prev_distances, torch.Tensor) else np.asarray(prev_distances)
    n, k = last.shape
    codes = codes.astype(np.int64)
    own = last[np.arange(n), codes[:, -1]]
    taken: dict[tuple, set[int]] = {}
    out = codes.copy()
    movers = []
    for i in np.lexsort((np.arange(n), own)):  # nearest first keeps a shared code
        key, c = tuple(codes[i, :-1].tolist()), int(codes[i, -1])
        used = taken.setdefault(key, set())
        if c in used:
            movers.append(i)
        else:
            used.add(c)
    for i in movers:  # already ordered by distance to the original code
        key = tuple(codes[i, :-1].tolist())
        for alt in (np.argsort(prev[i], kind="stable") if len(taken.get(key, ())) >= k else [codes[i, -2]]):
            new_key = key[:-1] + (int(alt),)
            used = taken.setdefault(new_key, set())
            if len(used) < k:
                c = next(int(j) for j in np.argsort(last[i], kind="stable") if int(j) not in used)
                out[i, -2], out[i, -1] = int(alt), c
                used.add(c)
                break
        else:
            raise ValueError(f"item row {i}: no free identifier under its first {codes.shape[1] - 2} codes")
    return out
