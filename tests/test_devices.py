"""Device plumbing: the library creates every tensor on its inputs' device, and the device parameter.

A stray CPU tensor hides on a CPU-only machine: the run works, and breaks only on a GPU. The check below
makes it visible on the CPU. While the library's public functions run, a ``TorchFunctionMode`` watches every
tensor factory (``torch.rand``, ``arange``, ``zeros``, ...) called from a file of ``aaa_core`` and fails
when one does not name its device: such a tensor lands on the default device (the CPU) whatever the data's
device (modules' constructors excepted: ``.to(device)`` moves what they build). The planted fault below
shows the check failing. The CUDA tests run the same functions on a GPU
and skip without one.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.overrides import TorchFunctionMode

import aaa_core
from aaa_core.attacks import PGDConfig, pgd, pgd_until_fooled
from aaa_core.training.loops import pretrain_ae
from aaa_core.training.query_only import QueryOnly, ZeroOrder
from aaa_core.config import ParamsError, parse_params
from aaa_core.data import split_train_val
from aaa_core.evaluation.flags import eps_sweep, noise_flags, precision_gap, robust_flags, transfer_flags
from aaa_core.evaluation.knn import KNNDefended, LatentBank, encode_all
from aaa_core.training.losses import get_loss
from aaa_core.models import Defended, build
from aaa_core.runtime import DeviceError, describe_runtime, resolve_device
from aaa_core.training.loops import TrainConfig, train_ae, train_classifier, training_attack

LIBRARY = str(Path(aaa_core.__file__).resolve().parent)
FACTORIES = {torch.rand, torch.randn, torch.randint, torch.randperm, torch.arange, torch.zeros, torch.ones,
             torch.empty, torch.full, torch.tensor, torch.eye, torch.linspace, torch.as_tensor}
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class StrayFactories(TorchFunctionMode):
    """Records every tensor factory called from ``aaa_core`` code without an explicit device."""

    def __init__(self) -> None:
        super().__init__()
        self.strays: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and "device" not in kwargs:
            frame = sys._getframe(1)
            while frame is not None and "/torch/" in frame.f_code.co_filename:
                frame = frame.f_back
            # a module's constructor builds its parameters and buffers on the CPU; .to(device) moves them
            if (frame is not None and frame.f_code.co_filename.startswith(LIBRARY)
                    and frame.f_code.co_name != "__init__"):
                self.strays.append(f"{func.__name__} at {frame.f_code.co_filename}:{frame.f_lineno}")
        return func(*args, **kwargs)


def library_workout(x: torch.Tensor, y: torch.Tensor) -> None:
    """Every public function that creates tensors while training or evaluating, on (x, y)'s device."""
    device = x.device
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.002, lr_patience=5, seed=0, epoch_images=32, bf16=True,
                      eps_ramp=4, augment=True)
    attack = training_attack(PGDConfig(eps=0.3, alpha=0.1, steps=2))
    quiet = {"log": lambda _: None}
    (xt, yt), (xv, yv) = split_train_val(x, y, subset=0, val_size=16, seed=0)
    clf = build("mnist", "fc").to(device)
    train_classifier(clf, xt, yt, xv, yv, cfg, attack=attack, **quiet)
    ae = build("mnist", "ae", latent_dim=8).to(device)
    train_ae(ae, [clf, clf], get_loss("ce_mse"), xt, yt, xv, yv, cfg, attack=attack, **quiet)
    pretrain_ae(ae, xt, xv, cfg, **quiet)
    model = Defended(ae, clf).eval()
    pgd_cfg = PGDConfig(eps=0.3, alpha=0.1, steps=3, restarts=2)
    flags = robust_flags(model, x, y, pgd_cfg, record_at=(1,), seed=0, batch_size=16)
    assert all(f.device == device for f in flags.values())
    assert transfer_flags(clf, model, x, y, pgd_cfg, batch_size=16).device == device
    assert noise_flags(model, x, y, 0.3).device == device
    precision_gap(model, x[:8], y[:8], pgd_cfg)
    eps_sweep(model, x[:8], y[:8], [0.0, 0.1], steps=2)
    pgd_until_fooled(model, x, y, eps=0.3, alpha=0.1, steps=2, record_at=(1,))
    bank = LatentBank(encode_all(ae, xt), k=3).to(device)
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    assert pgd(straight, x[:8], y[:8], eps=0.3, alpha=0.1, steps=2).device == device
    blackbox = ZeroOrder(QueryOnly(clf), directions=2, smoothing=0.01)
    pipeline = Defended(ae, blackbox).eval()
    assert pgd(pipeline, x[:8], y[:8], eps=0.3, alpha=0.1, steps=1).device == device


@pytest.fixture()
def params_raw() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())


@pytest.fixture()
def small(mnist):
    return mnist["x_train"][:64].clone(), mnist["y_train"][:64].clone()


def test_the_library_names_the_device_of_every_tensor_it_creates(small):
    with StrayFactories() as mode:
        library_workout(*small)
    assert not mode.strays, "tensors created without a device (they would land on the CPU): " + "; ".join(
        sorted(set(mode.strays)))


def test_the_stray_tensor_check_fails_on_a_planted_fault():
    namespace = {"torch": torch}
    planted = Path(LIBRARY) / "planted.py"   # never written: only the code's file name matters
    exec(compile("def offset(x):\n    return x + torch.arange(x.shape[-1])\n", str(planted), "exec"), namespace)
    with StrayFactories() as mode:
        namespace["offset"](torch.zeros(2, 3))
    assert mode.strays == [f"arange at {planted}:2"]
    with StrayFactories() as mode:
        torch.arange(3)                      # test code is not the library's: not counted
    assert mode.strays == []


@pytest.mark.parametrize("name", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_the_device_parameter_accepts_the_documented_names(name, params_raw):
    assert parse_params({**params_raw, "device": name}).device == name


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "", "mps"])
def test_a_bad_device_parameter_names_the_key(name, params_raw):
    with pytest.raises(ParamsError, match=r"device must be auto, cpu, cuda or cuda:N"):
        parse_params({**params_raw, "device": name})


def test_auto_and_cpu_resolve_and_a_missing_gpu_is_refused(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="device 'cuda:1' asked for a CUDA GPU, but this machine has 0"):
        resolve_device("cuda:1")


def test_metrics_record_where_and_how_a_stage_ran():
    info = describe_runtime(torch.device("cpu"), bf16_training=True)
    assert info["device"] == "cpu" and info["device_name"]
    assert info["torch"] == torch.__version__ and info["evaluation_precision"] == "float32"
    assert info["training_precision"] == "bfloat16 autocast"


@CUDA
def test_the_library_runs_on_a_gpu(small):
    x, y = (t.cuda() for t in small)
    with StrayFactories() as mode:
        library_workout(x, y)
    assert not mode.strays


@CUDA
def test_float32_pgd_on_the_gpu_matches_the_cpu_flags(mnist, trained_fc):
    """Different random streams, so not flag for flag: accuracies within a few examples of 200."""
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    cfg = PGDConfig(eps=0.1, alpha=0.01, steps=20)
    cpu = robust_flags(trained_fc.cpu().eval(), x, y, cfg)[20].float().mean().item()
    gpu = robust_flags(trained_fc.cuda().eval(), x.cuda(), y.cuda(), cfg)[20].float().mean().item()
    trained_fc.cpu()
    assert abs(cpu - gpu) <= 0.03
