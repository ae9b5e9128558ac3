"""Bad input and faults (issue 14): each expected error is one line naming the file; resume is exact and
content-aware; checkpoints are verified, byte-deterministic and written with the usual modes.

Nothing is trained beyond a few batches of a tiny synthetic set; models are saved untrained.
"""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from torch import nn

from aaa_core import load_defended
from aaa_core.models.checkpoints import load_model, save_model
from aaa_core.io import load_torch, save_torch, write_json
from aaa_core.errors import CheckpointError, DataFileError
from aaa_core.models import build
from aaa_core.runtime import Resume, seed_everything
from aaa_core.data import load_prepared
from aaa_core.training.loops import TrainConfig, train_classifier
from stages._cli import run

ROOT = Path(__file__).resolve().parents[1]


@click.command()
@click.argument("what", type=click.Choice(["model", "data"]))
@click.argument("path")
def stand_in(what: str, path: str) -> None:
    """A stage reduced to what every stage does first: load a checkpoint or the prepared data."""
    (load_model if what == "model" else load_prepared)(path)


def subprocess_stage(args: list, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a stage in a fresh interpreter from the repository root, as DVC does."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def in_process_stage(args: list, monkeypatch, capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``run(stand_in)`` with ``args`` on the command line."""
    monkeypatch.setattr(sys, "argv", ["stand_in", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        run(stand_in)
    return exited.value.code, capsys.readouterr().err


def assert_one_line(stderr: str, *parts: str) -> None:
    assert "Traceback" not in stderr and stderr.startswith("error: "), stderr
    assert stderr.strip().count("\n") == 0, stderr
    for part in parts:
        assert part in stderr, stderr


def saved_fc(path: Path) -> Path:
    save_model(build("mnist", "fc"), path, kind="classifier", dataset="mnist", arch="fc")
    return path


def tensor_offset(path: Path) -> int:
    """Where the bytes of the checkpoint's largest tensor start, past its zip local header."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    name_len, extra_len = struct.unpack("<HH", path.read_bytes()[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def test_empty_checkpoint_fails_the_stage_in_one_line(tmp_path):
    empty = tmp_path / "dnn.pt"
    empty.touch()
    code = "from test_faults import stand_in; from stages._cli import run; run(stand_in)"
    proc = subprocess_stage(["-c", code, "model", empty])
    assert proc.returncode == 1
    assert_one_line(proc.stderr, f"error: {empty}: ", "0 bytes", "re-run the stage")


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    return path


def flip_a_weight_byte(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    data[tensor_offset(path) + 100] ^= 0x01
    path.write_bytes(data)
    return path


def malicious(path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"state_dict": Payload()}, path)
    return path


def prepared(path: Path) -> Path:
    save_torch({"x_train": torch.zeros(8, 28, 28, dtype=torch.uint8), "y_train": torch.zeros(8, dtype=torch.int64),
                "x_test": torch.zeros(4, 28, 28, dtype=torch.uint8), "y_test": torch.zeros(4, dtype=torch.int64),
                "dataset": "mnist", "label": "MNIST", "source": "test"}, path)
    return path


@pytest.mark.parametrize("what,make,damage,expected", [
    ("model", saved_fc, truncate, "truncated or corrupt model checkpoint"),
    ("model", saved_fc, flip_a_weight_byte, "fails its CRC-32 check"),
    ("model", lambda p: p, malicious, "refused by torch.load(weights_only=True)"),
    ("data", prepared, truncate, "truncated or corrupt prepared dataset"),
], ids=["truncated_checkpoint", "flipped_weight_byte", "malicious_pickle", "truncated_prepared_data"])
def test_damaged_file_fails_the_stage_in_one_line_naming_it(tmp_path, monkeypatch, capsys, what, make, damage,
                                                             expected):
    path = damage(make(tmp_path / "file.pt"))
    status, stderr = in_process_stage([what, path], monkeypatch, capsys)
    assert status == 1
    assert_one_line(stderr, f"error: {path}: ", expected)


def test_truncated_prepared_data_is_a_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="prepared dataset"):
        load_prepared(truncate(prepared(tmp_path / "mnist.pt")))


def test_weights_edited_after_saving_fail_their_sha256_and_unhashed_checkpoints_are_refused(tmp_path):
    path = saved_fc(tmp_path / "fc.pt")
    ckpt = load_torch(path, what="model checkpoint", error=CheckpointError)
    next(iter(ckpt["state_dict"].values())).view(-1)[0] += 1.0   # an intact archive whose weights changed
    save_torch(ckpt, path)
    with pytest.raises(CheckpointError, match=f"{path}: its weights do not match the sha256"):
        load_model(path)
    del ckpt["weights_sha256"]
    save_torch(ckpt, path)
    with pytest.raises(CheckpointError, match=f"{path}: older checkpoint format.*re-run the stage"):
        load_model(path)


def test_weights_that_do_not_fit_the_named_architecture_are_refused(tmp_path):
    path = saved_fc(tmp_path / "fc.pt")
    ckpt = load_torch(path, what="model checkpoint", error=CheckpointError)
    save_torch({**ckpt, "arch": "dnn"}, path)
    with pytest.raises(CheckpointError, match=f"{path}: its weights do not fit mnist/dnn"):
        load_model(path)


def test_same_weights_give_the_same_bytes(tmp_path):
    model = build("mnist", "fc")
    first, second = tmp_path / "a.pt", tmp_path / "other" / "b.pt"
    for path in (first, second):
        save_model(model, path, kind="classifier", dataset="mnist", arch="fc")
    assert first.read_bytes() == second.read_bytes()


def test_outputs_get_the_mode_open_would_give(tmp_path):
    previous = os.umask(0o022)
    try:
        save_torch({"a": torch.zeros(1)}, tmp_path / "a.pt")
        write_json({"a": 1}, tmp_path / "a.json")
    finally:
        os.umask(previous)
    assert [oct(p.stat().st_mode & 0o777) for p in sorted(tmp_path.iterdir())] == ["0o644", "0o644"]


def test_dropout_model_resumes_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 4, 4, generator=g), torch.randint(0, 10, (64,), generator=g)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.01, lr_patience=5, seed=0)
    resume, description = Resume("models/toy.pt", root=tmp_path), {"toy": 1}

    class Killed(Exception):
        pass

    def killed_after_saving(state: dict) -> None:
        resume.saver(description)(state)
        raise Killed

    def train(seed: int, **fit_kwargs) -> tuple[nn.Module, tuple]:
        seed_everything(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
        train_classifier(model, x, y, x[:16], y[:16], cfg, log=lambda _: None, **fit_kwargs)
        return model, (torch.rand(1).item(), np.random.rand(), random.random())

    straight, straight_draws = train(0)
    with pytest.raises(Killed):
        train(0, save_state=killed_after_saving)
    resumed, resumed_draws = train(1, resume=resume.load(description))   # a fresh process seeds differently
    for name, tensor in straight.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), f"{name} differs after resuming"
    assert resumed_draws == straight_draws   # torch, numpy and Python random states all restored


def test_resume_state_is_ignored_when_an_input_changed(tmp_path):
    classifier = tmp_path / "dnn.pt"
    classifier.write_bytes(b"weights")
    Resume("models/ae.pt", inputs=[classifier], root=tmp_path).saver({"lr": 0.1})({"history": [1]})
    assert Resume("models/ae.pt", inputs=[classifier], root=tmp_path).load({"lr": 0.1}) == {"history": [1]}
    classifier.write_bytes(b"other weights")
    messages = []
    assert Resume("models/ae.pt", inputs=[classifier], root=tmp_path).load({"lr": 0.1}, messages.append) is None
    assert messages == [f"ignoring {tmp_path / 'models__ae.pt.state'}: its inputs changed ({classifier})"]


@pytest.mark.parametrize("request_ds,files,expected", [
    ("mnist", {"dnn": ("fashion_mnist", "dnn")}, "mnist/dnn.pt: holds a fashion_mnist classifier, expected a mnist"),
    ("mnist", {"dnn": ("cifar10", "dnn"), "ae": ("mnist", "ae")}, "mnist/dnn.pt: holds a cifar10 classifier"),
    ("cifar10", {"dnn": ("cifar10", "dnn"), "ae": ("mnist", "ae")}, "cifar10/ae.pt: holds a mnist ae"),
    ("mnist", {"dnn": ("mnist", "dnn"), "ae": ("mnist", "fc")}, "mnist/ae.pt: maps a batch of shape (2, 1, 28, 28) "
                                                               "to (2, 10), expected (2, 1, 28, 28)"),
    ("mnist", {"dnn": ("mnist", "ae")}, "mnist/dnn.pt: maps a batch of shape (2, 1, 28, 28) to (2, 1, 28, 28), "
                                        "expected (2, 10)"),
], ids=["fashion_mnist_as_mnist", "mnist_ae_with_cifar10_classifier", "mnist_ae_as_cifar10",
        "classifier_saved_as_ae", "ae_saved_as_classifier"])
def test_load_defended_refuses_models_of_another_dataset_or_shape(tmp_path, request_ds, files, expected):
    folder = tmp_path / request_ds
    for name, (dataset, arch) in files.items():
        kind = "ae" if name == "ae" else "classifier"
        save_model(build(dataset, arch), folder / f"{name}.pt", kind=kind, dataset=dataset, arch=arch)
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_defended(request_ds, ae="ae" if "ae" in files else None, classifier="dnn", models_dir=tmp_path)


def test_load_defended_gives_the_pipeline_when_everything_matches(tmp_path):
    for name, arch, kind in [("ae", "ae", "ae"), ("fc", "fc", "classifier")]:
        save_model(build("mnist", arch), tmp_path / "mnist" / f"{name}.pt", kind=kind, dataset="mnist", arch=arch)
    model = load_defended("mnist", ae="ae", classifier="fc", models_dir=tmp_path)
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def unreadable_params_stage(tmp_path: Path, env: dict | None = None) -> tuple[subprocess.CompletedProcess, Path]:
    """The real evaluate stage given a params file that is not YAML: it fails before any params are read."""
    params = tmp_path / "params.yaml"
    params.write_text("scale: [cpu\n  eps: {\n")
    (tmp_path / "x.pt").touch()
    proc = subprocess_stage(["-m", "stages.evaluate", "--dataset", "mnist", "--classifier", tmp_path / "x.pt",
                             "--data", tmp_path / "x.pt", "--metrics", tmp_path / "m.json", "--params", params], env)
    return proc, params


def test_unreadable_params_fail_a_real_stage_in_one_line(tmp_path):
    proc, params = unreadable_params_stage(tmp_path)
    assert proc.returncode == 1
    assert_one_line(proc.stderr, str(params))


def test_aaa_debug_shows_the_traceback(tmp_path):
    proc, _ = unreadable_params_stage(tmp_path, env={"AAA_DEBUG": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ParamsError" in proc.stderr
