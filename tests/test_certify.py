"""Randomized smoothing (aaa_core.evaluation.certify, stage certify, `aaa certify`) against a classifier whose smoothed
prediction is known in closed form: a linear classifier on two classes."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
import yaml
from click.testing import CliRunner
from scipy.stats import beta, binom, norm
from torch import nn

from aaa_core.evaluation.certify import (ABSTAIN, TSV_HEADER, Record, certified_accuracy, certify, certify_dataset, example_generator, lower_confidence_bound, predict, write_tsv)
from aaa_core.io import certified_flags, read_certify_tsv
from aaa_core.models.checkpoints import save_model
from aaa_core.io import save_torch
from aaa_core.config import ParamsError, load_params
from aaa_core.models import build
from aaa_core.stats import wilson_interval
from stages._common import named_specs

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 5, 5)          # 25 values: not a multiple of the 16 torch's CPU normal sampler works in
SIGMA, ALPHA = 0.5, 0.001


class TwoClassLinear(nn.Module):
    """f(x) = argmax(w.x + b, -(w.x + b)): under N(0, sigma^2 I) noise, class 0 has probability
    Phi((w.x + b) / (sigma ||w||)), and the smoothed classifier's exact L2 radius is |w.x + b| / ||w||."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([s, -s], 1)


def weights() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def image() -> torch.Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(1))


def model_with_p0(p0: float) -> TwoClassLinear:
    """The linear classifier whose smoothed probability of class 0 at ``image()`` is ``p0`` (sigma = SIGMA)."""
    w, x = weights(), image()
    b = SIGMA * w.norm().item() * norm.ppf(p0) - (w * x).sum().item()
    return TwoClassLinear(w, b).eval()


def shifted(x: torch.Tensor, w: torch.Tensor, distance: float) -> torch.Tensor:
    """``x`` moved ``distance`` (L2) along ``w``."""
    return x + distance * w / w.norm()


@pytest.mark.parametrize("p0", [0.6, 0.75, 0.9, 0.97, 0.995, 0.2])
def test_the_certified_radius_matches_the_closed_form_within_the_clopper_pearson_slack(p0):
    n = 20_000
    p_top, top = (p0, 0) if p0 > 0.5 else (1 - p0, 1)
    exact = SIGMA * norm.ppf(p_top)                                 # = |w.x + b| / ||w||
    at_true_p = SIGMA * norm.ppf(lower_confidence_bound(round(p_top * n), n, ALPHA))
    # the count falls below its alpha-quantile with probability alpha: the bound's slack plus the count's
    unlucky = SIGMA * norm.ppf(lower_confidence_bound(binom.ppf(ALPHA, n, p_top), n, ALPHA))
    assert unlucky < at_true_p < exact
    cert = certify(model_with_p0(p0), image(), SIGMA, n0=100, n=n, alpha=ALPHA, batch_size=5000,
                   generator=example_generator(0, 0))
    assert cert.prediction == top
    assert unlucky <= cert.radius <= exact, (unlucky, cert.radius, exact)
    assert cert.radius == pytest.approx(SIGMA * norm.ppf(lower_confidence_bound(cert.count, n, ALPHA)))


def test_the_lower_bound_is_the_one_sided_clopper_pearson_bound():
    for k, n in [(0, 10), (7, 10), (10, 10), (9_500, 10_000)]:
        expected = beta.ppf(ALPHA, k, n - k + 1) if k else 0.0
        assert lower_confidence_bound(k, n, ALPHA) == pytest.approx(expected, abs=1e-9)


def test_predict_gives_the_smoothed_class_of_a_clear_input():
    model = model_with_p0(0.9)
    assert predict(model, image(), SIGMA, n=2000, alpha=ALPHA, batch_size=500, generator=example_generator(0, 0)) == 0
    model = model_with_p0(0.1)
    assert predict(model, image(), SIGMA, n=2000, alpha=ALPHA, batch_size=500, generator=example_generator(0, 0)) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_input_on_the_decision_boundary_abstains(seed):
    model = model_with_p0(0.5)          # w.x + b = 0: the two classes tie under noise
    cert = certify(model, image(), SIGMA, n0=100, n=10_000, alpha=ALPHA, batch_size=2500,
                   generator=example_generator(seed, 0))
    assert (cert.prediction, cert.radius) == (ABSTAIN, 0.0)
    assert cert.p_lower < 0.5
    assert predict(model, image(), SIGMA, n=10_000, alpha=ALPHA, batch_size=2500,
                   generator=example_generator(seed, 0)) == ABSTAIN


def test_certified_accuracy_counts_abstentions_and_small_radii_as_wrong():
    radii, correct, predictions = [0.0, 0.3, 0.8, 0.6, 0.0], [True, True, True, False, True], [1, 2, 3, 4, ABSTAIN]
    rows = certified_accuracy(radii, correct, predictions, [0.0, 0.25, 0.5, 1.0])
    assert [row["certified"] for row in rows] == [3, 2, 1, 0]
    assert [row["accuracy"] for row in rows] == [0.6, 0.4, 0.2, 0.0]
    assert rows[1]["wilson_95"] == list(wilson_interval(2, 5))


def three_examples():
    """Images whose smoothed top-class probabilities are about 0.7, 0.8 and 0.9: the counts vary with the noise."""
    w, x = weights(), image()
    model = TwoClassLinear(w, -(w * x).sum().item()).eval()     # the boundary passes through image()
    xs = torch.stack([shifted(x, w, SIGMA * norm.ppf(p)) for p in (0.7, 0.8, 0.1)])
    return model, xs, torch.tensor([0, 0, 1])


def bounds(records: list[Record]) -> list[float]:
    return [r.p_lower for r in records]


def test_the_same_seed_gives_the_same_certificates_whatever_the_batch_size_and_company():
    model, xs, ys = three_examples()
    run = lambda seed, batch_size, **kw: certify_dataset(model, xs, ys, SIGMA, n0=50, n=3000, alpha=ALPHA,  # noqa: E731
                                                         batch_size=batch_size, seed=seed, **kw)
    first = run(7, 1000)
    assert [r.predict for r in first] == [0, 0, 1]
    for again in (run(7, 1000), run(7, 64), run(7, 7), run(7, 5000)):
        assert bounds(again) == bounds(first) and [r.radius for r in again] == [r.radius for r in first]
    alone = certify_dataset(model, xs[2:], ys[2:], SIGMA, n0=50, n=3000, alpha=ALPHA, batch_size=300, seed=7,
                            indices=[2])
    assert bounds(alone) == bounds(first)[2:]
    assert bounds(run(8, 1000)) != bounds(first)
    twice = certify_dataset(model, xs[[0, 0]], ys[[0, 0]], SIGMA, n0=50, n=3000, alpha=ALPHA, batch_size=1000,
                            seed=7, indices=[0, 1])
    assert bounds(twice)[0] == bounds(first)[0] != bounds(twice)[1]    # each index has noise of its own


def test_the_tsv_is_cohens_format(tmp_path):
    records = [Record(12, 3, 3, 0.7071, True, 1.5, 0.9), Record(40, 1, ABSTAIN, 0.0, False, 0.25, 0.3),
               Record(7, 0, 2, 0.123456, False, 3725.0, 0.6)]
    path = tmp_path / "out" / "c.tsv"
    write_tsv(records, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tradius\tcorrect\ttime" == "\t".join(TSV_HEADER)
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    assert len(rows) == 3 and all(len(line.split("\t")) == 6 for line in lines)
    assert [(int(r["idx"]), int(r["label"]), int(r["predict"]), int(r["correct"])) for r in rows] == \
        [(12, 3, 3, 1), (40, 1, -1, 0), (7, 0, 2, 0)]
    assert [float(r["radius"]) for r in rows] == [0.7071, 0.0, 0.1235]
    assert [r["time"] for r in rows] == ["0:00:01.500000", "0:00:00.250000", "1:02:05"]
    assert all(re.fullmatch(r"\d+:\d\d:\d\d(\.\d{6})?", r["time"]) for r in rows)
    assert not list(path.parent.glob(".*"))       # written through a temporary file, which is gone


def test_the_tsv_reads_back_without_torch_and_flags_what_is_certified(tmp_path):
    records = [Record(12, 3, 3, 0.7071, True, 1.5, 0.9), Record(40, 1, ABSTAIN, 0.0, False, 0.25, 0.3),
               Record(7, 0, 2, 0.123456, False, 3725.0, 0.6), Record(9, 5, 5, 0.25, True, 1.0, 0.7)]
    write_tsv(records, tmp_path / "c.tsv")
    rows = read_certify_tsv(tmp_path / "c.tsv")
    assert rows == [{"idx": 12, "label": 3, "predict": 3, "radius": 0.7071, "correct": True},
                    {"idx": 40, "label": 1, "predict": ABSTAIN, "radius": 0.0, "correct": False},
                    {"idx": 7, "label": 0, "predict": 2, "radius": 0.1235, "correct": False},
                    {"idx": 9, "label": 5, "predict": 5, "radius": 0.25, "correct": True}]
    assert certified_flags(rows, 0.0) == [1, 0, 0, 1] and certified_flags(rows, 0.25) == [1, 0, 0, 1]
    assert certified_flags(rows, 0.5) == [1, 0, 0, 0]
    (tmp_path / "bad.tsv").write_text("idx\tlabel\n1\t2\n")
    with pytest.raises(ValueError, match="bad.tsv: expected the header idx label predict radius correct time"):
        read_certify_tsv(tmp_path / "bad.tsv")


def test_the_certify_renderer_loads_neither_torch_nor_scipy_nor_matplotlib():
    code = ("import sys, stages.render_certify; "
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the stage and the command, on stand-ins: random MNIST-shaped images, untrained models ---

CERTIFY = {"subset": 4, "n0": 16, "n": 64, "alpha": 0.001, "batch_size": 32, "sigmas": [0.25, 0.5]}


def params_file(path: Path, certify_section: dict | None = CERTIFY) -> Path:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["device"] = "cpu"
    if certify_section is not None:
        raw["certify"]["mnist"] = certify_section
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture()
def stand_ins(tmp_path):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    save_torch({"x_train": torch.randint(0, 256, (8, 1, 28, 28), generator=gen, dtype=torch.uint8),
                "y_train": torch.arange(8) % 10,
                "x_test": torch.randint(0, 256, (10, 1, 28, 28), generator=gen, dtype=torch.uint8),
                "y_test": torch.arange(10) % 10, "dataset": "mnist", "label": "MNIST (test stand-in)",
                "source": "test"}, tmp_path / "mnist.pt")
    save_model(build("mnist", "fc"), tmp_path / "fc.pt", kind="classifier", dataset="mnist", arch="fc", mode="natural")
    save_model(build("mnist", "ae", latent_dim=8), tmp_path / "ae.pt", kind="ae", dataset="mnist", arch="ae",
               arch_kwargs={"latent_dim": 8}, loss="ce_mse")
    return tmp_path


def run_stage(tmp: Path, out: str = "out", metrics: str = "certify.json"):
    from stages.certify import main

    args = ["--dataset", "mnist", "--data", tmp / "mnist.pt", "--params", params_file(tmp / "params.yaml"),
            "--pipeline", f"fc={tmp / 'fc.pt'}", "--pipeline", f"ae_fc={tmp / 'ae.pt'}+{tmp / 'fc.pt'}",
            "--out-dir", tmp / out, "--metrics", tmp / metrics]
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_stage_certifies_every_pipeline_at_every_sigma(stand_ins):
    result = run_stage(stand_ins)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (stand_ins / "out").iterdir()) == \
        ["ae_fc-sigma0.25.tsv", "ae_fc-sigma0.5.tsv", "fc-sigma0.25.tsv", "fc-sigma0.5.tsv"]
    metrics = json.loads((stand_ins / "certify.json").read_text())
    assert metrics["settings"] == {"n0": 16, "n": 64, "alpha": 0.001, "batch_size": 32, "sigmas": [0.25, 0.5],
                                   "radii": [0.0, 0.25, 0.5, 0.75, 1.0]}
    assert metrics["subset"]["n"] == metrics["examples"] == 4
    one = metrics["pipelines"]["ae_fc"]["sigmas"]["0.5"]
    assert [row["radius"] for row in one["certified_accuracy"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(len(row["wilson_95"]) == 2 for row in one["certified_accuracy"]) and 0 <= one["abstention_rate"] <= 1
    assert metrics["pipelines"]["ae_fc"]["ae_loss"] == "ce_mse" and metrics["seconds"] is not None
    tsv = list(csv.DictReader((stand_ins / "out" / "fc-sigma0.25.tsv").open(), delimiter="\t"))
    assert len(tsv) == 4 and {int(r["idx"]) for r in tsv} <= set(range(10))


@pytest.mark.parametrize("item", ["fc", "=fc.pt", "fc=", "f c=fc.pt", "-fc=fc.pt", "fc/x=fc.pt"])
def test_a_malformed_pipeline_option_is_refused_naming_it(item):
    with pytest.raises(click.BadParameter, match="expected NAME=CLASSIFIER.pt or NAME=AE.pt") as err:
        named_specs(("ok=a.pt+b.pt", item), "--pipeline")
    assert err.value.param_hint == "--pipeline" and "\n" not in err.value.format_message()


def test_pipeline_options_keep_their_order_and_refuse_a_name_given_twice():
    assert named_specs(("b=x.pt", "a.1=ae.pt+x.pt"), "--run") == {"b": "x.pt", "a.1": "ae.pt+x.pt"}
    with pytest.raises(click.BadParameter, match="'b' is given twice"):
        named_specs(("b=x.pt", "b=y.pt"), "--run")


def test_the_stage_refuses_a_malformed_pipeline_option_before_loading_anything(stand_ins):
    args = ["--dataset", "mnist", "--data", stand_ins / "mnist.pt", "--params", params_file(stand_ins / "params.yaml"),
            "--pipeline", "fc", "--out-dir", stand_ins / "out", "--metrics", stand_ins / "certify.json"]
    from stages.certify import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 2 and "Invalid value for --pipeline: 'fc': expected NAME=CLASSIFIER.pt" in result.output


def test_a_stage_failing_midway_writes_nothing(stand_ins, monkeypatch):
    import stages.certify

    real = stages.certify.certify_dataset

    def fails_on_the_second_pipeline(*args, desc, **kwargs):
        if desc.startswith("ae_fc"):
            raise RuntimeError("planted failure")
        return real(*args, desc=desc, **kwargs)

    monkeypatch.setattr(stages.certify, "certify_dataset", fails_on_the_second_pipeline)
    result = run_stage(stand_ins)
    assert isinstance(result.exception, RuntimeError), result.output
    assert "fc sigma 0.5" in result.output          # the first pipeline was done
    assert sorted(p.name for p in stand_ins.iterdir()) == ["ae.pt", "fc.pt", "mnist.pt", "params.yaml"]


def test_the_certify_params_are_checked(tmp_path):
    path = params_file(tmp_path / "params.yaml", {**CERTIFY, "alpha": 0.7})
    with pytest.raises(ParamsError, match="certify.mnist.alpha"):
        load_params(path)


def test_aaa_certify_on_a_classifier_of_ones_own(stand_ins, monkeypatch):
    from aaa_core.cli import main

    (stand_ins / "tiny.py").write_text("import torch\n\ndef linear():\n"
                                       "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))\n")
    monkeypatch.chdir(stand_ins)
    monkeypatch.syspath_prepend(str(stand_ins))
    result = CliRunner().invoke(main, ["certify", "--classifier", "tiny:linear", "--dataset", "mnist", "--data",
                                       "mnist.pt", "--params", str(params_file(stand_ins / "params.yaml")),
                                       "--device", "cpu", "--sigma", "0.25", "--n", "40", "--subset", "3",
                                       "--out-dir", "tsv", "--metrics", "m.json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((stand_ins / "m.json").read_text())
    assert metrics["settings"]["n"] == 40 and metrics["settings"]["n0"] == 16 and metrics["examples"] == 3
    assert list(metrics["sigmas"]) == ["0.25"] and (stand_ins / "tsv" / "sigma0.25.tsv").is_file()
