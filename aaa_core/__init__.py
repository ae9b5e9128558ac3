"""aaa: Adversarially-Trained Autoencoder Augmentation, the library behind the DVC stages."""
from __future__ import annotations

from pathlib import Path

from torch import nn

__version__ = "0.1.0"


def load_defended(dataset: str, ae: str | None = "ae_ce_mse", classifier: str = "dnn",
                  models_dir: str | Path = "models") -> nn.Module:
    """The trained pipeline as one ``nn.Module`` from [0, 1] images to logits, in eval mode.

    Args:
        dataset: "mnist".
        ae: "ae_ce", "ae_mse", "ae_ce_mse" (an AAA autoencoder, by its training loss), or None for the
            classifier alone.
        classifier: "dnn", "fc" (natural) or "dnn_adv" (Madry adversarial training).
        models_dir: where ``dvc repro`` wrote the models (``models/<dataset>/<name>.pt``).
    """
    from aaa_core.checkpoints import load_model
    from aaa_core.models import Defended

    folder = Path(models_dir) / dataset
    clf, _ = load_model(folder / f"{classifier}.pt", kind="classifier")
    if ae is None:
        return clf.eval()
    autoencoder, _ = load_model(folder / f"{ae}.pt", kind="ae")
    return Defended(autoencoder, clf).eval()
