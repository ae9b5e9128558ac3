import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import set_key

from aaa_core.config import SCALES, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("scale", SCALES)
def test_repository_params_load_at_every_scale(scale):
    raw = raw_params()
    raw["scale"] = scale
    params = parse_params(raw)
    assert params.section("train", "mnist").batch_size > 0
    assert params.attack("mnist").eps == 0.3


def test_the_overlay_replaces_only_the_keys_it_names():
    raw = raw_params()
    raw["scale"] = "smoke"
    smoke = parse_params(raw).section("evaluate", "mnist")
    cpu = parse_params(raw_params()).section("evaluate", "mnist")
    # the cpu scale is the base section's values, the smoke overlay names its own (smaller) subset
    assert (cpu.subset, smoke.subset) == (raw["evaluate"]["mnist"]["subset"],
                                          raw["scales"]["smoke"]["evaluate"]["mnist"]["subset"])
    assert cpu.subset > smoke.subset > 0
    assert smoke.restarts == cpu.restarts == 1 and smoke.sanity_eps == cpu.sanity_eps   # not in the overlay
    # the AE's training knobs: the cpu scale's measured ones, the paper scale's overlay the paper's (no warm start,
    # MSE weight 1); the architecture it does not name stays
    paper = raw_params()
    paper["scale"] = "paper"
    paper_ae = parse_params(paper).section("ae", "mnist")
    cpu_ae = parse_params(raw_params()).section("ae", "mnist")
    assert (cpu_ae.warm_epochs, cpu_ae.mse_weight, paper_ae.warm_epochs, paper_ae.mse_weight) == (1, 10.0, 0, 1.0)
    assert cpu_ae.latent_dim == paper_ae.latent_dim == 128
    assert parse_params(raw).section("models", "cifar10") == {"resnet": {"widen": 1, "units": 1},
                                                               "vgg19": {"width_divisor": 16},
                                                               "dnn": {"width_divisor": 8}}


def test_unknown_key_is_named():
    raw = raw_params()
    raw["train"]["mnist"]["lr_patiance"] = 3
    with pytest.raises(ParamsError, match=r"unknown key\(s\) train.mnist.lr_patiance"):
        parse_params(raw)
    raw = raw_params()
    raw["scales"]["smoke"]["evaluate"]["mnist"]["subsett"] = 3
    with pytest.raises(ParamsError, match=r"unknown key\(s\) scales.smoke.evaluate.mnist.subsett"):
        parse_params(raw)


def test_missing_and_mistyped_keys_are_named():
    raw = raw_params()
    del raw["threat"]["mnist"]["alpha"]
    with pytest.raises(ParamsError, match=r"missing key\(s\) threat.mnist.alpha"):
        parse_params(raw)
    raw = raw_params()
    raw["train"]["mnist"]["batch_size"] = "64"
    with pytest.raises(ParamsError, match=r"train.mnist.batch_size must be an integer"):
        parse_params(raw)


# Issue 14's table: each of these was accepted (or crashed without naming the key) before ranges existed.
@pytest.mark.parametrize("path, value, message", [
    ("threat.mnist.alpha", -0.01, r"threat.mnist.alpha = -0.01 is out of range: expected in \(0, 1\]"),
    ("threat.mnist.eps", -0.3, r"threat.mnist.eps = -0.3 is out of range: expected in \(0, 1\]"),
    ("threat.mnist.eps", 3.0, r"threat.mnist.eps = 3.0 is out of range: expected in \(0, 1\]"),
    ("adversarial.mnist.epochs", -1, r"adversarial.mnist.epochs = -1 is out of range: expected >= 1"),
    ("train.mnist.batch_size", 0, r"train.mnist.batch_size = 0 is out of range: expected >= 1"),
    ("train.mnist.lr", -0.002, r"train.mnist.lr = -0.002 is out of range: expected > 0"),
    ("threat.mnist.eval_steps", [], r"threat.mnist.eval_steps must be a non-empty list"),
    ("split.mnist.val_size", 70000, r"split.mnist.val_size = 70000 is out of range \(scale cpu\): expected at most 59999"),
    ("evaluate.mnist.subset", 20000, r"evaluate.mnist.subset = 20000 is out of range \(scale cpu\): expected at most 10000"),
    ("adversarial.mnist.alpha", 0.0, r"adversarial.mnist.alpha = 0.0 is out of range"),
    ("evaluate.mnist.sanity_max_acc", 1.5, r"evaluate.mnist.sanity_max_acc = 1.5 is out of range: expected in \[0, 1\]"),
    ("suite.mnist.apgdt_targets", 12, r"suite.mnist.apgdt_targets = 12 is out of range: expected in \[1, 9\]"),
    ("sweep.mnist.eps", [0.0, 1.5], r"sweep.mnist.eps\[1\] = 1.5 is out of range"),
    ("scales.smoke.adversarial.mnist.steps", 0, r"scales.smoke.adversarial.mnist.steps = 0 is out of range"),
])
def test_out_of_range_values_are_refused_naming_key_value_and_range(path, value, message):
    raw = raw_params()
    set_key(raw, path, value)
    with pytest.raises(ParamsError, match=message):
        parse_params(raw)


def test_a_bad_value_at_another_scale_is_caught_on_a_cpu_run():
    raw = raw_params()
    raw["scales"]["paper"]["evaluate"]["mnist"]["subset"] = -1
    with pytest.raises(ParamsError, match=r"scales.paper.evaluate.mnist.subset = -1"):
        parse_params(raw)


def test_bad_choices_are_rejected(tmp_path):
    raw = raw_params()
    raw["loss"] = "l1"
    with pytest.raises(ParamsError, match="loss must be one of"):
        parse_params(raw)
    path = tmp_path / "params.yaml"
    path.write_text("seed: [")
    with pytest.raises(ParamsError, match=f"{path} is not valid YAML"):
        load_params(path)


def test_a_stage_given_bad_params_prints_one_line_naming_the_key(tmp_path):
    raw = raw_params()
    raw["threat"]["mnist"]["alpha"] = -0.01
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    data = tmp_path / "mnist.pt"
    data.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "stages.evaluate", "--dataset", "mnist", "--classifier", str(data),
                           "--data", str(data), "--metrics", str(tmp_path / "m.json"), "--params", str(bad)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}: threat.mnist.alpha = -0.01 is out of range: expected in (0, 1]"]


def test_classifier_kwargs_must_be_integers():
    raw = raw_params()
    assert parse_params(raw).section("models", "mnist") == {}
    raw["models"]["mnist"] = {"dnn": {"width": "wide"}}
    with pytest.raises(ParamsError, match=r"models.mnist.dnn.width must be an integer"):
        parse_params(raw)


def test_a_scale_changes_the_reported_step_counts_but_never_eps_or_step():
    raw = raw_params()
    raw["scale"] = "smoke"
    smoke, cpu = parse_params(raw).attack("mnist"), parse_params(raw_params()).attack("mnist")
    assert smoke.eval_steps == raw["scales"]["smoke"]["threat"]["mnist"]["eval_steps"] != cpu.eval_steps
    assert (smoke.eps, smoke.alpha) == (cpu.eps, cpu.alpha)
    raw["scales"]["cpu"]["threat"]["mnist"]["eps"] = 0.1
    with pytest.raises(ParamsError, match=r"scales.cpu.threat.mnist.eps: a scale may change only eval_steps"):
        parse_params(raw)


def test_a_params_changed_to_another_scale_reads_that_scales_data_section():
    raw = raw_params()
    raw["scale"] = "cpu"
    cpu = parse_params(raw)
    raw["scale"] = "smoke"
    assert dataclasses.replace(cpu, scale="smoke").data == parse_params(raw).data != cpu.data


def test_a_scale_may_keep_fewer_images_and_every_subset_is_bounded_by_them():
    raw = raw_params()
    raw["scale"] = "smoke"
    smoke, cpu = parse_params(raw).data, parse_params(raw_params()).data
    assert (cpu.train_images, cpu.test_images) == (0, 0) and cpu.sizes(60000, 10000) == (60000, 10000)
    assert smoke.sizes(60000, 10000) == (raw["scales"]["smoke"]["data"]["train_images"],
                                         raw["scales"]["smoke"]["data"]["test_images"])
    # a planted fault: the smoke scale's evaluated subset larger than the test images it keeps
    raw["scales"]["smoke"]["data"]["test_images"] = 10
    with pytest.raises(ParamsError, match=r"evaluate.mnist.subset = \d+ is out of range \(scale smoke\): expected at "
                                          r"most 10"):
        parse_params(raw)
    raw = raw_params()
    raw["scales"]["smoke"]["data"]["train_imgs"] = 10
    with pytest.raises(ParamsError, match=r"unknown key\(s\) scales.smoke.data.train_imgs"):
        parse_params(raw)
