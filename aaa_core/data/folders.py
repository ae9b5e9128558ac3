"""Image folders (``<root>/<class>/<image>``) as tensors in [0, 1]: your own data for the `aaa` command."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from aaa_core.errors import DataFileError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


# ---- your data ----

def read_image_folder(path: str | Path, *, channels: int | None = None) -> tuple[Tensor, Tensor, list[str]]:
    """An image-folder tree (``<class>/<image>``, torchvision's ImageFolder layout) as float images in [0, 1]
    (N, C, H, W), int64 labels and the class names. Every image must have the same size; ``channels`` 1 or 3
    (default: 1 if the first image is grayscale, else 3)."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise DataFileError(f"{root}: expected a folder of class folders (<class>/<image>), found none")
    files = [(f, label) for label, name in enumerate(classes)
             for f in sorted((root / name).rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataFileError(f"{root}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in its class folders")
    images, labels, size = [], [], None
    for f, label in files:
        try:
            with Image.open(f) as img:
                if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    raise DataFileError(f"{f}: a {img.mode} ({'16-bit' if img.mode.startswith('I') else 'float'}) "
                                        "image; convert your images to 8 bits per channel")
                if channels is None:
                    channels = 1 if img.mode in ("1", "L", "LA") else 3
                img = img.convert("L" if channels == 1 else "RGB")
                array = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
                shape = (img.height, img.width, channels)
        except (UnidentifiedImageError, OSError) as err:
            raise DataFileError(f"{f}: not a readable image ({err})") from None
        if size is None:
            size = shape
        elif shape != size:
            raise DataFileError(f"{f}: {shape[1]}x{shape[0]} pixels, expected {size[1]}x{size[0]} like the first "
                                "image: resize your images to one size")
        images.append(array.view(*shape).permute(2, 0, 1))
        labels.append(label)
    # read on the CPU (the caller moves the tensors to its device)
    return torch.stack(images).float().div_(255), torch.tensor(labels, device="cpu"), classes


def load_folder_dataset(path: str | Path, *, seed: int = 0, test_fraction: float = 0.2) -> dict:
    """``PATH/train`` and ``PATH/test`` (each an image folder), or one image folder split at random (seeded)
    into train and test. Same keys as a prepared dataset: x_train, y_train, x_test, y_test, label, classes; on
    the CPU, and the split drawn there, so that it is the same whatever device the data go to next."""
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        x, y, classes = read_image_folder(root / "train")
        x_test, y_test, test_classes = read_image_folder(root / "test", channels=x.shape[1])
        if test_classes != classes:
            raise DataFileError(f"{root}/test: classes {test_classes} differ from {root}/train's {classes}")
        if x_test.shape[1:] != x.shape[1:]:
            raise DataFileError(f"{root}/test: images of {tuple(x_test.shape[1:])}, expected {tuple(x.shape[1:])} "
                                f"like {root}/train's")
        # folders are read class by class: shuffle (seeded) so that the first n test images span the classes
        order = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed), device="cpu")
        x_test, y_test = x_test[order], y_test[order]
    else:
        images, labels, classes = read_image_folder(root)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed), device="cpu")
        n_test = max(1, round(test_fraction * len(images)))
        x, y = images[order[n_test:]], labels[order[n_test:]]
        x_test, y_test = images[order[:n_test]], labels[order[:n_test]]
    return {"x_train": x, "y_train": y, "x_test": x_test, "y_test": y_test, "classes": classes,
            "label": f"folder {root}", "source": str(root)}
