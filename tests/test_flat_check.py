"""The evaluate stage's check for pipelines whose PGD accuracy is flat over steps (stages/evaluate.py:flat_check):
a masked cross-entropy gradient is attacked with the margin loss and Square, so masking is told from robustness."""
from types import SimpleNamespace

import pytest
from torch import nn

from aaa_core.config import load_params
from aaa_core.evaluation.protocols import evaluate_pipeline
from stages.evaluate import flat_check, plan_dataset


class Saturated(nn.Module):
    """A classifier whose logits are scaled so far that softmax saturates: the cross-entropy gradient is zero in
    float32 on every confidently classified image (PGD stays flat over steps), while the margin is not."""

    def __init__(self, base: nn.Module, scale: float = 1e4) -> None:
        super().__init__()
        self.base, self.scale = base, scale

    def forward(self, x):
        return self.base(x) * self.scale


def budget(**over):
    return SimpleNamespace(flat_min_acc=0.05, flat_square_queries=50, **over)


def report_for(model, x, y, steps=(5, 10)):
    return evaluate_pipeline(model, x, y, subset=len(x), eps=0.3, alpha=0.05, steps=list(steps), restarts=1,
                             sanity_eps=1.0, sanity_alpha=0.1, sanity_steps=5, sanity_subset=8, sanity_max_acc=1.0,
                             seed=0, transfer_source=None, transfer_tolerance=1.0, source_name="test")


@pytest.fixture(scope="module")
def params(tmp_path_factory):
    return load_params("params.yaml")


def test_a_masked_gradient_is_flat_and_the_margin_loss_finds_what_pgd_missed(trained_fc, mnist, params):
    model = Saturated(trained_fc).eval()
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    report = report_for(model, x, y)
    flat = flat_check(model, x, y, report, budget(), params, "mnist")
    assert flat["flat"] and flat["triggered"]
    pgd = report.robust[max(report.robust)].float().mean().item()
    assert flat["worst_case_accuracy"] < pgd - 0.2, (flat["worst_case_accuracy"], pgd)   # masking exposed
    assert {a["name"] for a in flat["attacks"]} == {f"pgd{params.section('suite', 'mnist').pgd_steps}-margin-x1",
                                                     "square"}
    assert len({a["settings"]["seed"] for a in flat["attacks"]}) == 2   # each attack its own seed


def test_an_honest_gradient_is_not_flat_and_costs_nothing(trained_fc, mnist, params):
    model = trained_fc.eval()
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    report = report_for(model, x, y, steps=(1, 10))
    flat = flat_check(model, x, y, report, budget(), params, "mnist")
    assert flat == {"flat": False, "triggered": False}


def test_one_step_count_cannot_be_flat(trained_fc, mnist, params):
    x, y = mnist["x_test"][:10], mnist["y_test"][:10]
    flat = flat_check(trained_fc.eval(), x, y, report_for(trained_fc.eval(), x, y, steps=(5,)), budget(), params,
                      "mnist")
    assert flat["flat"] is None and not flat["triggered"]


def test_planning_a_dataset_names_a_missing_model(tmp_path):
    (tmp_path / "dnn.pt").write_text("x")
    with pytest.raises(Exception, match="ae_ce_mse.pt"):
        plan_dataset(tmp_path, tmp_path / "m", None, ["dnn"], ["dnn"], ["ce_mse"], False, [])
    (tmp_path / "ae_ce_mse.pt").write_text("x")
    jobs = plan_dataset(tmp_path, tmp_path / "m", tmp_path / "ex", ["dnn"], ["dnn"], ["ce_mse"], False, [])
    assert [j.metrics.relative_to(tmp_path / "m").as_posix() for j in jobs] == ["evaluate/dnn.json",
                                                                              "evaluate/ae_ce_mse-dnn.json"]
