"""Zeroth-order estimates taken in the AE's latent (issue 29): the coordinate-wise estimate over the latent is the
true vector-Jacobian product of decoder + black box, every probe is one counted query, nothing differentiates
through the black box, a planted fault in the estimator is caught, and training through it lowers the CE."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from aaa_core.attacks import PGDConfig
from aaa_core.models.compose import Defended, EncoderDecoder, freeze
from aaa_core.training import query_only
from aaa_core.training.losses import ce, ce_mse
from aaa_core.training.loops import TrainConfig, train_ae, training_attack
from aaa_core.training.query_only import (BlackBoxGradientError, LatentAE, LatentZeroOrder, QueryOnly, ThroughLatent,
                                          cge_vjp)
from tripwire import tripwire

LATENT = 6


class SmoothClassifier(nn.Module):
    """A small smooth classifier of 4x4 images whose backward pass raises (the tripwire), unless disarmed."""

    def __init__(self, armed: bool = True) -> None:
        super().__init__()
        self.armed = armed
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))

    def forward(self, x):
        return self.net(tripwire(x) if self.armed else x)


class TinyAE(EncoderDecoder):
    def __init__(self, latent: int = LATENT) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(16, latent))
        self.decoder = nn.Sequential(nn.Linear(latent, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))


def _models(seed: int = 0):
    torch.manual_seed(seed)
    return TinyAE(), SmoothClassifier()


def _exact_vjp(ae: TinyAE, classifier: SmoothClassifier, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    classifier.armed = False
    try:
        leaf = z.detach().clone().requires_grad_()
        grad, = torch.autograd.grad((classifier(ae.decode(leaf)) * w).sum(), leaf)
    finally:
        classifier.armed = True
    return grad


def _agreement(seed: int = 0, n: int = 5) -> tuple[float, float, int]:
    """(min per-example cosine, relative error, queries) of the latent CGE against the exact VJP."""
    ae, classifier = _models(seed)
    box = QueryOnly(classifier)
    zo = LatentZeroOrder(ae.decoder, box, estimator="cge", smoothing=1e-3)
    z = torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed + 1))
    w = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed + 2))
    leaf = z.clone().requires_grad_()
    estimate, = torch.autograd.grad((zo(leaf) * w).sum(), leaf)
    exact = _exact_vjp(ae, classifier, z, w)
    cos = F.cosine_similarity(estimate.double(), exact.double(), dim=1).min().item()
    error = ((estimate - exact).norm() / exact.norm()).item()
    return cos, error, box.queries


def _passes(cos: float, error: float) -> bool:
    return cos > 0.99 and error < 0.05


# (a) the estimate is the true VJP, at exactly n * (d + 1) queries

def test_latent_cge_is_the_exact_vjp_of_decoder_and_black_box_at_n_times_d_plus_1_queries():
    cos, error, queries = _agreement()
    assert _passes(cos, error), f"cosine {cos:.4f}, relative error {error:.4f}"
    assert queries == 5 * (LATENT + 1)


def test_cge_vjp_chunks_give_the_same_estimate_and_the_same_count():
    ae, classifier = _models()
    box = QueryOnly(classifier)
    zo = LatentZeroOrder(ae.decoder, box, smoothing=1e-3)
    z, w = torch.randn(4, LATENT), torch.randn(4, 3)
    out = zo.query_latent(z)
    whole = cge_vjp(zo.query_latent, z, out, w, smoothing=1e-3)
    before = box.queries
    pieces = cge_vjp(zo.query_latent, z, out, w, smoothing=1e-3, chunk=5)     # one coordinate per call
    assert torch.allclose(whole, pieces) and box.queries - before == 4 * LATENT


def test_the_encoder_gets_the_true_ce_gradient_through_the_latent_estimate():
    ae, classifier = _models()
    x, y = torch.rand(8, 1, 4, 4), torch.randint(3, (8,))
    box = QueryOnly(classifier)
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))
    F.cross_entropy(head(LatentAE(ae)(x)), y).backward()
    estimate = [p.grad.clone() for p in ae.encoder.parameters()]
    assert all(p.grad is None for p in ae.decoder.parameters())            # CE reaches the encoder only
    assert box.queries == 8 * (LATENT + 1)
    ae.zero_grad()
    classifier.armed = False
    F.cross_entropy(classifier(ae(x)), y).backward()
    for est, p in zip(estimate, ae.encoder.parameters()):
        assert F.cosine_similarity(est.flatten(), p.grad.flatten(), dim=0) > 0.99


def test_under_bfloat16_autocast_the_estimate_is_still_taken_in_float32():
    ae, classifier = _models()
    box = QueryOnly(classifier)
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))
    x, w = torch.rand(4, 1, 4, 4), torch.randn(4, 3)
    z = ae.encode(x).detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x_hat = ae.decode(z)
        setattr(x_hat, query_only.LATENT_ATTR, z)        # what LatentAE does
        out = head(x_hat)
    estimate, = torch.autograd.grad((out * w).sum(), z)
    exact = _exact_vjp(ae, classifier, z, w)
    assert F.cosine_similarity(estimate, exact, dim=1).min() > 0.99
    assert box.queries == 4 * (LATENT + 1)


def test_latent_rge_costs_its_directions_and_points_the_right_way_on_average():
    ae, classifier = _models()
    box = QueryOnly(classifier)
    zo = LatentZeroOrder(ae.decoder, box, estimator="rge", directions=4000, smoothing=1e-3)
    z, w = torch.randn(2, LATENT), torch.randn(2, 3)
    leaf = z.clone().requires_grad_()
    estimate, = torch.autograd.grad((zo(leaf) * w).sum(), leaf)
    assert box.queries == 2 * (1 + 4000)
    exact = _exact_vjp(ae, classifier, z, w)
    assert F.cosine_similarity(estimate, exact, dim=1).min() > 0.9


# (b) nothing differentiates through the black box

def test_no_gradient_reaches_the_black_box_and_direct_backprop_still_raises():
    ae, classifier = _models()
    before = [p.clone() for p in classifier.parameters()]
    box = QueryOnly(classifier)
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))
    x, y = torch.rand(4, 1, 4, 4), torch.randint(3, (4,))
    recon = LatentAE(ae)(x)
    (F.cross_entropy(head(recon), y) + F.mse_loss(recon, x)).backward()    # the tripwire would raise
    assert all(p.grad is None and not p.requires_grad for p in classifier.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, classifier.parameters()))
    assert all(p.grad is not None for p in ae.parameters())                 # MSE trains the decoder
    with pytest.raises(BlackBoxGradientError):                              # the wrapper itself: no gradient
        box(ae(x)).sum().backward()
    with pytest.raises(BlackBoxGradientError):                              # an image without a latent
        head(ae(x)).sum().backward()


def test_the_decoder_is_not_owned_or_frozen_by_the_black_box_side():
    ae, classifier = _models()
    head = ThroughLatent(LatentZeroOrder(ae.decoder, QueryOnly(classifier), smoothing=1e-3))
    decoder_params = {id(p) for p in ae.decoder.parameters()}
    assert not decoder_params & {id(p) for p in head.parameters()}
    Defended(LatentAE(ae), freeze(head))                                    # what train_ae does to a classifier
    assert all(p.requires_grad for p in ae.parameters())


# (c) a planted fault fails the check of (a)

def _sign(query, u, out, w, **kw):
    return -_REAL_CGE(query, u, out, w, **kw)


def _no_division(query, u, out, w, **kw):          # forgot the / mu
    return _REAL_CGE(query, u, out, w, **kw) * kw["smoothing"]


def _central_scaling(query, u, out, w, **kw):      # divided a forward difference by 2 mu
    return _REAL_CGE(query, u, out, w, **kw) / 2


def _wrong_weights(query, u, out, w, **kw):        # each example weighted by its neighbour's w
    return _REAL_CGE(query, u, out, w.roll(1, 0), **kw)


def _wrong_base(query, u, out, w, **kw):           # differences taken from another example's answer
    return _REAL_CGE(query, u, out.roll(1, 0), w, **kw)


_REAL_CGE = cge_vjp


@pytest.mark.parametrize("fault", [_sign, _no_division, _central_scaling, _wrong_weights, _wrong_base])
def test_a_planted_fault_in_the_latent_cge_fails_the_agreement_check(monkeypatch, fault):
    monkeypatch.setattr(query_only, "cge_vjp", fault)
    cos, error, _ = _agreement()
    assert not _passes(cos, error), f"{fault.__name__} passed: cosine {cos:.4f}, relative error {error:.4f}"


# (d) training through the latent estimate lowers the CE

def test_training_through_the_latent_estimate_lowers_the_ce_on_a_fixed_batch():
    ae, classifier = _models(3)
    with torch.no_grad():
        classifier.net[-1].weight.mul_(5)        # a decisive classifier: the CE has room to fall
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    y = torch.randint(3, (16,), generator=torch.Generator().manual_seed(5))
    box = QueryOnly(classifier)
    model, head = LatentAE(ae), ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-2)

    def current_ce() -> float:
        with torch.no_grad():
            return F.cross_entropy(box.query(ae(x)), y).item()

    start, steps = current_ce(), 10
    for _ in range(steps):
        recon = model(x)
        loss = ce(head(recon), y, recon, x)      # CE alone: the toy's MSE would pull the decoder elsewhere
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert box.queries == 1 * 16 + steps * 16 * (LATENT + 1)
    end = current_ce()
    assert end < start - 0.1, f"CE {start:.3f} -> {end:.3f}"


def test_train_ae_runs_unchanged_with_the_latent_estimate_and_counts_every_query():
    ae, classifier = _models(6)
    x, y = torch.rand(32, 1, 4, 4), torch.randint(3, (32,))
    box = QueryOnly(classifier)
    decoder_before = [p.clone() for p in ae.decoder.parameters()]
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, lr_patience=5, seed=0)
    train_ae(LatentAE(ae), [ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))], ce_mse, x, y,
             x[:8], y[:8], cfg, attack=training_attack(PGDConfig(eps=0.3, alpha=0.1, steps=2)), log=lambda _: None)
    per_gradient = LATENT + 1
    # training: PGD-2 (two estimated gradients) + the AE step (one) per image; validation: PGD-2 + one forward
    assert box.queries == 32 * 3 * per_gradient + 8 * (2 * per_gradient + 1)
    assert any(not torch.equal(a, b) for a, b in zip(decoder_before, ae.decoder.parameters()))


def test_bad_arguments_are_refused():
    ae, classifier = _models()
    box = QueryOnly(classifier)
    with pytest.raises(TypeError):
        LatentZeroOrder(ae.decoder, classifier, smoothing=1e-3)
    with pytest.raises(ValueError):
        LatentZeroOrder(ae.decoder, box, estimator="rge", smoothing=1e-3)
    with pytest.raises(ValueError):
        LatentZeroOrder(ae.decoder, box, estimator="cge", directions=5, smoothing=1e-3)
    with pytest.raises(ValueError):
        LatentZeroOrder(ae.decoder, box, estimator="spsa", smoothing=1e-3)
    with pytest.raises(ValueError):
        LatentZeroOrder(ae.decoder, box, smoothing=0.0)
