import copy

import pytest
import torch
from torch import nn

from aaa_core.attacks import pgd
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.training.losses import get_loss
from aaa_core.models import Normalize, build
from aaa_core.runtime import Resume
from aaa_core.training.loops import TrainConfig, train_ae, train_classifier

CFG = TrainConfig(epochs=1, batch_size=32, lr=0.002, lr_patience=5, seed=0, epoch_images=128)


def attack(model, xb, yb, generator, strength=1.0):
    return pgd(model, xb, yb, eps=0.3 * strength, alpha=0.1 * strength, steps=2, generator=generator)


def bn_classifier() -> nn.Module:
    """A classifier with BatchNorm, so that a moved running statistic would show."""
    return nn.Sequential(Normalize(0.1307, 0.3081), nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 28 * 28, 10))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("loss", ["ce", "mse", "ce_mse"])
def test_ae_training_leaves_frozen_classifiers_bitwise_unchanged(mnist, loss):
    torch.manual_seed(0)
    classifiers = [bn_classifier(), build("mnist", "fc")]
    classifiers[0].train()  # even a classifier handed over in training mode must not move
    before = [snapshot(c) for c in classifiers]
    ae = build("mnist", "ae", latent_dim=16)
    ae_before = snapshot(ae)
    x, y = mnist["x_train"][:256], mnist["y_train"][:256]
    history = train_ae(ae, classifiers, get_loss(loss), x, y, x[:64], y[:64], CFG, attack=attack, log=lambda _: None)
    for clf, snap in zip(classifiers, before):
        after = clf.state_dict()
        assert all(torch.equal(after[k], snap[k]) for k in snap), "a classifier weight or buffer moved"
        assert all(p.grad is None for p in clf.parameters())
    assert any(not torch.equal(ae.state_dict()[k], ae_before[k]) for k in ae_before), "the AE did not train"
    assert len(history) == 1 and history[0]["loss"] > 0


def test_resumed_training_equals_uninterrupted(mnist):
    x, y = mnist["x_train"][:256], mnist["y_train"][:256]
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 2})

    def run(stop_after: int | None, resume: dict | None = None):
        torch.manual_seed(0)
        model = build("mnist", "fc")
        saved = []

        class Interrupt(Exception):
            pass

        def save_state(state):
            saved.append(copy.deepcopy(state))
            if stop_after is not None and len(saved[-1]["history"]) == stop_after:
                raise Interrupt

        try:
            train_classifier(model, x, y, x[:64], y[:64], cfg, attack=attack, resume=resume,
                             save_state=save_state, log=lambda _: None)
        except Interrupt:
            pass
        return model, saved

    straight, _ = run(None)
    _, saved = run(stop_after=1)
    resumed, _ = run(None, resume=saved[-1])
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), f"{k} differs after resuming"


def test_resume_ignores_state_of_another_configuration(tmp_path):
    resume = Resume("models/mnist/ae_ce.pt", root=tmp_path)
    resume.saver({"lr": 0.1})({"history": [1]})
    assert resume.load({"lr": 0.1}) == {"history": [1]}
    messages = []
    assert resume.load({"lr": 0.2}, messages.append) is None
    assert "different configuration" in messages[0]
    resume.clear()
    assert resume.load({"lr": 0.1}) is None


def test_checkpoint_describes_itself_and_loads_weights_only(tmp_path):
    model = build("mnist", "ae", latent_dim=32)
    path = tmp_path / "ae.pt"
    save_model(model, path, kind="ae", dataset="mnist", arch="ae", arch_kwargs={"latent_dim": 32}, loss="mse")
    loaded, info = load_model(path, kind="ae")
    assert info["meta"]["loss"] == "mse" and info["arch_kwargs"] == {"latent_dim": 32}
    assert not loaded.training
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), model.eval()(x))
    with pytest.raises(ValueError, match="holds a ae, expected a classifier"):
        load_model(path, kind="classifier")


def test_interrupted_write_leaves_nothing(tmp_path):
    from aaa_core.io import atomic_path
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_madry_eps_ramp_grows_linearly_then_holds(mnist):
    strengths = []

    def recording(model, xb, yb, generator, strength):
        strengths.append(strength)
        return xb

    cfg = TrainConfig(**{**CFG.__dict__, "eps_ramp": 4})
    train_classifier(build("mnist", "fc"), mnist["x_train"][:256], mnist["y_train"][:256], mnist["x_train"][:32],
                     mnist["y_train"][:32], cfg, attack=recording, log=lambda _: None)
    assert strengths == [0.25, 0.5, 0.75, 1.0, 1.0]  # 4 training batches, then validation at full strength


def test_augment_batch_crops_and_flips_within_the_padded_image():
    from aaa_core.training.loops import augment_batch
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(64):  # every output is some crop of the padded image, possibly flipped
        crops = [padded[i, :, r:r + 8, c:c + 8] for r in range(9) for c in range(9)]
        assert any(torch.equal(out[i], crop) or torch.equal(out[i], crop.flip(2)) for crop in crops)
    assert not torch.equal(out, x)
