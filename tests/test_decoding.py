"""Constrained decoding of semantic IDs, checked against independent oracles.

- :class:`~xdrec.decoding.TrieTensors` against :class:`~xdrec.decoding.PrefixTree` on every prefix
  (valid or not) of every domain;
- :func:`~xdrec.decoding.masked_log_softmax` (GenCDR Eq. 12) against hand-computed values;
- :func:`~xdrec.decoding.constrained_beam_search` on a tiny transformer against exhaustive
  teacher-forced scoring (:func:`~xdrec.decoding.score_all_items`) and against a plain-Python beam
  search over the prefix trees;
- :class:`~xdrec.decoding.PrefixTreeLogitsProcessor` against Hugging Face's
  ``PrefixConstrainedLogitsProcessor`` (De Cao et al., "Autoregressive Entity Retrieval", ICLR 2021)
  and inside ``model.generate`` beam search.
"""
import itertools
import math

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, PrefixConstrainedLogitsProcessor

from xdrec.decoding import (PrefixTree, PrefixTreeLogitsProcessor, TrieTensors, constrained_beam_search,
                            hf_prefix_allowed_tokens_fn, masked_log_softmax, score_all_items)
from xdrec.encoders.backbones import tiny_causal_lm
from xdrec.generative import SemanticIdVocab

SIZES = (5, 4, 3)  # K_l per level: 60 possible IDs
N_DOMAINS = 3


pytestmark = pytest.mark.usefixtures("one_thread")


def random_catalogue(per_domain=(14, 9, 0), sizes=SIZES, shared=4, seed=0):
    """Distinct random IDs per domain; the first ``shared`` IDs of domain 0 reappear in domain 1.

    Returns ``ids [n, L]``, ``domain [n]`` (items numbered domain by domain) and one
    :class:`PrefixTree` per domain, the oracle.
    """
    rng = np.random.default_rng(seed)
    space = np.array(list(itertools.product(*[range(k) for k in sizes])))
    ids, domain = [], []
    for d, n in enumerate(per_domain):
        chosen = space[rng.choice(len(space), n, replace=False)]
        if d == 1 and shared:
            first = np.asarray(ids[: min(shared, per_domain[0])])
            rest = np.array([r for r in chosen if not (first == r).all(1).any()])[: n - len(first)]
            chosen = np.concatenate([first, rest])
        ids += chosen.tolist()
        domain += [d] * len(chosen)
    ids, domain = np.asarray(ids, dtype=np.int64), np.asarray(domain, dtype=np.int64)
    trees = {d: PrefixTree(ids[domain == d].tolist()) for d in range(len(per_domain))}
    return ids, domain, trees


# ---------------------------------------------------------------------------------------------
# TrieTensors vs PrefixTree
# ---------------------------------------------------------------------------------------------
def test_trie_allowed_equals_prefix_tree_on_every_prefix():
    ids, domain, trees = random_catalogue()
    assert (ids[domain == 1][:4] == ids[domain == 0][:4]).all()  # the catalogue does share IDs
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    L = len(SIZES)
    checked = 0
    for d in range(N_DOMAINS):
        for t in range(L):  # every possible prefix of length t, valid or not: brute force
            combos = list(itertools.product(*[range(k) for k in SIZES[:t]]))  # [()] for t = 0
            prefixes = torch.tensor(combos, dtype=torch.long).reshape(len(combos), t)
            nodes = trie.walk(torch.full((len(prefixes),), d), prefixes)
            allowed = trie.allowed(nodes, t)
            assert allowed.shape == (len(prefixes), SIZES[t])
            for p, row in zip(prefixes.tolist(), allowed):
                assert row.nonzero().flatten().tolist() == trees[d].next_codes(p), (d, p)
                checked += 1
    assert checked == N_DOMAINS * (1 + 5 + 20)


def test_trie_allowed_on_the_prefixes_of_every_item_batched():
    ids, domain, trees = random_catalogue(per_domain=(30, 25, 12), seed=3)
    trie = TrieTensors(ids, domain, N_DOMAINS)
    for t in range(ids.shape[1]):
        nodes = trie.walk(torch.from_numpy(domain), torch.from_numpy(ids[:, :t]))
        allowed = trie.allowed(nodes, t)
        for i in range(len(ids)):
            want = np.zeros(trie.codebook_sizes[t], dtype=bool)
            want[trees[int(domain[i])].next_codes(ids[i, :t].tolist())] = True
            assert (allowed[i].numpy() == want).all(), (i, t)


def test_items_of_maps_every_id_to_its_item_per_domain():
    ids, domain, trees = random_catalogue()
    item_ids = 100 + np.arange(len(ids))  # non-default item numbering
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES, items=item_ids)
    item_of = {(int(d), tuple(r)): int(i) for d, r, i in zip(domain, ids.tolist(), item_ids)}
    space = torch.tensor(list(itertools.product(*[range(k) for k in SIZES])), dtype=torch.long)
    for d in range(N_DOMAINS):
        got = trie.items_of(torch.full((len(space),), d), space).tolist()
        want = [item_of.get((d, tuple(r)), -1) for r in space.tolist()]
        assert got == want
        # never another domain's item
        assert set(got) - {-1} <= set(item_ids[domain == d].tolist())
    # the shared IDs: one ID, a different item in each domain
    shared = torch.from_numpy(ids[:4])
    in0 = trie.items_of(torch.zeros(4, dtype=torch.long), shared)
    in1 = trie.items_of(torch.ones(4, dtype=torch.long), shared)
    in2 = trie.items_of(torch.full((4,), 2), shared)
    assert in0.tolist() == item_ids[:4].tolist()
    assert in1.tolist() == item_ids[domain == 1][:4].tolist()
    assert (in0 != in1).all() and (in2 == -1).all()


def test_empty_domain_and_batched_shapes():
    ids, domain, _ = random_catalogue()
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    assert not trie.allowed(trie.root(torch.tensor([2])), 0).any()  # domain 2 has no items
    nodes = trie.root(torch.tensor([[0, 1], [1, 2]]))
    assert trie.allowed(nodes, 0).shape == (2, 2, SIZES[0])
    # -1 nodes allow nothing, and stepping from them stays -1
    dead = torch.tensor([-1, -1])
    assert not trie.allowed(dead, 1).any()
    assert trie.step(dead, torch.tensor([0, 1])).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="3 codes"):
        trie.items_of(torch.tensor([0]), torch.tensor([[0, 0]]))


def test_duplicate_id_in_a_domain_names_the_items():
    ids = np.array([[0, 1, 2], [1, 1, 1], [0, 1, 2], [0, 1, 2]])
    with pytest.raises(ValueError, match=r"items \[0, 2\] of domain 0 share the ID \[0, 1, 2\]"):
        TrieTensors(ids, np.array([0, 0, 0, 1]), 2)
    # the same ID in two domains is fine
    TrieTensors(ids[[0, 1, 3]], np.array([0, 0, 1]), 2)


def test_bad_codes_and_domains_are_rejected():
    with pytest.raises(ValueError, match="codes must lie"):
        TrieTensors(np.array([[0, 4]]), np.array([0]), 1, codebook_sizes=(2, 4))
    with pytest.raises(ValueError, match="domain ids"):
        TrieTensors(np.array([[0, 1]]), np.array([3]), 2)
    with pytest.raises(ValueError, match="one domain per row"):
        TrieTensors(np.array([[0, 1]]), np.array([0, 0]), 1)


# ---------------------------------------------------------------------------------------------
# masked_log_softmax (Eq. 12)
# ---------------------------------------------------------------------------------------------
def test_masked_log_softmax_hand_computed():
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, 2.0, 3.0]])
    allowed = torch.tensor([[True, False, True, False], [True, True, True, True], [False, False, False, False]])
    out = masked_log_softmax(logits, allowed)
    z = math.exp(1.0) + math.exp(3.0)
    want = torch.tensor([[1.0 - math.log(z), -math.inf, 3.0 - math.log(z), -math.inf],
                         [-math.log(4.0)] * 4,
                         [-math.inf] * 4])
    torch.testing.assert_close(out, want)
    assert not out.isnan().any()
    # the allowed probabilities sum to one
    torch.testing.assert_close(out[:2].exp().sum(-1), torch.ones(2))


def test_masked_log_softmax_equals_softmax_of_the_allowed_subset():
    g = torch.Generator().manual_seed(0)
    logits = 30 * torch.randn(2, 3, 7, generator=g) + 500  # large values: no overflow
    allowed = torch.rand(2, 3, 7, generator=g) < 0.5
    allowed[0, 0] = False
    allowed[1, 2] = True
    out = masked_log_softmax(logits, allowed)
    assert out.shape == logits.shape
    for idx in itertools.product(range(2), range(3)):
        a = allowed[idx]
        want = torch.full((7,), -math.inf)
        if a.any():
            want[a] = torch.log_softmax(logits[idx][a].double(), 0).float()
        torch.testing.assert_close(out[idx], want)


# ---------------------------------------------------------------------------------------------
# constrained_beam_search on a tiny transformer
# ---------------------------------------------------------------------------------------------
TEXT = 10  # token ids below the semantic-ID vocabulary


def lm_setup(per_domain=(14, 9, 11), seed=0, n_rows=5, prompt_len=6):
    ids, domain, trees = random_catalogue(per_domain=per_domain, seed=seed)
    vocab = SemanticIdVocab(SIZES, tuple(f"D{d}" for d in range(N_DOMAINS)), offset=TEXT)
    model = tiny_causal_lm(vocab_size=TEXT + len(vocab), seed=seed)
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(TEXT + len(vocab), (n_rows, prompt_len), generator=g)
    row_domains = torch.arange(n_rows) % N_DOMAINS
    prompts[:, -1] = torch.tensor([vocab.domain_token(int(d)) for d in row_domains])
    return ids, domain, trees, vocab, model, prompts, row_domains


def lm_step_fn(model, prompts: torch.Tensor, vocab: SemanticIdVocab, calls: list | None = None):
    """Step function of a causal LM: feed ``prompt + prefix tokens``, read the next level's code logits."""
    offsets = torch.tensor(vocab.level_offsets)

    def step(prefix: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, n, t = prefix.shape
        if calls is not None:
            calls.append((prefix.clone(), allowed.clone()))
        toks = torch.cat([prompts[:, None, :].expand(B, n, -1), prefix + offsets[:t]], -1).reshape(B * n, -1)
        with torch.no_grad():
            logits = model(input_ids=toks).logits[:, -1]
        K = vocab.codebook_sizes[t]
        codes = logits[:, vocab.level_offsets[t]: vocab.level_offsets[t] + K].reshape(B, n, K)
        return masked_log_softmax(codes, allowed)

    return step


def test_exhaustive_beam_search_equals_teacher_forced_scoring():
    ids, domain, trees, vocab, model, prompts, row_domains = lm_setup()
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    beams = int(np.bincount(domain).max()) + 2  # more beams than items: the search is exhaustive
    res = constrained_beam_search(lm_step_fn(model, prompts, vocab), trie, row_domains, beams)
    assert res.items.shape == (len(prompts), beams) and res.codes.shape == (len(prompts), beams, len(SIZES))
    for d in range(N_DOMAINS):
        rows = (row_domains == d).nonzero().flatten()
        dom_items = np.flatnonzero(domain == d)
        oracle = score_all_items(lm_step_fn(model, prompts[rows], vocab), trie, d, torch.from_numpy(ids[dom_items]),
                                 batch_rows=len(rows))
        for j, r in enumerate(rows.tolist()):
            order = torch.argsort(oracle[j], descending=True, stable=True)
            gaps = -oracle[j][order].diff()
            assert (gaps > 1e-4).all()  # no near-ties: the order is well defined
            n = len(dom_items)
            assert res.items[r, :n].tolist() == dom_items[order.numpy()].tolist()
            torch.testing.assert_close(res.scores[r, :n], oracle[j][order], atol=1e-5, rtol=1e-5)
            assert (res.items[r, n:] == -1).all() and torch.isneginf(res.scores[r, n:]).all()
            assert res.codes[r, :n].tolist() == ids[res.items[r, :n].numpy()].tolist()
            # probabilities of all of a domain's IDs sum to one (a proper distribution over the trie)
            torch.testing.assert_close(res.scores[r, :n].exp().sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


def reference_beam_search(model, prompt: torch.Tensor, tree: PrefixTree, vocab: SemanticIdVocab, beams: int):
    """Textbook beam search in Python: one hypothesis at a time, each step's softmax over V_valid only."""
    hyps = [((), 0.0)]
    for level in range(vocab.n_levels):
        cands = []
        for prefix, score in hyps:
            codes = tree.next_codes(prefix)
            toks = prompt.tolist() + [vocab.level_offsets[l] + c for l, c in enumerate(prefix)]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([toks])).logits[0, -1].double()
            logp = torch.log_softmax(logits[[vocab.level_offsets[level] + c for c in codes]], 0)
            cands += [(prefix + (c,), score + float(lp)) for c, lp in zip(codes, logp)]
        hyps = sorted(cands, key=lambda h: -h[1])[:beams]
    return hyps


def test_narrow_beam_search_returns_valid_distinct_ids_like_a_reference_search():
    ids, domain, trees, vocab, model, prompts, row_domains = lm_setup(per_domain=(30, 25, 28), seed=1)
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    calls = []
    beams = 4
    res = constrained_beam_search(lm_step_fn(model, prompts, vocab, calls), trie, row_domains, beams)
    for r, d in enumerate(row_domains.tolist()):
        items = res.items[r].tolist()
        assert -1 not in items and len(set(items)) == beams  # distinct, all found
        assert all(domain[i] == d for i in items)  # only the row's domain
        assert all(tuple(c) in trees[d] for c in res.codes[r].tolist())
        assert res.codes[r].tolist() == ids[items].tolist()
        assert (res.scores[r].diff() <= 0).all()  # best first
        ref = reference_beam_search(model, prompts[r], trees[d], vocab, beams)
        assert [list(p) for p, _ in ref] == res.codes[r].tolist()
        np.testing.assert_allclose(res.scores[r].numpy(), [s for _, s in ref], atol=1e-5)
    # every prefix the model was asked to extend is a valid prefix of the row's domain
    assert [c[0].shape[-1] for c in calls] == [0, 1, 2]
    for prefix, allowed in calls:
        for r, d in enumerate(row_domains.tolist()):
            for b in range(prefix.shape[1]):
                assert allowed[r, b].any() and trees[d].is_prefix(prefix[r, b].tolist())


def test_beam_search_pads_when_a_domain_has_fewer_ids_than_beams():
    ids, domain, trees, vocab, model, prompts, row_domains = lm_setup(per_domain=(3, 9, 11), seed=2)
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    calls = []
    res = constrained_beam_search(lm_step_fn(model, prompts, vocab, calls), trie, row_domains, beams=6)
    for r, d in enumerate(row_domains.tolist()):
        found = [i for i in res.items[r].tolist() if i >= 0]
        assert len(found) == min(6, int((domain == d).sum())) and len(set(found)) == len(found)
        assert all(domain[i] == d for i in found)
        assert torch.isfinite(res.scores[r, : len(found)]).all() and torch.isneginf(res.scores[r, len(found):]).all()
    # a dead beam (an invalid prefix) may be carried along, but the model is never allowed a code after it
    for prefix, allowed in calls:
        for r, d in enumerate(row_domains.tolist()):
            for b in range(prefix.shape[1]):
                if not trees[d].is_prefix(prefix[r, b].tolist()):
                    assert not allowed[r, b].any()
    with pytest.raises(ValueError, match="beams"):
        constrained_beam_search(lm_step_fn(model, prompts, vocab), trie, row_domains, beams=0)


# ---------------------------------------------------------------------------------------------
# PrefixTreeLogitsProcessor vs Hugging Face's PrefixConstrainedLogitsProcessor
# ---------------------------------------------------------------------------------------------
EOS = 1


def random_histories(ids, domain, vocab, batch_domains, num_beams, t, prompt_len, rng):
    """``input_ids [batch * beams, prompt_len + t]``: random prompts, then ``t`` codes of a random item of each row's domain."""
    rows = []
    for d in batch_domains:
        for _ in range(num_beams):
            item = rng.choice(np.flatnonzero(domain == d))
            prompt = rng.integers(0, TEXT + len(vocab), prompt_len)
            gen = [vocab.level_offsets[l] + int(c) for l, c in enumerate(ids[item, :t])]
            rows.append(np.concatenate([prompt, gen]))
    return torch.as_tensor(np.stack(rows), dtype=torch.long)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_processor_mask_equals_hugging_face_prefix_constrained(seed):
    ids, domain, trees = random_catalogue(per_domain=(20, 15, 18), seed=seed)
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    vocab = SemanticIdVocab(SIZES, ("a", "b", "c"), offset=TEXT)
    V = TEXT + len(vocab)
    rng = np.random.default_rng(seed)
    batch_domains = [2, 0, 1, 0]
    num_beams, prompt_len = 3, 7
    ours = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, prompt_len, torch.tensor(batch_domains), num_beams, EOS)
    hf = PrefixConstrainedLogitsProcessor(
        hf_prefix_allowed_tokens_fn(trees, vocab.level_offsets, prompt_len, batch_domains, num_beams, EOS), num_beams)
    for t in range(vocab.n_levels + 1):  # the last step allows EOS only
        for _ in range(3):
            input_ids = random_histories(ids, domain, vocab, batch_domains, num_beams, t, prompt_len, rng)
            scores = torch.randn(len(input_ids), V, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))
            a, b = ours(input_ids, scores.clone()), hf(input_ids, scores.clone())
            assert torch.equal(torch.isfinite(a), torch.isfinite(b)), t
            assert torch.equal(a[torch.isfinite(a)], b[torch.isfinite(b)])
            assert torch.equal(a[torch.isfinite(a)], scores[torch.isfinite(a)])  # allowed scores untouched
            if t == vocab.n_levels:
                assert torch.isfinite(a).sum(1).tolist() == [1] * len(a) and torch.isfinite(a[:, EOS]).all()
            else:  # only codes of level t are allowed, and at least one per row
                lo, hi = vocab.level_offsets[t], vocab.level_offsets[t] + SIZES[t]
                assert not torch.isfinite(a[:, :lo]).any() and not torch.isfinite(a[:, hi:]).any()
                assert torch.isfinite(a).any(1).all()


def test_processor_kills_a_row_with_an_invalid_prefix():
    ids, domain, trees = random_catalogue(per_domain=(20, 15, 18))
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    vocab = SemanticIdVocab(SIZES, ("a", "b", "c"), offset=TEXT)
    space = {tuple(p) for p in itertools.product(range(SIZES[0]), range(SIZES[1]))}
    invalid = sorted(space - {tuple(r) for r in ids[domain == 0, :2].tolist()})[0]
    valid = ids[np.flatnonzero(domain == 0)[0], :2]
    input_ids = torch.tensor([[3, 4] + [vocab.level_offsets[l] + c for l, c in enumerate(p)] for p in (invalid, valid)])
    out = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, 2, torch.tensor([0]), 2, EOS)(
        input_ids, torch.zeros(2, TEXT + len(vocab)))
    assert torch.isneginf(out[0]).all()  # the beam dies (Hugging Face's processor raises instead)
    assert torch.isfinite(out[1]).sum() == len(trees[0].next_codes(valid.tolist()))


def test_codes_outside_a_level_are_not_allowed_never_an_index_error():
    ids, domain, trees = random_catalogue(per_domain=(20, 15, 18))
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    width = trie.child.shape[1]
    roots = trie.root(torch.tensor([0, 0, 0, 1]))
    first = int(ids[np.flatnonzero(domain == 0)[0], 0])
    got = trie.step(roots, torch.tensor([first, width, width + 7, -3]))
    assert got[0] >= 0 and got[1:].tolist() == [-1, -1, -1]
    # a beam whose prefix holds a token of another level (code >= K there) is dead, not an error
    vocab = SemanticIdVocab(SIZES, ("a", "b", "c"), offset=TEXT)
    bad = vocab.level_offsets[0] + width + 2  # beyond level 0's codes
    input_ids = torch.tensor([[3, bad], [3, vocab.level_offsets[0] + first]])
    out = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, 1, torch.tensor([0]), 2, EOS)(
        input_ids, torch.zeros(2, TEXT + len(vocab)))
    assert torch.isneginf(out[0]).all()
    assert torch.isfinite(out[1]).sum() == len(trees[0].next_codes([first]))


def test_processor_masks_the_scores_in_place():
    ids, domain, _ = random_catalogue(per_domain=(20, 15, 18))
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    vocab = SemanticIdVocab(SIZES, ("a", "b", "c"), offset=TEXT)
    scores = torch.randn(2, TEXT + len(vocab))
    out = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, 1, torch.tensor([0]), 2, EOS)(
        torch.tensor([[3], [4]]), scores)
    assert out.data_ptr() == scores.data_ptr()  # no [rows, V] allocation per step
    assert torch.isfinite(out).sum(1).tolist() == [int((ids[domain == 0, 0][:, None] == np.arange(SIZES[0])).any(0).sum())] * 2


def test_generate_with_processor_returns_valid_ids_then_eos():
    ids, domain, trees = random_catalogue(per_domain=(24, 20, 26), seed=4)
    trie = TrieTensors(ids, domain, N_DOMAINS, codebook_sizes=SIZES)
    vocab = SemanticIdVocab(SIZES, ("a", "b", "c"), offset=TEXT)
    model = tiny_causal_lm(vocab_size=TEXT + len(vocab), seed=4)
    batch_domains = torch.tensor([0, 2, 1, 2])
    prompt_len, num_beams, L = 8, 5, vocab.n_levels
    g = torch.Generator().manual_seed(4)
    prompts = torch.randint(TEXT, TEXT + len(vocab), (len(batch_domains), prompt_len), generator=g)
    prompts[:, -1] = torch.tensor([vocab.domain_token(int(d)) for d in batch_domains])
    proc = PrefixTreeLogitsProcessor(trie, vocab.level_offsets, prompt_len, batch_domains, num_beams, EOS)
    out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                         num_beams=num_beams, num_return_sequences=num_beams, max_new_tokens=L + 1,
                         logits_processor=LogitsProcessorList([proc]), eos_token_id=EOS, pad_token_id=0)
    assert out.shape == (len(batch_domains) * num_beams, prompt_len + L + 1)
    gen = out[:, prompt_len:]
    assert (gen[:, L] == EOS).all()
    codes = gen[:, :L] - torch.tensor(vocab.level_offsets)
    assert ((codes >= 0) & (codes < torch.tensor(SIZES))).all()
    row_dom = batch_domains.repeat_interleave(num_beams)
    items = trie.items_of(row_dom, codes)
    assert (items >= 0).all()
    assert (torch.from_numpy(domain)[items] == row_dom).all()
    for r, d in enumerate(row_dom.tolist()):
        assert tuple(codes[r].tolist()) in trees[d]
    assert all(len(set(items[i * num_beams:(i + 1) * num_beams].tolist())) == num_beams
               for i in range(len(batch_domains)))  # distinct beams
