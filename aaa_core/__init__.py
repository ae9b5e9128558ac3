"""aaa: Adversarially-Trained Autoencoder Augmentation, the library behind the DVC stages."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__version__ = "0.1.0"

# Every dataset's facts, one line each: the images (C, H, W) in [0, 1] every model of it takes (it gives logits
# over the classes), and its training images, test images and classes (the bounds of params.yaml's subsets).
DATASET_FACTS = {"mnist": ((1, 28, 28), 60000, 10000, 10), "fashion_mnist": ((1, 28, 28), 60000, 10000, 10),
                 "cifar10": ((3, 32, 32), 50000, 10000, 10)}
INPUT_SHAPES = {name: shape for name, (shape, *_) in DATASET_FACTS.items()}
DATASET_SIZES = {name: tuple(sizes) for name, (_, *sizes) in DATASET_FACTS.items()}
NUM_CLASSES = 10
# Set by stages.chain, which runs several stages in one process; here, not in aaa_core.distributed, so that the
# chain itself imports no torch.
CHAIN_ENV = "AAA_STAGE_CHAIN"


def load_defended(dataset: str, ae: str | None = "ae_ce_mse", classifier: str = "dnn",
                  models_dir: str | Path = "models") -> nn.Module:
    """The trained pipeline as one ``nn.Module`` from [0, 1] images to logits, in eval mode.

    Both checkpoints must hold ``dataset``'s models (hence each other's), and a zero batch of the dataset's
    images must come out of the AE with its own shape and out of the classifier as (N, NUM_CLASSES) logits;
    otherwise a ``CheckpointError`` names the file, rather than a pipeline that returns wrong logits.

    Args:
        dataset: a key of ``INPUT_SHAPES`` ("mnist", "fashion_mnist", "cifar10").
        ae: "ae_ce", "ae_mse", "ae_ce_mse" (an AAA autoencoder, by its training loss), or None for the
            classifier alone.
        classifier: "dnn", "fc" (natural) or "dnn_adv" (Madry adversarial training).
        models_dir: where ``dvc repro`` wrote the models (``models/<dataset>/<name>.pt``).
    """
    import torch

    from aaa_core.errors import AAAError
    from aaa_core.models import Defended
    from aaa_core.models.checkpoints import load_model

    if dataset not in INPUT_SHAPES:
        raise AAAError(f"unknown dataset {dataset!r}; expected one of {sorted(INPUT_SHAPES)}")
    folder = Path(models_dir) / dataset
    x = torch.zeros(2, *INPUT_SHAPES[dataset])
    clf_path = folder / f"{classifier}.pt"
    clf, _ = load_model(clf_path, kind="classifier", dataset=dataset)
    _expect_output_shape(clf, clf_path, x, (len(x), NUM_CLASSES))
    if ae is None:
        return clf.eval()
    ae_path = folder / f"{ae}.pt"
    autoencoder, _ = load_model(ae_path, kind="ae", dataset=dataset)
    _expect_output_shape(autoencoder, ae_path, x, tuple(x.shape))
    return Defended(autoencoder, clf).eval()


def _expect_output_shape(model: nn.Module, path: Path, x: torch.Tensor, expected: tuple[int, ...]) -> None:
    """Run ``x`` through ``model`` and insist on the output's shape: a model made for other images (or
    another number of classes) fails here, naming its file, instead of somewhere inside an attack."""
    import torch

    from aaa_core.errors import CheckpointError

    try:
        with torch.no_grad():
            got = tuple(model(x).shape)
    except RuntimeError as err:
        got = f"an error ({str(err).splitlines()[0]})"
    if got != expected:
        raise CheckpointError(f"{path}: maps a batch of shape {tuple(x.shape)} to {got}, expected {expected}")
