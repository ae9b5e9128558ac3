"""Query-only access: the wrapper lets no gradient through, the zeroth-order estimate is right on average,
and AE training through a black box never differentiates through the classifier."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from aaa_core.training.query_only import BlackBoxGradientError, QueryOnly, ZeroOrder, blackbox_scores, rge_vjp
from aaa_core.training.losses import ce_mse
from aaa_core.training.loops import TrainConfig, train_ae, training_attack
from aaa_core.attacks import PGDConfig
from tripwire import TripwireError, tripwire


class Tripwired(nn.Module):
    """A classifier whose backward pass raises: any gradient taken through it fails the test."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.net(tripwire(x))


class TinyAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))

    def forward(self, x):
        return self.net(x)


def test_a_query_only_classifier_refuses_every_gradient_and_counts_queries():
    box = QueryOnly(nn.Sequential(nn.Flatten(), nn.Linear(16, 10)))
    x = torch.rand(5, 1, 4, 4, requires_grad=True)
    out = box(x)
    assert box.queries == 5 and out.shape == (5, 10)
    with pytest.raises(BlackBoxGradientError):
        out.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in box.model.parameters())


def test_probabilities_reach_the_loss_as_log_probabilities():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    x = torch.rand(3, 1, 4, 4)
    logits, logp = QueryOnly(model)(x), QueryOnly(model, output="probs")(x)
    assert torch.allclose(torch.log_softmax(logits, 1), logp, atol=1e-6)
    with pytest.raises(ValueError):
        QueryOnly(model, output="labels")


def test_the_zeroth_order_estimate_matches_the_true_gradient_on_average():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))   # smooth
    u = torch.rand(2, 1, 3, 4)
    w = torch.randn(2, 3)
    leaf = u.clone().requires_grad_()
    exact, = torch.autograd.grad((model(leaf) * w).sum(), leaf)
    box = QueryOnly(model)
    estimate = rge_vjp(box.query, u, box.query(u), w, directions=40000, smoothing=1e-3,
                       generator=torch.Generator().manual_seed(1))
    assert box.queries == 2 + 2 * 40000
    error = (estimate - exact).norm() / exact.norm()
    assert error < 0.1, f"relative error {error:.3f}"
    # a single estimate from few directions is far noisier: the check above is not trivially met
    few = rge_vjp(box.query, u, box.query(u), w, directions=2, smoothing=1e-3,
                  generator=torch.Generator().manual_seed(2))
    assert (few - exact).norm() / exact.norm() > 0.3


def test_zero_order_gradients_flow_into_whatever_sits_before_the_black_box():
    torch.manual_seed(0)
    ae = TinyAE()
    box = ZeroOrder(QueryOnly(Tripwired()), directions=4, smoothing=1e-3)
    loss = nn.functional.cross_entropy(box(ae(torch.rand(6, 1, 4, 4))), torch.randint(10, (6,)))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())
    assert box.queries == 6 * (1 + 4)


def _train(classifier: nn.Module) -> TinyAE:
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 4, 4), torch.randint(10, (32,))
    cfg = TrainConfig(epochs=1, batch_size=16, lr=1e-2, lr_patience=5, seed=0)
    ae = TinyAE()
    train_ae(ae, [classifier], ce_mse, x, y, x[:8], y[:8], cfg,
             attack=training_attack(PGDConfig(eps=0.3, alpha=0.1, steps=2)), log=lambda _: None)
    return ae


def test_query_only_ae_training_never_backpropagates_through_the_classifier():
    blackbox = QueryOnly(Tripwired())
    before = [p.clone() for p in blackbox.model.parameters()]
    ae_before = [p.clone() for p in TinyAE().parameters()]
    ae = _train(ZeroOrder(blackbox, directions=3, smoothing=1e-3))
    assert blackbox.queries > 0
    assert all(torch.equal(a, b) for a, b in zip(before, blackbox.model.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(ae_before, ae.parameters()))   # the AE did learn


def test_the_tripwire_catches_white_box_training():
    # the control: the same training with gradients through the classifier trips it, so the test above can fail
    with pytest.raises(TripwireError):
        _train(Tripwired())


def test_a_surrogates_targets_are_the_black_boxs_answers_one_query_each():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    box = QueryOnly(model)
    x = torch.rand(7, 1, 4, 4)
    assert torch.allclose(blackbox_scores(box, x, batch_size=3), model(x))
    assert box.queries == 7


@pytest.mark.parametrize("stage, access", [("train_ae_blackbox", ["--access", "labels"]),
                                           ("train_surrogate", ["--fit", "scores"])])
def test_the_stage_refuses_a_surrogate_outside_the_zoo_in_one_line(tmp_path, stage, access):
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "blackbox.yaml").read_text())
    raw["mnist"]["surrogate"] = "ae"      # an autoencoder is no classifier
    bad = tmp_path / "blackbox.yaml"
    bad.write_text(yaml.safe_dump(raw))
    dummy = tmp_path / "x.pt"
    dummy.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--dataset", "mnist", *access, "--classifier", str(dummy), "--data", str(dummy), "--out", str(tmp_path / "ae.pt"),
                           "--metrics", str(tmp_path / "m.json"), "--blackbox-params", str(bad)],
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: mnist.surrogate = 'ae': expected a classifier of the mnist zoo"]
    assert not (tmp_path / "ae.pt").exists()


@pytest.mark.parametrize("key, value, message", [
    ("estimate_images", 0, r"blackbox.yaml: mnist.estimate_images = 0 is out of range: expected >= 1"),
    ("smoothing", 0.0, r"mnist.smoothing = 0.0 is out of range: expected in \(0, 1\]"),
    ("surrogate_weight", 1.5, r"mnist.surrogate_weight = 1.5 is out of range: expected in \[0, 1\]"),
    ("output", "labels", r"mnist.output = 'labels': expected one of logits, probs"),
    ("surrogate", "ae", r"mnist.surrogate = 'ae': expected a classifier of the mnist zoo"),
    ("colour", 1, r"unknown key\(s\) mnist.colour"),
])
def test_a_bad_blackbox_param_is_one_line_naming_the_key(tmp_path, key, value, message):
    import yaml

    from aaa_core.config import load_blackbox
    from aaa_core.config import ParamsError
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "blackbox.yaml").read_text())
    raw["mnist"][key] = value
    path = tmp_path / "blackbox.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=message):
        load_blackbox(path, "mnist", "cpu", ["dnn", "fc"])


def test_the_smoke_overlay_replaces_only_its_keys():
    from pathlib import Path

    from aaa_core.config import load_blackbox

    path = Path(__file__).resolve().parents[1] / "blackbox.yaml"
    cpu, smoke = load_blackbox(path, "mnist", "cpu"), load_blackbox(path, "mnist", "smoke")
    assert (smoke.epochs, smoke.estimate_images) == (1, 2) and smoke.smoothing == cpu.smoothing


def test_wilson_interval_matches_the_textbook_values():
    from aaa_core.stats import percent_with_interval, wilson_interval

    lo, hi = wilson_interval(77, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.6785, 0.8416)
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(100, 100)[1] == 1.0
    assert wilson_interval(0, 100)[1] > 0.03     # no failure observed is not a zero rate
    assert percent_with_interval(0.77, 100) == "77.0 [67.8, 84.2]"
    with pytest.raises(ValueError):
        wilson_interval(5, 4)


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_the_report_fills_in_every_placeholder(tmp_path, weight):
    """The black-box report from a minimal set of metrics: every number filled in, no template left over; the
    score-trained AE's update estimated (weight 0.5) or white-box against its surrogate (1, the study's)."""
    import json

    from click.testing import CliRunner

    from stages.render_blackbox import ACCESS, main

    attacks = [{"name": n, "kind": "white-box", "accuracy": 0.5, "settings": {"steps": s}}
               for n, s in (("pgd40-paper", 40), ("pgd200-paper", 200))]
    for fit, agreement in (("labels", 0.97), ("scores", 0.99)):
        (tmp_path / f"surrogate_{fit}.json").write_text(json.dumps({
            "arch": "dnn", "queries": 110, "seconds": 1.0, "test_agreement_with_blackbox": agreement,
            "input_gradient_cosine": {"mean": 0.5 if fit == "labels" else 0.9, "examples": 1000}}))
    for access in ACCESS:
        estimated = access == "scores" and weight < 1
        queries = 3000 if estimated else (0 if access != "gradient" else None)
        train = {"loss": "ce_mse", "classifier": "models/mnist/dnn.pt", "n_train": 100, "natural_test_accuracy": 0.9,
                 "train": {"batch_size": 64}, "attack": {"steps": 10, "eps": 0.3, "alpha": 0.04},
                 "blackbox": {"epochs": 2, "epoch_images": 50, "eps_ramp": 5, "warm_epochs": 1, "estimate_images": 8,
                              "surrogate_weight": weight, "smoothing": 0.01, "output": "logits", "surrogate": "dnn"},
                 "queries": {"ae_training": queries, "per_training_image": queries and queries / 100,
                             "training_images": 100, "per_estimated_image": 128 if estimated else 0},
                 "ae_training_seconds": 3.0}
        suite = {"name": access, "examples": 10, "seed": 0, "attacks": attacks, "worst_case_accuracy": 0.4,
                 "masked_gradients": {"detected": False, "acknowledged": False}}
        (tmp_path / f"train_{access}.json").write_text(json.dumps(train))
        (tmp_path / "robustness").mkdir(exist_ok=True)
        (tmp_path / "robustness" / f"{access}.json").write_text(json.dumps(suite))
    result = CliRunner().invoke(main, ["--dataset", "mnist", "--metrics-dir", str(tmp_path), "--out",
                                       str(tmp_path / "out.md")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "out.md").read_text()
    assert "{" not in text and "a surrogate (dnn, its own weights)" in text
    assert "distilled from its logits (110 queries) and agrees with the black box on 99.0%" in text
    assert "learns its predicted classes (110 queries) and agrees" in text
    assert "input gradient and the black box's is 0.500" in text and "is 0.900" in text
    if weight < 1:
        assert "0.5 times the surrogate's exact gradient" in text and "128 queries per estimated image" in text
        assert "| 3,110 (3,000 AE training, 110 fitting the surrogate) | 31.1 |" in text   # every query, per image
        assert text.count("| 110 | 1.1 |") == 1             # the label-trained AE: its surrogate's queries only
    else:
        assert "Both blind AEs then train white-box against their surrogate" in text and "estimate" not in text
        assert text.count("| 110 | 1.1 |") == 2             # each blind AE: its surrogate's queries only
    assert "- score-trained AE: natural 90.0 against 90.0 (+0.0 points), worst case 40.0 against 40.0" in text
    assert "40.0 [16.8, 68.7]" in text     # the worst case with its Wilson interval over 10 examples
