"""xdrec.training.fit: resume is exact, early stopping, checkpoint files are safe to load."""
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from xdrec.io import load_safetensors
from xdrec.training import TrainConfig, fit, rng_state, seed_everything, set_rng_state


pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(torch.nn.Module):
    """A small classifier with dropout, so training consumes torch's RNG."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 3)
        )

    def forward(self, x, y):
        return torch.nn.functional.cross_entropy(self.net(x), y)


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(240, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def loader():
    x, y = data()
    return DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)


def tuple_loss(model, batch):
    return model(*batch)


def random_metric(model):
    """A validation 'metric' drawn from NumPy's global RNG: resume must restore that RNG too."""
    return {"recall@10": float(np.random.rand()), "n": 3}


def make_model(seed):
    torch.manual_seed(seed)
    return Tiny()


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_matches_straight_run_bitwise(tmp_path):
    cfg = dict(lr=1e-2, patience=None, seed=7, progress=False)
    straight = make_model(0)
    r_straight = fit(straight, loader(), random_metric, TrainConfig(epochs=4, **cfg), loss_fn=tuple_loss)

    ckpt = tmp_path / "run"
    first = make_model(0)
    r1 = fit(first, loader(), random_metric, TrainConfig(epochs=2, checkpoint_dir=ckpt, **cfg), loss_fn=tuple_loss)
    assert r1.resumed_from is None and r1.epochs_run == 2
    # A fresh process would rebuild the model with other initial weights: they are overwritten.
    resumed = make_model(123)
    r2 = fit(resumed, loader(), random_metric, TrainConfig(epochs=4, checkpoint_dir=ckpt, **cfg), loss_fn=tuple_loss)
    assert r2.resumed_from == 2
    assert [h["epoch"] for h in r2.history] == [1, 2, 3, 4]
    assert [h["train_loss"] for h in r2.history] == [h["train_loss"] for h in r_straight.history]
    assert [h["valid/recall@10"] for h in r2.history] == [h["valid/recall@10"] for h in r_straight.history]
    assert r2.best_epoch == r_straight.best_epoch
    for k, v in weights(straight).items():
        assert torch.equal(v, resumed.state_dict()[k]), k

    # The run is finished: a third call trains nothing and loads the best weights.
    again = make_model(5)
    r3 = fit(again, loader(), random_metric, TrainConfig(epochs=4, checkpoint_dir=ckpt, **cfg), loss_fn=tuple_loss)
    assert r3.skipped and r3.best_epoch == r2.best_epoch and r3.history == r2.history
    for k, v in weights(straight).items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_checkpoint_files_are_safe_to_load(tmp_path):
    ckpt = tmp_path / "run"
    model = make_model(0)
    fit(model, loader(), random_metric, TrainConfig(epochs=3, checkpoint_dir=ckpt, progress=False), loss_fn=tuple_loss)
    last = json.loads((ckpt / "last.json").read_text())
    assert last["epoch"] == 3
    assert sorted(p.name for p in ckpt.glob("epoch-*")) == ["epoch-0003"]  # older epochs removed
    state = torch.load(ckpt / last["dir"] / "trainer_state.pt", weights_only=True)
    assert state["loop"]["epoch"] == 3 and len(state["loop"]["history"]) == 3
    assert "state" in state["optimizer"] and "rng" in state
    tensors = load_safetensors(ckpt / last["dir"] / "model.safetensors")
    assert set(tensors) == set(model.state_dict())
    assert (ckpt / last["best_file"]).exists()
    done = json.loads((ckpt / "done.json").read_text())
    assert done["result"]["stop_reason"] == "epochs"
    assert not list(ckpt.glob(".*.tmp"))  # no leftovers of atomic writes


def test_early_stopping_keeps_the_best_weights():
    # validation metric: 0.5 at epoch 1, then only worse -> with patience 2 stop after epoch 3
    scores = iter([0.5, 0.4, 0.3, 0.9, 0.9])
    snapshots = {}

    def evaluate(model):
        snapshots[len(snapshots) + 1] = weights(model)
        return {"recall@10": next(scores)}

    model = make_model(0)
    result = fit(model, loader(), evaluate, TrainConfig(epochs=10, patience=2, progress=False), loss_fn=tuple_loss)
    assert result.stop_reason == "early_stop"
    assert result.epochs_run == 3 and len(result.history) == 3
    assert result.best_epoch == 1 and result.best_metric == 0.5
    for k, v in snapshots[1].items():
        assert torch.equal(v, model.state_dict()[k])


def test_max_steps_callable_data_and_linear_schedule():
    x, y = data()

    def batches(epoch):  # rebuilt every epoch: 240 / 40 = 6 batches
        order = torch.randperm(len(x))
        return [(x[order[i:i + 40]], y[order[i:i + 40]]) for i in range(0, len(x), 40)]

    model = make_model(0)
    cfg = TrainConfig(epochs=5, max_steps=9, schedule="linear", warmup_steps=2, progress=False)
    result = fit(model, batches, None, cfg, loss_fn=tuple_loss)
    assert result.stop_reason == "max_steps" and result.global_step == 9
    assert [h["steps"] for h in result.history] == [6, 3]
    assert result.history[-1]["lr"] == pytest.approx(0.0)
    assert result.best_epoch == 2 and result.best_metric is None


def test_trainable_only_checkpoint(tmp_path):
    model = make_model(0)
    model.net[0].requires_grad_(False)
    frozen = model.net[0].weight.clone()
    cfg = TrainConfig(epochs=2, checkpoint_dir=tmp_path / "r", checkpoint_trainable_only=True, progress=False)
    result = fit(model, loader(), random_metric, cfg, loss_fn=tuple_loss)
    assert result.trainable_params == 16 * 3 + 3
    saved = load_safetensors(next((tmp_path / "r").glob("best-*.safetensors")))
    assert set(saved) == {"net.3.weight", "net.3.bias"}
    assert torch.equal(model.net[0].weight, frozen)


def test_rng_state_roundtrip():
    seed_everything(3)
    state = rng_state()
    a = (np.random.rand(), torch.rand(1).item())
    np.random.rand(), torch.rand(1)
    set_rng_state(state)
    assert (np.random.rand(), torch.rand(1).item()) == a


class TiedTiny(torch.nn.Module):
    """An embedding tied to the output layer, as in T5 and GPT: two state-dict names, one tensor."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(3, 6)
        self.hidden = torch.nn.Linear(6, 6)
        self.out = torch.nn.Linear(6, 3, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, x, y):
        return torch.nn.functional.cross_entropy(self.out(torch.tanh(self.hidden(x))), y)


@pytest.mark.parametrize("folder", [False, True])
def test_best_weights_of_a_tied_model_come_back(tmp_path, folder):
    """The best epoch's weights are restored with or without a checkpoint folder, ties intact."""
    scores = iter([0.2, 0.9, 0.1])
    snapshots = {}

    def evaluate(model):
        snapshots[len(snapshots) + 1] = weights(model)
        return {"recall@10": next(scores)}

    torch.manual_seed(0)
    model = TiedTiny()
    ckpt = tmp_path / "r" if folder else None
    cfg = TrainConfig(epochs=3, lr=1e-2, patience=None, checkpoint_dir=ckpt, progress=False)
    result = fit(model, loader(), evaluate, cfg, loss_fn=tuple_loss)
    assert result.best_epoch == 2 and result.epochs_run == 3
    assert not torch.equal(snapshots[2]["embed.weight"], snapshots[3]["embed.weight"])
    for k, v in snapshots[2].items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert model.out.weight is model.embed.weight
