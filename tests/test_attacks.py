import pytest
import torch
from torch import nn

from aaa_core.attacks import PGDConfig, margin_loss, pgd, pgd_iterates, pgd_until_fooled
from aaa_core.evaluation.flags import correct_flags, robust_flags

EPS = 0.3


def accuracy(model, x, y) -> float:
    return correct_flags(model, x, y).float().mean().item()


def test_trained_model_is_accurate(trained_fc, mnist):
    assert accuracy(trained_fc, mnist["x_test"], mnist["y_test"]) > 0.85


def test_pgd_stays_in_ball_and_image_range(trained_fc, mnist):
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    x_adv = pgd(trained_fc, x, y, eps=EPS, alpha=0.05, steps=10, generator=torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max().item() <= EPS + 1e-6
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() > EPS - 1e-3  # it does use the budget


def test_pgd_lowers_accuracy_of_trained_model(trained_fc, mnist):
    x, y = mnist["x_test"][:300], mnist["y_test"][:300]
    x_adv = pgd(trained_fc, x, y, eps=EPS, alpha=0.05, steps=20, generator=torch.Generator().manual_seed(0))
    assert accuracy(trained_fc, x, y) > 0.85
    assert accuracy(trained_fc, x_adv, y) < 0.05
    # ... and far more than uniform noise of the same size does
    noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * EPS).clamp(0, 1)
    assert accuracy(trained_fc, noise, y) > 0.5


@pytest.mark.parametrize("random_start", [True, False])
def test_eps_zero_returns_x(trained_fc, mnist, random_start):
    x, y = mnist["x_test"][:64], mnist["y_test"][:64]
    x_adv = pgd(trained_fc, x, y, eps=0.0, alpha=0.01, steps=10, random_start=random_start)
    assert torch.equal(x_adv, x)
    _, flags = pgd_until_fooled(trained_fc, x, y, eps=0.0, alpha=0.01, steps=10, record_at=[5, 10])
    assert torch.equal(flags[10], correct_flags(trained_fc, x, y))


def test_more_steps_never_raise_accuracy(trained_fc, mnist):
    x, y = mnist["x_test"][:300], mnist["y_test"][:300]
    cfg = PGDConfig(eps=0.1, alpha=0.01, steps=40)
    flags = robust_flags(trained_fc, x, y, cfg, record_at=[0, 1, 5, 10, 20, 40])
    ks = sorted(flags)
    for a, b in zip(ks, ks[1:]):
        assert not (flags[b] & ~flags[a]).any(), f"an example fooled at {a} steps counts as robust at {b}"
    accs = [flags[k].float().mean().item() for k in ks]
    assert accs[0] > accs[-1]  # and the attack actually does something at eps 0.1


def test_restarts_only_lower_accuracy(trained_fc, mnist):
    x, y = mnist["x_test"][:300], mnist["y_test"][:300]
    one = robust_flags(trained_fc, x, y, PGDConfig(eps=0.08, alpha=0.01, steps=10))[10]
    three = robust_flags(trained_fc, x, y, PGDConfig(eps=0.08, alpha=0.01, steps=10, restarts=3))[10]
    assert not (three & ~one).any()


class Probe(nn.Module):
    """A classifier with dropout and BatchNorm, whose mode the attack must leave alone."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(),
                                 nn.Dropout(0.1), nn.Linear(32, 10))

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_attack_leaves_no_parameter_grads_and_keeps_mode(mnist, training, loss):
    torch.manual_seed(0)
    model = Probe().train(training)
    x, y = mnist["x_test"][:32], mnist["y_test"][:32]
    pgd(model, x, y, eps=EPS, alpha=0.05, steps=3, loss=loss)
    if not training:  # the evaluation attack drops fooled examples: a train-mode BatchNorm may see one
        pgd_until_fooled(model, x, y, eps=EPS, alpha=0.05, steps=3, loss=loss)
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training == training for m in model.modules())
    assert not x.requires_grad


def test_margin_loss_sign():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    assert margin_loss(logits, y).tolist() == [-2.0, 2.0]


def test_seeded_attack_is_reproducible(trained_fc, mnist):
    x, y = mnist["x_test"][:64], mnist["y_test"][:64]
    a = pgd(trained_fc, x, y, eps=EPS, alpha=0.05, steps=3, generator=torch.Generator().manual_seed(1))
    b = pgd(trained_fc, x, y, eps=EPS, alpha=0.05, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_record_at_outside_range_is_rejected(trained_fc, mnist):
    with pytest.raises(ValueError, match="record_at"):
        pgd_until_fooled(trained_fc, mnist["x_test"][:4], mnist["y_test"][:4], eps=EPS, alpha=0.1, steps=5,
                         record_at=[6])


def test_iterates_of_one_run_equal_separate_runs(trained_fc, mnist):
    """kNN's non-adaptive PGD-40 and PGD-200 come from one 200-step run: it must equal two separate runs."""
    x, y = mnist["x_test"][:64], mnist["y_test"][:64]
    kwargs = dict(eps=EPS, alpha=0.02, random_start=True)
    iterates = pgd_iterates(trained_fc, x, y, at=[3, 12], generator=torch.Generator().manual_seed(5), **kwargs)
    assert sorted(iterates) == [3, 12]
    for k, x_k in iterates.items():
        alone = pgd(trained_fc, x, y, steps=k, generator=torch.Generator().manual_seed(5), **kwargs)
        assert torch.equal(x_k, alone)
    assert not torch.equal(iterates[3], iterates[12])
    clean = pgd_iterates(trained_fc, x, y, eps=0.0, alpha=0.02, at=[0, 4])
    assert all(torch.equal(v, x) for v in clean.values())
