import pytest
import torch

from aaa_core.models import REGISTRY, build, is_autoencoder, list_models

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
CASES = [(ds, name) for ds in REGISTRY for name in list_models(ds)]


@pytest.mark.parametrize("dataset,name", CASES)
def test_registered_model_shapes(dataset, name):
    torch.manual_seed(0)
    model = build(dataset, name).eval()
    x = torch.rand(5, *SHAPES[dataset])
    with torch.no_grad():
        out = model(x)
    if is_autoencoder(dataset, name):
        assert out.shape == x.shape
        assert out.min() >= 0 and out.max() <= 1
        if hasattr(model, "encode"):  # latent AEs (kNN reconstruction); the U-Net's skips have no single latent
            z = model.encode(x)
            assert z.shape[0] == 5 and torch.allclose(model.decode(z), out)
    else:
        assert out.shape == (5, 10)
        # logits, not probabilities: rows do not sum to one and some entries are negative
        assert not torch.allclose(out.sum(1), torch.ones(5), atol=1e-3)
        assert (out < 0).any()


def test_mnist_ae_latent_is_a_parameter():
    assert build("mnist", "ae").encode(torch.rand(2, 1, 28, 28)).shape == (2, 128)  # the paper's text
    assert build("mnist", "ae", latent_dim=1024).encode(torch.rand(2, 1, 28, 28)).shape == (2, 1024)  # Table 11


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="expected one of.*dnn"):
        build("mnist", "resnet")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        build("svhn", "dnn")


def test_fashion_ae_latent_is_the_papers_7x7x256():
    ae = build("fashion_mnist", "ae").eval()
    assert ae.encode(torch.rand(2, 1, 28, 28)).shape == (2, 256, 7, 7)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in ae.modules()) == 15
    assert build("fashion_mnist", "ae", width=0.5).encode(torch.rand(2, 1, 28, 28)).shape == (2, 128, 7, 7)


def test_cifar_models_are_the_named_sizes():
    def params(name, **kwargs):
        return sum(p.numel() for p in build("cifar10", name, **kwargs).parameters())
    assert 40e6 < params("resnet") < 50e6          # Madry et al.'s wide ResNet (about 46M parameters)
    assert params("resnet", widen=1) < 1e6
    assert 19e6 < params("vgg19") < 21e6
    assert params("vgg19", width_divisor=4) < 2e6
