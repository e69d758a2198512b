"""GenCDR's cross-domain autoregressive recommender (Eqs. 9-12) on a Hugging Face causal LM.

:class:`GenCDRRecommender` holds

- the **backbone** (any ``AutoModelForCausalLM``; SmolLM2-135M by default), frozen;
- the **semantic-ID tokens**: one per (level, code) and one marker per domain, appended to the
  LLM's vocabulary (:func:`add_semantic_id_tokens` adds them to the tokenizer and resizes the
  embeddings). Their embedding rows are trainable; the text vocabulary stays frozen. Logits are
  computed only over the codes of the level being predicted (``K`` rows, not the 49k-150k rows
  of the text vocabulary), with the same rows as output embeddings when the backbone ties them;
- the **universal interest network**: ``N`` LoRA experts with an MoE gate on the projections of
  every layer (:mod:`xdrec.gencdr.experts`), trained on all domains with the next-ID loss (Eq. 9);
- one **domain LoRA** per domain on top of the frozen base and experts, trained on its domain's
  targets (Eq. 10);
- the **user-level VIB router** (:class:`~xdrec.gencdr.routing.UserRouter`, one VIB router per
  domain): ``gamma = sigma(z_r)``, ``z_r ~ q(z_r | h_t)`` with ``h_t`` the universal network's last
  hidden state at the target-domain marker (the user's history representation);
  ``P_final = (1 - gamma) P_uni + gamma P_spec`` at every decoding step (Eq. 11), each ``P`` a
  softmax over the codes the domain's prefix tree allows (Eq. 12).

Training the router: the paper fuses the two distributions at inference and regularises the router
with VIB, without saying what it is fitted on. Here it is fitted in phase 2 on the likelihood of
the true next code under ``P_final`` (with ``P_spec`` detached, so Eq. 10 alone trains the
adapter) plus ``vib_weight * KL(q(z_r | h_t) || N(0, 1))``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..decoding import TrieTensors, constrained_beam_search, masked_log_softmax
from ..generative import ItemTokens, SemanticIdVocab, prompt_batch
from .experts import LoRAExpertsLinear, set_domain, set_trainable, wrap_linears
from .routing import UserRouter

MODES = ("fused", "universal", "specific")
"""Which distribution decoding follows: ``P_final`` (Eq. 11), ``P_uni`` alone, or ``P_spec`` alone."""


def add_semantic_id_tokens(tokenizer, lm, codebook_sizes: Sequence[int], domains: Sequence[str]) -> SemanticIdVocab:
    """Append ``<a_0>...<d_Food>...`` to ``tokenizer`` and resize ``lm``'s embeddings; returns the vocabulary.

    The new tokens start at the number of embedding rows (tokenizers may hold fewer tokens than
    the embedding has rows; the gap is filled with placeholder tokens so ids agree).
    """
    rows = lm.get_input_embeddings().num_embeddings
    if tokenizer is not None and len(tokenizer) < rows:
        tokenizer.add_tokens([f"<xdrec_unused_{i}>" for i in range(rows - len(tokenizer))])
    if tokenizer is not None and len(tokenizer) != rows:
        raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the embedding {rows} rows")
    vocab = SemanticIdVocab(tuple(codebook_sizes), tuple(domains), offset=rows)
    if tokenizer is not None:
        added = tokenizer.add_tokens(vocab.tokens(), special_tokens=True)
        if added != len(vocab) or tokenizer.convert_tokens_to_ids(vocab.tokens()[0]) != rows:
            raise ValueError("the semantic-ID tokens clash with tokens the tokenizer already has")
    lm.resize_token_embeddings(rows + len(vocab), mean_resizing=False)
    return vocab


class GenCDRRecommender(nn.Module):
    """Frozen LLM + semantic-ID tokens + universal LoRA experts + domain LoRA + user routers."""

    def __init__(self, lm, vocab: SemanticIdVocab, *, target_modules: Sequence[str], experts: dict, domain_lora: dict,
                 router: dict, prefix_tokens: Sequence[int] = (), pad_id: int = 0):
        super().__init__()
        for p in lm.parameters():
            p.requires_grad_(False)
        self.lm, self.vocab = lm, vocab
        self.decoder = lm.get_decoder()
        self.n_text = vocab.offset
        emb = lm.get_input_embeddings().weight
        if emb.shape[0] != vocab.offset + len(vocab):
            raise ValueError("call add_semantic_id_tokens(tokenizer, lm, ...) before building the recommender")
        H = emb.shape[1]
        # new rows start as the mean of the text embeddings plus small noise (as HF's mean resizing)
        gen = torch.Generator().manual_seed(0)
        init = emb[: self.n_text].detach().float()
        self.sid_embed = nn.Parameter(init.mean(0) + 0.02 * init.std() * torch.randn(len(vocab), H, generator=gen))
        tied = bool(getattr(lm.config.get_text_config(), "tie_word_embeddings", False))
        self.sid_head = None if tied else nn.Parameter(self.sid_embed.detach().clone())
        self.layers: list[LoRAExpertsLinear] = wrap_linears(
            self.decoder, target_modules, n_experts=experts["n"], r=experts["r"], alpha=experts["alpha"],
            dropout=experts["dropout"], n_domains=len(vocab.domains), domain_r=domain_lora["r"],
            domain_alpha=domain_lora["alpha"], domain_dropout=domain_lora["dropout"])
        self.user_router = UserRouter(H, len(vocab.domains), hidden=router["hidden"], latent_dim=router["latent_dim"],
                                      vib_weight=router["vib_weight"])
        self.balance_weight = float(experts.get("balance_weight", 0.0))
        self.prefix_tokens = [int(t) for t in prefix_tokens]
        self.pad_id = int(pad_id)
        self.last_gamma: torch.Tensor | None = None
        self.train_phase(universal=True)

    # ------------------------------------------------------------------ what trains
    def train_phase(self, universal: bool = False, domain: int | None = None) -> None:
        """Phase 1 (``universal=True``): experts, gates, ID embeddings. Phase 2 (``domain=d``): adapter d and router d."""
        set_trainable(self.layers, experts=universal, domain=domain)
        self.sid_embed.requires_grad_(universal)
        if self.sid_head is not None:
            self.sid_head.requires_grad_(universal)
        self.user_router.train_domain(domain)

    # ------------------------------------------------------------------ forward pieces
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        text = ids < self.n_text
        base = self.lm.get_input_embeddings()(ids.clamp(max=self.n_text - 1))
        sid = self.sid_embed[(ids - self.n_text).clamp(min=0)].to(base.dtype)
        return torch.where(text.unsqueeze(-1), base, sid)

    def hidden(self, input_ids, attention_mask, position_ids=None, domains: torch.Tensor | None = None,
               past=None, use_cache: bool = False):
        """Last hidden states ``[B, T, H]`` (and the KV cache); ``domains`` switches on each row's domain LoRA."""
        set_domain(self.layers, domains)
        try:
            out = self.decoder(inputs_embeds=self.embed(input_ids), attention_mask=attention_mask,
                               position_ids=position_ids, past_key_values=past, use_cache=use_cache)
        finally:
            set_domain(self.layers, None)
        return out.last_hidden_state, (out.past_key_values if use_cache else None)

    def code_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """Logits over level ``level``'s ``K`` codes only."""
        start = self.vocab.level_offsets[level] - self.n_text
        W = (self.sid_head if self.sid_head is not None else self.sid_embed)[start:start + self.vocab.codebook_sizes[level]]
        return h @ W.to(h.dtype).T

    # ------------------------------------------------------------------ losses
    def universal_loss(self, batch: dict) -> torch.Tensor:
        """Eq. 9 (mean over all next-ID targets) plus the gate balance term."""
        for m in self.layers:
            m.record_gates = self.balance_weight > 0
        try:
            h, _ = self.hidden(batch["input_ids"], batch["attention_mask"])
            nll = self._nll(h, batch, batch["label_level"] >= 0)
            if self.balance_weight > 0:
                nll = nll + self.balance_weight * torch.stack([m.balance_loss() for m in self.layers]).mean()
        finally:
            for m in self.layers:
                m.record_gates, m.last_gates = False, None
        return nll

    def _nll(self, h, batch, select) -> torch.Tensor:
        total, count = h.new_zeros(()), 0
        for level in range(self.vocab.n_levels):
            pos = select & (batch["label_level"] == level)
            if pos.any():
                total = total + F.cross_entropy(self.code_logits(h[pos], level).float(), batch["labels"][pos], reduction="sum")
                count += int(pos.sum())
        return total / max(count, 1)

    def domain_loss(self, batch: dict, domain: int) -> torch.Tensor:
        """Eq. 10 on domain ``domain``'s targets + the router's fused NLL (Eq. 11) + VIB KL."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        select = (batch["label_domain"] == domain) & (batch["label_level"] >= 0)
        h_spec, _ = self.hidden(ids, mask, domains=torch.full((ids.shape[0],), domain, device=ids.device))
        if not select.any():  # no target of this domain in the batch: nothing to learn from it
            return h_spec.sum() * 0.0
        with torch.no_grad():
            h_uni, _ = self.hidden(ids, mask)
        # every target item has all levels, in the same row-major order: level l of an item sits l after level 0
        first = select & (batch["label_level"] == 0)
        b, t = first.nonzero(as_tuple=True)
        gamma, kl = self.user_router.gamma(h_uni[b, t], torch.full_like(b, domain))  # h_t at the item's domain marker
        spec_nll, route_nll, count = h_spec.new_zeros(()), h_spec.new_zeros(()), 0
        for level in range(self.vocab.n_levels):
            y = batch["labels"][b, t + level]
            z_spec = self.code_logits(h_spec[b, t + level], level).float()
            z_uni = self.code_logits(h_uni[b, t + level], level).float()
            spec_nll = spec_nll + F.cross_entropy(z_spec, y, reduction="sum")
            route_nll = route_nll + self.user_router.route_nll(z_uni, z_spec, gamma, y)
            count += len(y)
        return (spec_nll + route_nll) / count + self.user_router.vib_term(kl)

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def recommend(self, histories: Sequence[Sequence[int]], domains: Sequence[int], k: int, *, items: ItemTokens,
                  trie: TrieTensors, beams: int, max_items: int, mode: str = "fused") -> np.ndarray:
        """Top-``k`` items of each row's target domain by constrained beam search; ``[n, k]`` (-1 padding).

        Also leaves each row's ``gamma`` in ``self.last_gamma`` (modes ``fused`` and ``universal``).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        dev = self.sid_embed.device
        batch = prompt_batch(histories, domains, items, max_items=max_items, prefix=self.prefix_tokens, pad_id=self.pad_id)
        ids, mask, pos = batch["input_ids"].to(dev), batch["attention_mask"].to(dev), batch["position_ids"].to(dev)
        doms = batch["domains"].to(dev)
        lengths = mask.sum(1)
        passes = {"uni": None, "spec": doms}
        if mode == "universal":
            passes.pop("spec")
        if mode == "specific":
            passes.pop("uni")
        first, caches = {}, {}
        for name, row_dom in passes.items():
            h, cache = self.hidden(ids, mask, pos, domains=row_dom, use_cache=True)
            first[name] = self.code_logits(h[:, -1], 0)
            caches[name] = [(layer.keys, layer.values) for layer in cache.layers]
            if name == "uni":
                self.last_gamma = self.user_router.gamma(h[:, -1], doms)[0]
        offsets = torch.as_tensor(self.vocab.level_offsets, device=dev)

        def logits(name, prefix):
            B, n, t = prefix.shape
            if t == 0:
                return first[name].unsqueeze(1)
            from transformers import DynamicCache

            past = DynamicCache(ddp_cache_data=[(k_.repeat_interleave(n, 0), v_.repeat_interleave(n, 0))
                                                for k_, v_ in caches[name]])
            toks = (prefix + offsets[:t]).reshape(B * n, t)
            am = torch.cat([mask.repeat_interleave(n, 0), mask.new_ones(B * n, t)], 1)
            pid = lengths.repeat_interleave(n).unsqueeze(1) + torch.arange(t, device=dev)
            row_dom = None if passes[name] is None else doms.repeat_interleave(n)
            h, _ = self.hidden(toks, am, pid, domains=row_dom, past=past, use_cache=True)
            return self.code_logits(h[:, -1], t).view(B, n, -1)

        def step(prefix, allowed):
            if mode != "fused":
                return masked_log_softmax(logits(next(iter(passes)), prefix), allowed)
            p_uni = masked_log_softmax(logits("uni", prefix), allowed).exp()
            p_spec = masked_log_softmax(logits("spec", prefix), allowed).exp()
            p_final = self.user_router.fuse(p_uni, p_spec, self.last_gamma.float())
            return p_final.log().masked_fill(~allowed, float("-inf"))

        res = constrained_beam_search(step, trie, doms, beams)
        return res.items[:, :k].cpu().numpy()

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def gate_usage(self, batch: dict) -> np.ndarray:
        """Mean gate weight ``[layer, domain, expert]`` at the positions that predict each domain's items."""
        for m in self.layers:
            m.record_gates = True
        try:
            self.hidden(batch["input_ids"], batch["attention_mask"])
            sel = batch["label_level"] >= 0
            dom = batch["label_domain"][sel]
            out = np.zeros((len(self.layers), len(self.vocab.domains), self.layers[0].n_experts))
            for i, m in enumerate(self.layers):
                g = m.last_gates[sel]
                for d in range(len(self.vocab.domains)):
                    if (dom == d).any():
                        out[i, d] = g[dom == d].mean(0).cpu().numpy()
        finally:
            for m in self.layers:
                m.record_gates, m.last_gates = False, None
        return out
