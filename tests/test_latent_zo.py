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
    with pytest.raises(ValueError):
        ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3), estimate_images=0)


# (f) estimate_images: in the AE's update only the first k images are estimated, scaled by n / k

def _encoder_grads(estimate_images, *, scale_fault: bool = False, monkeypatch=None):
    """(per-example latent gradients of the batch-mean CE, queries) for a batch of 8 made in training mode."""
    ae, classifier = _models(3)
    x, y = torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    box = QueryOnly(classifier)
    if scale_fault:
        monkeypatch.setattr(query_only, "_gradient_only", lambda t, scale: t - t.detach())   # the scale dropped
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3), estimate_images=estimate_images)
    x_hat = LatentAE(ae).train()(x)
    z = getattr(x_hat, query_only.LATENT_ATTR)
    z.retain_grad()
    F.cross_entropy(head(x_hat), y).backward()
    return z.grad, box.queries


def test_the_update_estimates_k_images_scaled_by_n_over_k_at_n_plus_k_times_d_queries():
    full, full_queries = _encoder_grads(None)
    part, part_queries = _encoder_grads(3)
    assert full_queries == 8 * (LATENT + 1) and part_queries == 8 + 3 * LATENT
    assert torch.allclose(part[:3], full[:3] * 8 / 3, rtol=0.05, atol=1e-5)   # unbiased for the batch mean
    assert torch.equal(part[3:], torch.zeros_like(part[3:]))                   # the rest pass no gradient


def test_a_missing_n_over_k_scale_fails_the_subsample_check(monkeypatch):
    full, _ = _encoder_grads(None)
    part, _ = _encoder_grads(3, scale_fault=True, monkeypatch=monkeypatch)
    assert not torch.allclose(part[:3], full[:3] * 8 / 3, rtol=0.05, atol=1e-5)


def test_the_training_attack_estimates_every_image_whatever_estimate_images_says():
    ae, classifier = _models(5)
    box = QueryOnly(classifier)
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3), estimate_images=2)
    x = torch.rand(6, 1, 4, 4).requires_grad_()
    x_hat = LatentAE(ae).eval()(x)                          # the attack runs with the AE in eval mode
    grad, = torch.autograd.grad(F.cross_entropy(head(x_hat), torch.zeros(6, dtype=torch.long)), x)
    assert box.queries == 6 * (LATENT + 1) and (grad.flatten(1).abs().sum(1) > 0).all()


def test_train_ae_with_a_transferred_attack_queries_only_for_the_update_and_validation():
    ae, classifier = _models(7)
    surrogate = SmoothClassifier(armed=False)
    x, y = torch.rand(32, 1, 4, 4), torch.randint(3, (32,))
    box = QueryOnly(classifier)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, lr_patience=5, seed=0)
    attack = query_only.transferred(training_attack(PGDConfig(eps=0.3, alpha=0.1, steps=2)), surrogate)
    head = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3), estimate_images=4)
    train_ae(LatentAE(ae), [head], ce_mse, x, y, x[:8], y[:8], cfg, attack=attack, log=lambda _: None)
    # training: per batch of 16, 16 forwards + 4 estimated images of LATENT probes; validation: one forward each
    assert box.queries == 2 * (16 + 4 * LATENT) + 8


def test_the_surrogate_learns_the_black_boxs_labels_at_one_query_per_image():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    teacher[1].bias.data.copy_(-teacher[1].weight.data.sum(1) / 2)     # balanced classes on images in [0, 1]
    student = SmoothClassifier(armed=False)
    box = QueryOnly(teacher)
    x, x_val = torch.rand(256, 1, 4, 4), torch.rand(64, 1, 4, 4)
    before = (student(x_val).argmax(1) == teacher(x_val).argmax(1)).float().mean()
    cfg = TrainConfig(epochs=3, batch_size=32, lr=1e-2, lr_patience=5, seed=0)
    surrogate, info = query_only.train_surrogate(box, student, x, x_val, cfg, fit="labels", log=lambda _: None)
    after = (surrogate(x_val).argmax(1) == teacher(x_val).argmax(1)).float().mean()
    assert info["queries"] == box.queries == 256 + 64 and info["fit"] == "labels"
    assert after > before + 0.2 and not any(p.requires_grad for p in surrogate.parameters())


@pytest.mark.parametrize("output", ["logits", "probs"])
def test_the_surrogate_distilled_from_scores_learns_the_black_boxs_logits_from_either_output(output):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    box = QueryOnly(teacher, output=output)
    x, x_val = torch.rand(256, 1, 4, 4), torch.rand(64, 1, 4, 4)
    student = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    before = query_only.score_distance(student(x_val), teacher(x_val)).item()
    cfg = TrainConfig(epochs=20, batch_size=32, lr=2e-2, lr_patience=5, seed=0)
    surrogate, info = query_only.train_surrogate(box, student, x, x_val, cfg, log=lambda _: None)
    assert info["queries"] == box.queries == 256 + 64 and info["fit"] == "scores"      # queried once, not per epoch
    after = query_only.score_distance(surrogate(x_val), teacher(x_val)).item()
    assert after < before / 20, (before, after)        # the logits themselves, up to a constant per example
    assert query_only.input_gradient_cosine(surrogate, teacher, x_val, teacher(x_val).argmax(1)) > 0.9
    with pytest.raises(ValueError, match="fit must be one of labels, scores"):
        query_only.train_surrogate(box, student, x, x_val, cfg, fit="probs")


def test_the_ball_adds_one_query_per_training_image_at_a_point_of_its_eps_ball():
    torch.manual_seed(0)
    box = QueryOnly(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    x, x_val = torch.rand(32, 1, 4, 4), torch.rand(8, 1, 4, 4)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, lr_patience=5, seed=3)
    _, info = query_only.train_surrogate(box, nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), x, x_val, cfg, ball=0.1,
                                         log=lambda _: None)
    assert info["queries"] == box.queries == 2 * 32 + 8 and info["ball"] == 0.1
    points = query_only.ball_points(x, 0.1, seed=3)
    assert torch.equal(points, query_only.ball_points(x, 0.1, seed=3))       # the same queries on a rerun
    assert (points - x).abs().max() <= 0.1 + 1e-6 and points.min() >= 0 and points.max() <= 1
    assert (points - x).abs().max() > 0.09 and not torch.equal(points, query_only.ball_points(x, 0.1, seed=4))
    with pytest.raises(ValueError, match="ball must be >= 0"):
        query_only.train_surrogate(box, nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), x, x_val, cfg, ball=-0.1)


def test_distillation_never_augments_the_images_the_scores_were_queried_for(monkeypatch):
    from aaa_core.training import loops

    def refuse(*args, **kwargs):
        raise AssertionError("a distilled batch was augmented after its scores were queried")
    monkeypatch.setattr(loops, "augment_batch", refuse)
    box = QueryOnly(nn.Sequential(nn.Flatten(), nn.Linear(16, 3)))
    x = torch.rand(32, 1, 4, 4)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, lr_patience=5, seed=0, augment=True)
    query_only.train_surrogate(box, nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), x, x[:8], cfg, log=lambda _: None)
    with pytest.raises(AssertionError, match="augmented"):     # the label fit does augment when asked: the check bites
        query_only.train_surrogate(box, nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), x, x[:8], cfg, fit="labels",
                                   log=lambda _: None)


def test_the_score_distance_ignores_a_constant_per_example_and_nothing_else():
    logits = torch.randn(5, 4)
    assert query_only.score_distance(logits, torch.log_softmax(logits, 1)) < 1e-10
    assert query_only.score_distance(logits, logits + torch.randn(5, 1)) < 1e-10
    assert query_only.score_distance(logits, 2 * logits) > 0.1          # a temperature is not a constant


def test_the_input_gradient_cosine_is_one_for_the_same_model_and_near_zero_for_an_unrelated_one():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)), nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(64, 1, 4, 4), torch.randint(3, (64,))
    assert query_only.input_gradient_cosine(a, a, x, y, batch_size=20) == pytest.approx(1.0, abs=1e-6)
    assert abs(query_only.input_gradient_cosine(a, b, x, y)) < 0.5


# (g) SurrogateBlend: the black box's loss, a gradient blended from the surrogate's and the estimate

def _blend_grads(weight: float):
    """(gradient at the AE's output of the batch-sum CE through SurrogateBlend, queries, answer, pieces)."""
    ae, classifier = _models(8)
    surrogate = SmoothClassifier(armed=False)
    box = QueryOnly(classifier)
    slot = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3))
    blend = query_only.SurrogateBlend(slot, surrogate, weight)
    x, y = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(9)), torch.tensor([0, 1, 2, 0, 1])
    x_hat = LatentAE(ae).train()(x)
    z = getattr(x_hat, query_only.LATENT_ATTR)
    answer = blend(x_hat)
    grad_z, = torch.autograd.grad(F.cross_entropy(answer, y, reduction="sum"), z)
    queries = box.queries
    w = torch.softmax(box.query(x_hat), 1) - F.one_hot(y, 3)       # the black box's dloss/dlogits
    leaf = z.detach().clone().requires_grad_()
    sur_z, = torch.autograd.grad((surrogate(ae.decode(leaf)) * w).sum(), leaf)
    est_z = _exact_vjp(ae, classifier, z.detach(), w)
    return grad_z, queries, answer, classifier, x_hat, sur_z, est_z


def _off(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def test_the_blend_is_the_black_boxs_loss_with_weight_times_the_surrogates_gradient_plus_the_rest_estimated():
    grad, queries, answer, classifier, x_hat, sur, est = _blend_grads(0.25)
    classifier.armed = False
    assert torch.allclose(answer, classifier(x_hat.detach()))           # the value is the black box's answer
    assert queries == 5 * (LATENT + 1)
    assert _off(grad, 0.25 * sur + 0.75 * est) < 0.05
    assert _off(grad, 0.75 * sur + 0.25 * est) > 0.2          # the check tells the weights apart


def test_a_blend_of_weight_one_spends_no_estimate_and_weight_zero_is_the_estimate_alone():
    grad, queries, *_, sur, est = _blend_grads(1.0)
    assert queries == 5 and torch.allclose(grad, sur, rtol=1e-4, atol=1e-6)
    grad, queries, *_, sur, est = _blend_grads(0.0)
    assert queries == 5 * (LATENT + 1) and _off(grad, est) < 0.05
    with pytest.raises(ValueError):
        query_only.SurrogateBlend(None, SmoothClassifier(), 1.5)


def test_without_a_graph_the_blend_is_the_black_box_alone():
    ae, classifier = _models(8)
    calls = []
    surrogate = SmoothClassifier(armed=False)
    surrogate.register_forward_hook(lambda *_: calls.append(1))
    box = QueryOnly(classifier)
    blend = query_only.SurrogateBlend(ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=1e-3)), surrogate, 0.5)
    with torch.no_grad():
        answer = blend(LatentAE(ae).train()(torch.rand(5, 1, 4, 4)))
    assert box.queries == 5 and not calls and answer.shape == (5, 3)
