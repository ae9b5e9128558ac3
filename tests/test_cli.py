"""The `aaa` command on a classifier and data of the user's own: a torchvision model, an image folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from aaa_core.cli import main
from aaa_core.models.external import defend, load_classifier
from aaa_core.models.generic import load_ae
from aaa_core.data.folders import load_folder_dataset

FACTORY = '''
import torch
import torchvision


def net():
    """A tiny torchvision ResNet-18 for 16x16 RGB images of 2 classes."""
    return torchvision.models.resnet18(num_classes=2)
'''


def make_folder(root: Path, n: int = 10, size: int = 16) -> Path:
    """Two classes a classifier can tell apart: dark and bright images with noise."""
    gen = torch.Generator().manual_seed(0)
    for label, (name, level) in enumerate((("dark", 0.25), ("bright", 0.75))):
        (root / name).mkdir(parents=True)
        for i in range(n):
            pixels = (level + 0.2 * torch.rand(size, size, 3, generator=gen) - 0.1).clamp(0, 1)
            Image.fromarray((pixels * 255).byte().numpy(), "RGB").save(root / name / f"{i}.png")
    return root


@pytest.fixture()
def workspace(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    make_folder(tmp_path / "images")
    torch.manual_seed(0)
    from my_models import net
    torch.save(net().state_dict(), tmp_path / "net.pt")
    return tmp_path


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


FIT = ["fit", "--classifier", "my_models:net", "--weights", "net.pt", "--dataset", "folder:images", "--eps", "0.1",
       "--epochs", "1", "--steps", "2", "--batch-size", "8"]


def test_aaa_help_comes_from_the_installed_entry_point():
    script = Path(sys.executable).parent / "aaa"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "fit" in out and "evaluate" in out


def test_fit_then_evaluate_a_torchvision_model_on_an_image_folder(workspace):
    result = invoke(*FIT, "--out", "ae.pt")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workspace / "ae.json").read_text())
    assert metrics["arch"] == "conv_ae" and metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 20
    assert metrics["attack"]["eps"] == 0.1 and len(metrics["history"]) == 1
    # the AE loads back in front of the user's classifier
    model = defend(load_classifier("my_models:net", "net.pt"), workspace / "ae.pt")
    assert model(torch.rand(3, 3, 16, 16)).shape == (3, 2)
    result = invoke("evaluate", "--classifier", "my_models:net", "--weights", "net.pt", "--dataset", "folder:images",
                    "--eps", "0.1", "--ae", "ae.pt", "--no-suite", "--metrics", "eval.json")
    assert result.exit_code == 0, result.output
    evaluation = json.loads((workspace / "eval.json").read_text())
    assert set(evaluation["robust_accuracy"]) == {"pgd40"} and evaluation["examples"] == 4
    # every printed accuracy carries its interval, and the JSON keeps the bounds
    lo, hi = evaluation["wilson_95"]["pgd40"]
    assert 0 <= lo <= evaluation["robust_accuracy"]["pgd40"] <= hi <= 1 and "95% Wilson" in result.output


def test_query_only_fit_counts_queries_and_never_needs_gradients(workspace):
    result = invoke(*FIT, "--access", "query", "--surrogate-weight", "0.5", "--directions", "2", "--out", "ae_q.pt")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workspace / "ae_q.json").read_text())
    box = metrics["blackbox"]
    assert len(metrics["warm_start_history"]) == 1        # query access starts with a clean reconstruction epoch
    # the generic AE's latent (64 x 4 x 4) is larger than the image: the pixel-space estimate, PGD on the surrogate
    assert box["estimate"].startswith("pixel, 2 random directions") and box["surrogate"] == "a fresh my_models:net"
    # one query per training and validation image for the surrogate's scores; then per training image one forward and
    # 2 directions for the update (the attack runs on the surrogate), and one validation forward each
    n, n_val = metrics["n_train"], metrics["n_val"]
    assert box["surrogate_queries"] == n + n_val and box["ae_training_queries"] == n * 3 + n_val
    assert box["queries"] == 4 * n + 2 * n_val and box["queries_per_training_image"] == (4 * n + 2 * n_val) / n
    ae, info = load_ae(workspace / "ae_q.pt")
    assert info["meta"]["description"]["access"] == "query"


def test_the_suite_runs_on_a_users_pipeline(workspace):
    assert invoke(*FIT, "--out", "ae.pt").exit_code == 0
    result = invoke("evaluate", "--classifier", "my_models:net", "--weights", "net.pt", "--dataset", "folder:images",
                    "--eps", "0.1", "--ae", "ae.pt", "--subset", "4", "--pgd-steps", "5", "--apgd-steps", "5",
                    "--square-queries", "20", "--metrics", "suite.json")
    # an untrained classifier may fail a sanity check (exit 2): the metrics then say so
    assert result.exit_code in (0, 2), result.output
    suite = json.loads((workspace / "suite.json").read_text())
    names = {a["name"] for a in suite["attacks"]}
    assert {"apgd-ce", "square", "transfer-from-classifier"} <= names
    # APGD-T's targeted DLR loss needs 4 classes: left out, saying why, instead of crashing
    assert "apgd-t" not in names and "at least 4 classes" in suite["skipped_attacks"]["apgd-t"]
    assert suite["sanity_passed"] == (result.exit_code == 0)
    square = next(a for a in suite["attacks"] if a["name"] == "square")
    assert square["settings"]["queries"] == 20
    # without APGD-T the suite records what evaluate_suite does: every attack and the noise from its own seed,
    # per-example flags, and which (seeded random) examples it attacked
    from aaa_core.runtime import attack_seed
    assert suite["uniform_noise_seed"] == attack_seed(0, "uniform-noise")
    assert all(a["settings"]["seed"] == attack_seed(0, "pgd-paper" if a["name"].endswith("-paper") else a["name"])
               for a in suite["attacks"])   # the paper protocol: one run for its step counts
    assert len(suite["natural_flags"]) == len(suite["worst_case_flags"]) == suite["examples"] == 4
    assert all(len(a["flags"]) == 4 for a in suite["attacks"])
    assert suite["subset"]["n"] == 4 and suite["subset"]["seed"] == 0


ZOO = '''
from aaa_core.models import build


def fc():
    """The study's MNIST FC classifier (the registry's mnist/fc), for `aaa --classifier zoo:fc`."""
    return build("mnist", "fc")
'''

# params.yaml's keys set to a budget of seconds: eps 0.1 leaves the FC classifier partly robust (per-example flags
# that depend on each attack's random start), two paper-protocol step counts (the steps check runs), seed 3
SMALL_SUITE = {"seed": 3, "device": "cpu", "threat.mnist": {"eps": 0.1, "alpha": 0.03, "eval_steps": [2, 4]},
               "suite.mnist": {"subset": 30, "pgd_steps": 3, "pgd_alpha": 0.04, "pgd_restarts": 2, "apgd_steps": 3,
                               "apgdt_targets": 2, "square_queries": 30, "transfer_steps": 3,
                               "curve_eps": [0.0, 0.1, 1.0], "curve_steps": 3, "max_acc_at_high_eps": 0.05,
                               "masking_tolerance": 0.02, "max_masking_gap": 0.05, "acknowledged_masking": []}}


@pytest.fixture()
def study(tmp_path, monkeypatch, mnist_raw, trained_fc):
    """A prepared MNIST file, params.yaml at SMALL_SUITE, the conftest's trained FC classifier saved both as the
    robustness stage loads it (clf.pt) and as `aaa` does (zoo:fc with the state dict net.pt), and an AE after one
    epoch of clean reconstruction (ae.pt, which both load). Returns the folder, the working directory."""
    import yaml

    from aaa_core.models.checkpoints import save_model
    from aaa_core.io import save_torch
    from aaa_core.data import to_float
    from aaa_core.models import build
    from aaa_core.training.loops import TrainConfig, pretrain_ae
    from conftest import set_key
    from aaa_core.models.generic import save_ae

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "zoo.py").write_text(ZOO)
    save_torch({"x_train": mnist_raw["x_train"][:2000], "y_train": mnist_raw["y_train"][:2000],
                "x_test": mnist_raw["x_test"][:500], "y_test": mnist_raw["y_test"][:500], "dataset": "mnist",
                "label": "MNIST (test subset)", "source": "test"}, tmp_path / "mnist.pt")
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for key, value in SMALL_SUITE.items():
        set_key(raw, key, value)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    save_model(trained_fc, tmp_path / "clf.pt", kind="classifier", dataset="mnist", arch="fc", mode="natural")
    torch.save(trained_fc.state_dict(), tmp_path / "net.pt")
    torch.manual_seed(0)
    ae = build("mnist", "ae", latent_dim=128)
    x = to_float(mnist_raw["x_train"][:1100])   # about 2/3 of the test images come through it classified correctly
    pretrain_ae(ae, x[:1000], x[1000:], TrainConfig(epochs=1, batch_size=8, lr=0.003, lr_patience=5, seed=0),
                log=lambda _: None)
    save_ae(ae.eval(), tmp_path / "ae.pt", dataset="mnist", arch="ae", arch_kwargs={"latent_dim": 128},
            input_shape=(1, 28, 28), loss="mse")
    return tmp_path


@pytest.mark.parametrize("defended", [False, True], ids=["classifier", "ae+classifier"])
def test_aaa_evaluate_and_the_robustness_stage_give_the_same_flags(study, monkeypatch, defended):
    """`aaa evaluate --suite` and the study's robustness stage on one model, dataset file and params.yaml: both call
    aaa_core.evaluation.suite.evaluate_suite once, with equal configs and equal test subsets, and report the same per-example
    flags of every attack, the same natural, noise and worst-case flags, curve, independent runs and checks. With
    an AE, the stage's --transfer classifier=clf.pt is the command's transfer from the classifier behind it."""
    import aaa_core.evaluation.suite
    import stages.robustness

    real, calls = aaa_core.evaluation.suite.evaluate_suite, []

    def recording(caller):
        def evaluate_suite(model, x, y, cfg, **kwargs):
            report = real(model, x, y, cfg, **kwargs)
            calls.append({"caller": caller, "x": x, "y": y, "cfg": cfg, "sources": sorted(kwargs["transfer_sources"]),
                          "report": report})
            return report
        return evaluate_suite

    monkeypatch.setattr(stages.robustness, "evaluate_suite", recording("stage"))
    monkeypatch.setattr(aaa_core.evaluation.suite, "evaluate_suite", recording("aaa"))
    pipeline = ["--pipeline", "ae.pt+clf.pt", "--transfer", "classifier=clf.pt"] if defended else ["--pipeline", "clf.pt"]
    # the stage stops, writing nothing, when a sanity check fails: its report is what it computed all the same
    CliRunner().invoke(stages.robustness.main, ["--dataset", "mnist", "--name", "p", *pipeline, "--data", "mnist.pt",
                                                "--metrics", "stage.json", "--params", "params.yaml"])
    result = invoke("evaluate", "--classifier", "zoo:fc", "--weights", "net.pt", "--dataset", "mnist",
                    "--data", "mnist.pt", "--params", "params.yaml", "--device", "cpu",
                    *(["--ae", "ae.pt"] if defended else []), "--metrics", "aaa.json")
    assert result.exit_code in (0, 2), result.output
    aaa = json.loads((study / "aaa.json").read_text())
    stage = json.loads(json.dumps(calls[0]["report"].as_dict()))
    assert calls[0]["caller"] == "stage"

    def flags(report: dict) -> dict:
        return {a["name"]: a["flags"] for a in report["attacks"]}

    assert flags(aaa) == flags(stage)
    assert (aaa["natural_flags"], aaa["worst_case_flags"]) == (stage["natural_flags"], stage["worst_case_flags"])
    # every attack of the study ran, and the flags tell examples and attacks apart (a start that differed would show)
    assert set(flags(aaa)) == {"pgd2-paper", "pgd4-paper", "pgd3-ce-x2", "pgd3-margin-x2", "apgd-ce", "apgd-t",
                               "square"} | ({"transfer-from-classifier"} if defended else set())
    assert len(aaa["natural_flags"]) == 30 and any("0" in f and "1" in f for f in flags(aaa).values())
    assert len(set(flags(aaa).values())) > 1

    def untimed(report: dict) -> dict:
        return {**{k: report[k] for k in stage}, "attacks": [{**a, "seconds": None} for a in report["attacks"]]}

    assert untimed(aaa) == untimed(stage)   # noise and its seed, curve, independent runs, checks
    assert "more_steps_not_weaker_independent_runs" in {c["name"] for c in aaa["checks"]}
    assert aaa["skipped_attacks"] == {} and aaa["seed"] == 3
    # one code path: the command called the stage's function once, with the stage's config, examples and sources
    assert [c["caller"] for c in calls] == ["stage", "aaa"]
    assert calls[1]["cfg"] == calls[0]["cfg"] and calls[1]["sources"] == calls[0]["sources"]
    assert torch.equal(calls[1]["x"], calls[0]["x"]) and torch.equal(calls[1]["y"], calls[0]["y"])


@pytest.mark.parametrize("args, message", [
    (["--classifier", "no_such_module:net"], "cannot import 'no_such_module'"),
    (["--classifier", "my_models"], "expected MODULE:FACTORY"),
    (["--classifier", "my_models:nope"], "has no attribute 'nope'"),
])
def test_a_bad_classifier_spec_is_one_line_naming_it(workspace, args, message):
    result = invoke("fit", *args, "--dataset", "folder:images", "--eps", "0.1", "--out", "x.pt")
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not (workspace / "x.pt").exists()


def test_weights_that_do_not_fit_and_images_of_mixed_sizes_are_refused(workspace):
    torch.save({"fc.weight": torch.zeros(3, 3)}, workspace / "bad.pt")
    result = invoke("fit", "--classifier", "my_models:net", "--weights", "bad.pt", "--dataset", "folder:images",
                    "--eps", "0.1", "--out", "x.pt")
    assert result.exit_code == 1 and "bad.pt: does not fit my_models:net" in result.output
    Image.new("RGB", (20, 16)).save(workspace / "images" / "dark" / "odd.png")
    result = invoke(*FIT, "--out", "x.pt")
    assert result.exit_code == 1 and "odd.png: 20x16 pixels, expected 16x16" in result.output


def test_a_folder_with_train_and_test_splits_keeps_them(tmp_path):
    make_folder(tmp_path / "d" / "train", n=3)
    make_folder(tmp_path / "d" / "test", n=2)
    data = load_folder_dataset(tmp_path / "d")
    assert data["x_train"].shape == (6, 3, 16, 16) and data["x_test"].shape == (4, 3, 16, 16)
    assert data["classes"] == ["bright", "dark"] and 0 <= data["x_train"].min() and data["x_train"].max() <= 1


def test_a_named_dataset_takes_its_defaults_from_params_yaml(workspace):
    from aaa_core.io import save_torch

    (workspace / "mnist_models.py").write_text(
        "import torch\n\ndef linear():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))\n")
    gen = torch.Generator().manual_seed(0)
    save_torch({"x_train": torch.randint(0, 256, (40, 1, 28, 28), generator=gen, dtype=torch.uint8),
                "y_train": torch.arange(40) % 10, "x_test": torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8),
                "y_test": torch.arange(8) % 10, "dataset": "mnist", "label": "MNIST (test stand-in)",
                "source": "test"}, workspace / "mnist.pt")
    import yaml
    from aaa_core.config import load_params

    # params.yaml with ae.mnist's training knobs set apart from the folder defaults (warm 1, mse weight 10), so
    # the metrics show which source they came from
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    raw["ae"]["mnist"].update(warm_epochs=2, mse_weight=3.0)
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    params = str(workspace / "params.yaml")
    section = load_params(params).section
    result = invoke("fit", "--classifier", "mnist_models:linear", "--dataset", "mnist", "--data", "mnist.pt",
                    "--params", params, "--epochs", "1", "--epoch-images", "16", "--steps", "1", "--out", "ae.pt")
    # params.yaml's mnist split holds out 1,000 validation images: more than this stand-in has
    assert result.exit_code == 2 and "params split.mnist.val_size" in result.output
    result = invoke("fit", "--classifier", "mnist_models:linear", "--dataset", "mnist", "--data", "mnist.pt",
                    "--params", params, "--epochs", "1", "--epoch-images", "16", "--steps", "1", "--val-size", "8",
                    "--out", "ae.pt")
    assert result.exit_code == 0, result.output
    metrics = json.loads((workspace / "ae.json").read_text())
    # eps, step and the AE come from params.yaml: the threat's eps, adversarial.mnist.alpha (not the folder
    # default eps / 4), the MNIST zoo AE and its training knobs ae.mnist.warm_epochs and mse_weight
    alpha = section("adversarial", "mnist").alpha
    assert metrics["attack"]["eps"] == 0.3 and metrics["attack"]["alpha"] == alpha != 0.3 / 4 and metrics["arch"] == "ae"
    assert metrics["loss"] == "ce_mse" and metrics["arch_kwargs"] == {"latent_dim": 128}
    assert (metrics["warm_epochs"], metrics["mse_weight"]) == (2, 3.0) and len(metrics["warm_start_history"]) == 2


def test_sixteen_bit_images_and_mismatched_test_images_are_refused(tmp_path):
    from aaa_core.errors import DataFileError

    make_folder(tmp_path / "a", n=2)
    Image.fromarray(torch.full((16, 16), 30000, dtype=torch.int32).numpy().astype("uint16")).save(
        tmp_path / "a" / "dark" / "deep.png")
    with pytest.raises(DataFileError, match="deep.png: a I;16 .*convert your images to 8 bits"):
        load_folder_dataset(tmp_path / "a")
    make_folder(tmp_path / "b" / "train", n=2)
    make_folder(tmp_path / "b" / "test", n=2, size=20)
    with pytest.raises(DataFileError, match=r"b/test: images of \(3, 20, 20\), expected \(3, 16, 16\)"):
        load_folder_dataset(tmp_path / "b")


EVALUATE = ["evaluate", "--classifier", "my_models:net", "--weights", "net.pt", "--dataset", "folder:images",
            "--eps", "0.1", "--ae", "ae.pt", "--no-suite", "--metrics", "eval.json"]


def test_the_device_is_recorded_and_nothing_is_created_off_it(workspace):
    """--device: the metrics name where fit and evaluate ran; while they run, no tensor factory called from
    aaa_core (the command and custom.py included) leaves out its device, the check that finds a stray CPU
    tensor on a CPU-only machine (tests/test_devices.py, where it is shown failing on a planted fault)."""
    from test_devices import StrayFactories

    with StrayFactories() as mode:
        assert invoke(*FIT, "--device", "cpu", "--out", "ae.pt").exit_code == 0
        assert invoke(*EVALUATE, "--device", "cpu").exit_code == 0
    assert not mode.strays, mode.strays
    fit_env = json.loads((workspace / "ae.json").read_text())["environment"]
    eval_env = json.loads((workspace / "eval.json").read_text())["environment"]
    assert fit_env["device"] == eval_env["device"] == "cpu" and fit_env["device_name"] == eval_env["device_name"]
    assert fit_env["training_precision"] == "float32" and eval_env["evaluation_precision"] == "float32"


@pytest.mark.parametrize("device, message", [("cuda", "asked for a CUDA GPU, but this machine has 0 usable"),
                                             ("gpu", "device must be auto, cpu, cuda or cuda:N")])
def test_a_device_this_machine_lacks_is_one_line_naming_the_option(workspace, monkeypatch, device, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, [*FIT, "--device", device, "--out", "x.pt"])
    assert result.exit_code == 2 and "--device" in result.output and message in result.output
    assert "Traceback" not in result.output and not (workspace / "x.pt").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fit_and_evaluate_on_a_gpu(workspace):
    assert invoke(*FIT, "--device", "cuda", "--out", "ae.pt").exit_code == 0
    assert invoke(*EVALUATE, "--device", "cuda").exit_code == 0
    env = json.loads((workspace / "eval.json").read_text())["environment"]
    assert env["device"].startswith("cuda") and env["tf32"] is False and env["cudnn_tf32"] is False
    # the AE file loads anywhere: its weights were saved from the CPU
    ae, _ = load_ae(workspace / "ae.pt")
    assert all(p.device.type == "cpu" for p in ae.parameters())


def test_the_mse_weight_of_ce_mse_is_an_option_and_recorded(workspace):
    # an image folder's defaults are the study's measured ones: MSE weight 10, one warm (clean) epoch
    assert invoke(*FIT, "--loss", "ce_mse", "--out", "ae10.pt").exit_code == 0
    assert invoke(*FIT, "--loss", "ce_mse", "--mse-weight", "1", "--out", "ae1.pt").exit_code == 0
    w10, w1 = (json.loads((workspace / f"ae{w}.json").read_text()) for w in (10, 1))
    assert (w10["mse_weight"], w10["warm_epochs"], w1["mse_weight"], w1["warm_epochs"]) == (10.0, 1, 1.0, 1)
    # the same seed, batches and attack starts: only the loss differs, so the training losses do
    assert w10["history"][0]["loss"] > w1["history"][0]["loss"]
    result = CliRunner().invoke(main, [*FIT, "--loss", "ce", "--mse-weight", "10", "--out", "x.pt"])
    assert result.exit_code == 2 and "--mse-weight" in result.output and "this run's loss is ce" in result.output


MNIST_FACTORY = '''
import torch
from torch import nn
from tripwire import tripwire


class Net(nn.Module):
    """A linear MNIST classifier whose backward pass raises: any gradient taken through it fails the test."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = nn.Linear(784, 10)

    def forward(self, x):
        return self.linear(tripwire(x).flatten(1))
'''


@pytest.fixture()
def mnist_workspace(tmp_path, monkeypatch):
    """A tiny prepared "mnist" file (random digits) and a tripwired classifier of it, in a fresh folder."""
    (tmp_path / "my_mnist.py").write_text(MNIST_FACTORY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    torch.save({"x_train": torch.randint(0, 256, (40, 1, 28, 28), generator=gen, dtype=torch.uint8),
                "y_train": torch.randint(10, (40,), generator=gen), "dataset": "mnist", "label": "MNIST (random)",
                "x_test": torch.randint(0, 256, (16, 1, 28, 28), generator=gen, dtype=torch.uint8),
                "y_test": torch.randint(10, (16,), generator=gen), "source": "test"}, tmp_path / "mnist.pt")
    return tmp_path


MNIST_FIT = ["fit", "--classifier", "my_mnist:Net", "--dataset", "mnist", "--data", "mnist.pt",
             "--params", str(Path(__file__).resolve().parents[1] / "params.yaml"), "--epochs", "1", "--epoch-images", "0",
             "--steps", "1", "--batch-size", "8", "--val-size", "8", "--out", "ae.pt"]


def test_query_only_fit_of_a_named_dataset_estimates_in_the_latent_at_an_exact_count(mnist_workspace):
    from tripwire import TripwireError  # noqa: F401 (a gradient through the classifier would raise it here)

    result = invoke(*MNIST_FIT, "--access", "query", "--surrogate-weight", "0.5", "--estimate-images", "2")
    assert result.exit_code == 0, result.output
    metrics = json.loads((mnist_workspace / "ae.json").read_text())
    box, latent = metrics["blackbox"], metrics["arch_kwargs"].get("latent_dim", 128)
    assert box["estimate"] == f"latent, coordinate-wise ({latent} queries per estimated image)"
    assert box["surrogate"] == "dnn (blackbox.yaml)" and box["surrogate_weight"] == 0.5
    n, n_val = metrics["n_train"], metrics["n_val"]
    batches = -(-n // 8)
    # scores for the surrogate; per batch 8 forwards and 2 estimated images of `latent` probes; validation forwards
    assert box["surrogate_queries"] == n + n_val
    assert box["ae_training_queries"] == n + batches * 2 * latent + n_val
    assert box["queries"] == box["surrogate_queries"] + box["ae_training_queries"]


def test_the_tripwire_of_the_named_query_test_catches_white_box_training(mnist_workspace):
    # the control: the same fit with gradients through the classifier trips it, so the test above can fail
    from tripwire import TripwireError

    with pytest.raises(TripwireError):
        invoke(*MNIST_FIT, "--access", "gradient")


def test_query_only_fit_refuses_a_surrogate_with_the_classifiers_own_weights_and_unused_options(mnist_workspace):
    (mnist_workspace / "same.py").write_text("from my_mnist import Net\n")
    result = CliRunner().invoke(main, [*MNIST_FIT, "--access", "query", "--surrogate", "same:Net"])
    assert result.exit_code == 2 and "gives the classifier's own weights" in result.output
    result = CliRunner().invoke(main, [*MNIST_FIT, "--access", "query", "--surrogate-weight", "0.5", "--directions", "5"])
    assert result.exit_code == 2 and "directions are not used" in result.output
    result = CliRunner().invoke(main, [*MNIST_FIT, "--access", "query", "--estimate-images", "5"])
    assert result.exit_code == 2 and "takes no zeroth-order estimate" in result.output


def test_query_only_fit_by_default_trains_against_the_surrogate_at_one_query_per_image(mnist_workspace):
    result = invoke(*MNIST_FIT, "--access", "query")
    assert result.exit_code == 0, result.output
    metrics = json.loads((mnist_workspace / "ae.json").read_text())
    box = metrics["blackbox"]
    assert box["surrogate_weight"] == 1 and box["estimate"] == "none: white-box against the surrogate"
    assert box["ae_training_queries"] == 0 and box["queries"] == metrics["n_train"] + metrics["n_val"]
