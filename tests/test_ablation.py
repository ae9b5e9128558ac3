"""The AE training knobs (params ae.<dataset>.warm_epochs, mse_weight) and their ablation variants
(ablations/dvc.yaml): the weighted loss, the variants file, the report."""
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from aaa_core.config import VariantConfig, load_variants
from aaa_core.config import ParamsError, load_params
from aaa_core.training.losses import ce_mse, get_loss, mse, weighted_ce_mse

ROOT = Path(__file__).resolve().parents[1]


def test_weight_one_is_the_studys_loss_and_the_weight_scales_only_the_mse_term():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.randint(10, (8,))
    recon, x = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    assert torch.equal(weighted_ce_mse(1.0)(logits, y, recon, x), ce_mse(logits, y, recon, x))
    gap = weighted_ce_mse(10.0)(logits, y, recon, x) - weighted_ce_mse(1.0)(logits, y, recon, x)
    assert torch.allclose(gap, 9 * mse(logits, y, recon, x))


def test_get_loss_weighs_only_ce_mse():
    torch.manual_seed(0)
    logits, y = torch.randn(8, 10), torch.randint(10, (8,))
    recon, x = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28)
    assert torch.allclose(get_loss("ce_mse", 10.0)(logits, y, recon, x), weighted_ce_mse(10.0)(logits, y, recon, x))
    assert torch.equal(get_loss("mse", 10.0)(logits, y, recon, x), mse(logits, y, recon, x))


def test_the_committed_variants_load_and_none_is_the_study_itself():
    variants = load_variants(ROOT / "ablations.yaml", "mnist")
    ae = load_params(ROOT / "params.yaml").section("ae", "mnist")
    study = VariantConfig(ae.warm_epochs, ae.mse_weight)
    assert variants and all(v != study for v in variants.values())


@pytest.mark.parametrize("spec, named", [({"warm_epochs": -1, "mse_weight": 1.0}, "mnist.v.warm_epochs"),
                                         ({"warm_epochs": 0, "mse_weight": 0.0}, "mnist.v.mse_weight"),
                                         ({"warm_epochs": 0}, "mnist.v.mse_weight"),
                                         ({"warm_epochs": 0, "mse_weight": 1.0, "lr": 1}, "mnist.v.lr")])
def test_a_bad_variant_names_file_and_key(tmp_path, spec, named):
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({"mnist": {"v": spec}}))
    with pytest.raises(ParamsError) as err:
        load_variants(path, "mnist")
    assert str(path) in str(err.value) and named in str(err.value)


def evaluate_metrics(natural, pgd, n=500):
    return {"attack": {"examples": n, "steps": 200}, "natural_accuracy": natural,
            "robust_accuracy": {"pgd40": pgd, "pgd200": pgd}}


def test_the_report_sets_each_variant_beside_the_study_and_gives_no_verdict_without_flags(tmp_path):
    from stages import render_ablations

    study, var = tmp_path / "study", tmp_path / "var"
    for sub in ("train", "evaluate"):
        (study / sub).mkdir(parents=True)
    var.mkdir()
    history = [{"loss": 1.3}, {"loss": 0.64}]
    (study / "train/ae_ce_mse.json").write_text(json.dumps({"history": history}))
    (study / "evaluate/ae_ce_mse-dnn.json").write_text(json.dumps(evaluate_metrics(0.97, 0.77)))
    (study / "evaluate/ae_ce_mse-fc.json").write_text(json.dumps(evaluate_metrics(0.70, 0.40)))
    (var / "train_w10.json").write_text(json.dumps({"history": history}))
    (var / "evaluate_w10-dnn.json").write_text(json.dumps(evaluate_metrics(0.97, 0.78)))   # inside: a tie
    (var / "evaluate_w10-fc.json").write_text(json.dumps(evaluate_metrics(0.95, 0.80)))    # far above
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"mnist": {"w10": {"warm_epochs": 0, "mse_weight": 10.0}}}))
    result = CliRunner().invoke(render_ablations.main, [
        "--dataset", "mnist", "--study-dir", str(study), "--dir", str(var), "--out", str(tmp_path / "r.md"),
        "--summary", str(tmp_path / "s.json"), "--params", str(ROOT / "params.yaml"), "--ablations",
        str(tmp_path / "a.yaml"), "--paper", str(ROOT / "paper/reported_results.yaml")])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r.md").read_text()
    ae = load_params(ROOT / "params.yaml").section("ae", "mnist")
    assert f"| study | {ae.warm_epochs} | {ae.mse_weight:g} | 1.300 | 0.640 |" in text and "| w10 | 0 | 10 |" in text
    assert "- w10: no per-example flags: not compared" in text   # the paired verdicts: tests/test_verdicts.py
    assert "FC 98.12 natural, 89.97 PGD-200" in text                       # the paper's, read from its file
    assert json.loads((tmp_path / "s.json").read_text())["mnist"]["w10"]["fc_pgd"] == 0.80
    (var / "evaluate_w10-fc.json").unlink()
    result = CliRunner().invoke(render_ablations.main, [
        "--dataset", "mnist", "--study-dir", str(study), "--dir", str(var), "--out", str(tmp_path / "r2.md"),
        "--summary", str(tmp_path / "s2.json"), "--params", str(ROOT / "params.yaml"), "--ablations",
        str(tmp_path / "a.yaml"), "--paper", str(ROOT / "paper/reported_results.yaml")])
    assert result.exit_code == 1 and "evaluate_w10-fc.json: missing" in str(result.exception)
    assert not (tmp_path / "r2.md").exists()
