"""Training an RQ-VAE tokenizer on item embeddings: k-means initialised codebooks, dead codes
revived, the weights kept that reconstruct the items best. Shared by GenCDR's universal tokenizer
(with its masked-code loss), TIGER's RQ-VAE and (through their IDs) LETTER and UTGRec's baselines."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..training import TrainConfig, fit
from .semantic_ids import id_statistics


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def train_rqvae(model, x: torch.Tensor, cfg: dict[str, Any], *, seed: int, ckpt: Path | None, cpu: bool = True,
                progress: bool = True):
    """``model`` (an RQ-VAE with ``rqvae.encoder``, ``quantizer``, ``evaluate`` and a ``loss``) trained
    on ``x`` for ``cfg["pretrain"]["epochs"]``, from k-means codebooks.

    Returns the model (holding the weights with the lowest reconstruction loss over all items,
    in practice one of the last epochs; the total loss is no criterion, since a masked-code loss
    grows as the codes spread over the codebooks), the :class:`~xdrec.training.TrainResult`, and
    the number of dead codes revived before each epoch.
    """
    n, bs = len(x), cfg["pretrain"]["batch_size"]
    first = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: cfg["kmeans_init_items"]]
    with torch.no_grad():
        model.quantizer.init_kmeans(model.rqvae.encoder(x[first]), seed=seed)
    revived: list[int] = []

    def batches(epoch: int):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        if cfg["revive_dead_codes"] and epoch > 1:
            with torch.no_grad():
                dev = _device_of(model)
                z = model.rqvae.encoder(x[perm[: cfg["kmeans_init_items"]]].to(dev))
                revived.append(model.quantizer.reset_dead_codes(z, seed=seed + epoch))
        return [x[perm[s:s + bs]] for s in range(0, n, bs)]

    def evaluate(m) -> dict[str, float]:
        ev = m.evaluate(x.to(_device_of(m)))
        st = id_statistics(ev.pop("codes").cpu().numpy(), cfg["codebook_size"])
        return {"neg_rec": -ev["rec"], **ev, "collision_rate": st["collision_rate"],
                **{f"usage_{d}": u for d, u in enumerate(st["level_usage"])}}

    tc = TrainConfig(epochs=cfg["pretrain"]["epochs"], lr=cfg["pretrain"]["lr"], batch_size=bs, patience=None,
                     seed=seed, checkpoint_dir=ckpt, cpu=cpu, progress=progress)
    result = fit(model, batches, evaluate, tc, loss_fn=lambda m, b: m(b).loss, metric="neg_rec")
    return model, result, revived
