from pathlib import Path

import pytest
import yaml

from aaa_core.config import SCALES, ParamsError, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("scale", SCALES)
def test_repository_params_load_at_every_scale(scale):
    raw = raw_params()
    raw["scale"] = scale
    params = parse_params(raw)
    assert params.budget("mnist").batch_size > 0
    assert params.attack("mnist").eps == 0.3


def test_unknown_key_is_named():
    raw = raw_params()
    raw["scales"]["cpu"]["mnist"]["lr_patiance"] = 3
    with pytest.raises(ParamsError, match=r"unknown key\(s\) scales.cpu.mnist.lr_patiance"):
        parse_params(raw)


def test_missing_and_mistyped_keys_are_named():
    raw = raw_params()
    del raw["threat"]["mnist"]["alpha"]
    with pytest.raises(ParamsError, match=r"missing key\(s\) threat.mnist.alpha"):
        parse_params(raw)
    raw = raw_params()
    raw["scales"]["cpu"]["mnist"]["batch_size"] = "64"
    with pytest.raises(ParamsError, match=r"scales.cpu.mnist.batch_size must be an integer"):
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


def test_optional_classifier_kwargs_default_to_the_papers_sizes():
    raw = raw_params()
    params = parse_params(raw)
    assert params.budget("mnist").classifier_kwargs == {}
    raw["scales"]["cpu"]["mnist"]["classifier_kwargs"] = {"dnn": {"width": "wide"}}
    with pytest.raises(ParamsError, match=r"scales.cpu.mnist.classifier_kwargs.dnn.width must be an integer"):
        parse_params(raw)
