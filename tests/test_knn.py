import pytest
import torch

from aaa_core.attacks import PGDConfig, pgd
from aaa_core.evaluate import correct_flags, robust_flags
from aaa_core.knn import KNNDefended, LatentBank, encode_all, knn_indices
from aaa_core.models import Defended


def brute_force(queries, bank, k):
    return torch.cdist(queries.double(), bank.double()).topk(k, largest=False).indices


def test_exact_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(3000, 64, generator=g), torch.randn(500, 64, generator=g)
    idx = knn_indices(queries, bank, 10, chunk=128)
    assert torch.equal(idx.sort(1).values, brute_force(queries, bank, 10).sort(1).values)
    assert torch.equal(knn_indices(bank[:7], bank, 1).squeeze(1), torch.arange(7))  # a bank point finds itself


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dimensions"):
        knn_indices(torch.randn(2, 3), torch.randn(5, 4), 1)
    with pytest.raises(ValueError, match="k=6 must be in 1..5"):
        knn_indices(torch.randn(2, 4), torch.randn(5, 4), 6)


def test_bank_keeps_the_latent_shape():
    bank = LatentBank(torch.randn(50, 4, 3, 3), k=5)
    z = torch.randn(6, 4, 3, 3)
    out = bank.neighbour_mean(z)
    assert out.shape == z.shape
    idx = knn_indices(z.flatten(1), bank.latents, 5)
    assert torch.allclose(out[0].flatten(), bank.latents[idx[0]].mean(0))


class PCAAE(torch.nn.Module):
    """A linear AE fitted in closed form: the first ``dims`` principal components of the training images.
    Its pipeline classifies well at once (about 90% natural accuracy with the test FC, 95% through kNN),
    so the attacks below are compared where they can differ; a conv AE trained for a test's seconds sits
    near chance, where every attack scores the same."""

    def __init__(self, x: torch.Tensor, dims: int = 32) -> None:
        super().__init__()
        flat = x.flatten(1)
        mean = flat.mean(0)
        torch.manual_seed(0)   # pca_lowrank's random projection
        _, _, v = torch.pca_lowrank(flat - mean, q=dims, center=False, niter=4)
        self.shape = x.shape[1:]
        self.register_buffer("mean", mean)
        self.register_buffer("v", v)

    def encode(self, x):
        return (x.flatten(1) - self.mean) @ self.v

    def decode(self, z):
        return (z @ self.v.T + self.mean).clamp(0, 1).view(-1, *self.shape)

    def forward(self, x):
        return self.decode(self.encode(x))


@pytest.fixture(scope="module")
def knn_pipeline(mnist, trained_fc):
    ae = PCAAE(mnist["x_train"]).eval()
    bank = LatentBank(encode_all(ae, mnist["x_train"]), k=10)
    return ae, trained_fc, bank


def test_plain_gradient_through_knn_is_zero_and_bpda_is_not(knn_pipeline, mnist):
    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:16].clone().requires_grad_(True), mnist["y_test"][:16]
    plain = KNNDefended(ae, clf, bank).eval()
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(plain(x), y), x)
    assert torch.count_nonzero(grad) == 0
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    with torch.no_grad():
        assert torch.allclose(straight(x), plain(x), atol=1e-5)  # same forward values, up to rounding
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(straight(x), y), x)
    assert torch.count_nonzero(grad) > 0


def test_bpda_attack_is_not_weaker_than_the_papers_protocol(knn_pipeline, mnist):
    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    target = KNNDefended(ae, clf, bank).eval()
    cfg = PGDConfig(eps=0.2, alpha=0.02, steps=20)   # an eps where the attacks leave about 60% (measured)
    assert correct_flags(target, x, y).float().mean() > 0.9
    # (1) non-adaptive: crafted on AE + classifier without kNN, then classified with kNN
    x_adv = pgd(Defended(ae, clf).eval(), x, y, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                generator=torch.Generator().manual_seed(0))
    non_adaptive = correct_flags(target, x_adv, y).float().mean().item()
    # (2) adaptive: PGD with the straight-through gradient, scored on the true pipeline
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    x_bpda = pgd(straight, x, y, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                 generator=torch.Generator().manual_seed(0))
    adaptive = correct_flags(target, x_bpda, y).float().mean().item()
    assert adaptive <= non_adaptive + 0.02 and adaptive < 0.8
    # a plain gradient attack is blind: no step moves it beyond its random start; put in BPDA's place it
    # would fail the comparison above (the check can fail)
    plain = robust_flags(target, x, y, cfg, record_at=[0])
    assert torch.equal(plain[0], plain[cfg.steps])
    assert plain[cfg.steps].float().mean().item() > non_adaptive + 0.02


def test_the_protocol_scores_knn_and_the_plain_ae_on_the_very_same_adversarial_examples(knn_pipeline, mnist,
                                                                                          monkeypatch):
    import aaa_core.knn as knn_module
    from aaa_core.knn import knn_protocol

    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    seen = []
    real = knn_module.correct_flags

    def spy(model, inputs, labels):    # every scoring call: which model, on which inputs
        seen.append((type(model).__name__, inputs.clone()))
        return real(model, inputs, labels)

    monkeypatch.setattr(knn_module, "correct_flags", spy)
    report = knn_protocol(ae, clf, bank, x, y, eps=0.3, alpha=0.05, steps=[3, 6], bpda_tolerance=1.0, seed=0)
    scored = {}
    for name, inputs in seen:
        scored.setdefault(name, []).append(inputs)
    # the plain AE is scored 3 times (clean images, each step count's adversarial examples), and each of
    # those tensors is one the kNN pipeline was scored on too
    assert len(scored["Defended"]) == 3
    for plain_inputs in scored["Defended"]:
        assert any(torch.equal(plain_inputs, knn_inputs) for knn_inputs in scored["KNNDefended"])
    assert not torch.equal(scored["Defended"][0], x)   # adversarial examples first, and they moved
    acc = report.robust_accuracy()
    assert set(acc) == {"non_adaptive", "bpda", "worst_case", "plain_ae_same_examples"}
    for k in ("pgd3", "pgd6"):   # the worst case never exceeds either of its attacks
        assert acc["worst_case"][k] <= min(acc["non_adaptive"][k], acc["bpda"][k]) + 1e-9



class RoundingIdentityAE(torch.nn.Module):
    """A planted masked gradient: the "latent" is the image rounded to 16 grey levels (zero gradient), the
    decoder the identity; kNN on it is kNN on pixels, accurate on MNIST."""

    def encode(self, x):
        return torch.round(x * 15) / 15

    def decode(self, z):
        return z

    def forward(self, x):
        return self.decode(self.encode(x))


def test_square_in_the_knn_worst_case_sees_what_a_masked_gradient_hides(mnist, trained_fc):
    """Both gradient attacks (non-adaptive and BPDA) get a zero gradient through the rounding and find almost
    nothing; Square queries the true kNN pipeline and fools more, the worst case includes it, and
    ``square_only`` counts what only Square fooled. Without a query budget there is no Square entry."""
    from aaa_core.knn import knn_protocol

    ae = RoundingIdentityAE().eval()
    bank = LatentBank(encode_all(ae, mnist["x_train"]), k=10)
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    report = knn_protocol(ae, trained_fc, bank, x, y, eps=0.3, alpha=0.075, steps=[3, 6], bpda_tolerance=1.0,
                          seed=0, square_queries=200)
    acc = report.robust_accuracy()
    assert set(acc) == {"non_adaptive", "bpda", "worst_case", "plain_ae_same_examples", "square"}
    square = acc["square"]["queries200"]
    assert report.natural.float().mean() > 0.9 and acc["bpda"]["pgd6"] > 0.85   # the mask works on gradients
    assert report.square_only()["pgd6"] >= 5 and square < acc["bpda"]["pgd6"] - 0.1
    for k in ("pgd3", "pgd6"):
        assert acc["worst_case"][k] <= min(acc["non_adaptive"][k], acc["bpda"][k], square) + 1e-9
    plain = knn_protocol(ae, trained_fc, bank, x[:8], y[:8], eps=0.3, alpha=0.075, steps=[3], bpda_tolerance=1.0,
                         seed=0)
    assert "square" not in plain.robust_accuracy() and plain.square_only() == {}
