"""GenCDR's ablation mechanisms: the plain-average gate, unconstrained decoding, one change per run."""
import itertools

import numpy as np
import pytest
import torch

from xdrec.decoding import INVALID, TrieTensors, UnconstrainedTrie, constrained_beam_search, keep_valid
from xdrec.gencdr.experts import AverageGate, LoRAExpertsLinear
from xdrec.gencdr.train_recommender import DEFAULTS, TRAINING_KEYS
from xdrec.gencdr.experiment import ABLATIONS, ablation_switches, sweep_default, sweep_recommender
from xdrec.profiles import get_profile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_average_gate_is_the_plain_mean_of_the_experts():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    m = LoRAExpertsLinear(base, n_experts=3, r=2, alpha=4, dropout=0.0, n_domains=1, domain_r=2, domain_alpha=2,
                          domain_dropout=0.0)
    torch.nn.init.normal_(m.expert_B)
    m.gate = AverageGate(3)
    x = torch.randn(2, 4, 6)
    want = base(x) + 2.0 * sum(x @ m.expert_A[i].T @ m.expert_B[i].T for i in range(3)) / 3
    assert torch.allclose(m(x), want, atol=1e-5)
    m.gate.weight.requires_grad_(True)  # what phase 1 does to a gate: nothing becomes a parameter
    assert all(p is not m.gate.weight for p in m.parameters())
    m.record_gates = True
    m(x)
    assert torch.allclose(m.balance_loss(), torch.tensor(1.0))  # equal use


def _tiny_trie():
    ids = np.array([[0, 1], [0, 2], [1, 0], [2, 2], [1, 1]])
    dom = np.array([0, 0, 0, 1, 1])
    return ids, dom, TrieTensors(ids, dom, 2, [3, 3])


def _table_step(table):
    """A model whose log-probabilities depend on the prefix: ``table[level][prefix code or 0]``."""
    def step(prefix, allowed):
        B, n, t = prefix.shape
        rows = table[t][prefix[..., -1].clamp(min=0)] if t else table[0][0].expand(B, n, -1)
        return torch.log_softmax(rows, -1).expand(B, n, -1).clone()
    return step


def test_unconstrained_search_is_brute_force_over_every_id_and_marks_non_items():
    ids, dom, trie = _tiny_trie()
    gen = torch.Generator().manual_seed(3)
    table = [torch.randn(3, 3, generator=gen), torch.randn(3, 3, generator=gen)]
    step = _table_step(table)
    res = constrained_beam_search(step, UnconstrainedTrie(trie), torch.tensor([0, 1]), beams=9)
    logp = [torch.log_softmax(t, -1) for t in table]
    for row, d in enumerate((0, 1)):
        scored = sorted(((float(logp[0][0, a] + logp[1][a, b]), (a, b)) for a, b in itertools.product(range(3), range(3))),
                        key=lambda s: -s[0])
        assert [tuple(c) for c in res.codes[row].tolist()] == [c for _, c in scored]
        assert torch.allclose(res.scores[row], torch.tensor([s for s, _ in scored]), atol=1e-5)
        item_of = {tuple(i): n for n, i in enumerate(ids.tolist()) if dom[n] == d}  # another domain's ID is invalid too
        assert res.items[row].tolist() == [item_of.get(c, INVALID) for _, c in scored]


def test_constrained_search_never_returns_invalid_where_unconstrained_does():
    _, _, trie = _tiny_trie()
    step = _table_step([torch.tensor([[0.0, 0.0, 5.0]] * 3), torch.tensor([[5.0, 0.0, 0.0]] * 3)])
    free = constrained_beam_search(step, UnconstrainedTrie(trie), torch.tensor([0]), beams=2)
    assert free.codes[0, 0].tolist() == [2, 0] and free.items[0, 0] == INVALID  # (2, 0) is no item
    tree = constrained_beam_search(step, trie, torch.tensor([0]), beams=2)
    assert (tree.items >= 0).all()


def test_keep_valid_drops_invalid_ids_and_keeps_order():
    ranked = np.array([[INVALID, 4, 7, INVALID, 1], [INVALID, INVALID, INVALID, INVALID, 2], [3, -1, -1, -1, -1]])
    assert keep_valid(ranked, 3).tolist() == [[4, 7, 1], [2, -1, -1], [3, -1, -1]]


def test_each_ablation_is_one_change_and_only_training_changes_retrain():
    assert ablation_switches("full") == DEFAULTS
    for name, change in ABLATIONS.items():
        sw = ablation_switches(name)
        assert {k for k in sw if sw[k] != DEFAULTS[k]} == set(change)
    # decoding-only ablations reuse the full model's weights
    same = [n for n in ABLATIONS if all(ablation_switches(n)[k] == DEFAULTS[k] for k in TRAINING_KEYS)]
    assert same == ["full", "no-specific", "no-prefix-tree"]
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_switches("no-such")


@pytest.mark.parametrize("scope", ["all", "domain"])
@pytest.mark.parametrize("param,value", [("n_experts", 8), ("r", 16), ("alpha", 32), ("dropout", 0.1)])
def test_a_sweep_changes_one_hyper_parameter_of_the_chosen_loras(param, value, scope):
    cfg = get_profile("book")["gencdr_recommender"]
    new = sweep_recommender(cfg, param, value, scope)
    assert sweep_default(new, param) == value and sweep_default(cfg, param) != value
    changed = {(sec, k) for sec in ("experts", "domain_lora") for k in cfg[sec] if cfg[sec][k] != new[sec][k]}
    want = ({("experts", "n")} if param == "n_experts" else
            {("domain_lora", param)} | ({("experts", param)} if scope == "all" else set()))
    assert changed == want
    assert {k: v for k, v in new.items() if k not in ("experts", "domain_lora")} == \
        {k: v for k, v in cfg.items() if k not in ("experts", "domain_lora")}
