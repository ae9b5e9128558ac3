"""The seeds-and-AutoAttack comparison (comparison/dvc.yaml): its params file, AutoAttack's cascade, the
seed verdict, the seed wrapper and the report, each on planted cases where the right answer is known."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from aaa_core import config as comparison_config
from aaa_core.evaluation import autoattack
from aaa_core.reporting import seeds
from aaa_core.reporting.seeds import Measurement, Side, seed_measurements, seed_verdict, summary
from aaa_core.evaluation.autoattack import autoattack_standard
from aaa_core.config import load_comparison
from aaa_core.config import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, raw) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# ---- comparison.yaml ----

def test_the_committed_comparison_file_loads_at_every_scale():
    for scale in ("cpu", "paper", "smoke"):
        cfg = load_comparison(ROOT / "comparison.yaml", "mnist", scale)
        assert cfg.seed_offsets and all(o >= 1 for o in cfg.seed_offsets)
    assert load_comparison(ROOT / "comparison.yaml", "mnist", "paper").autoattack_subset == 0


def test_the_scale_overlay_replaces_only_its_keys(tmp_path):
    path = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1, 2], "autoattack_subset": 100},
                                       "scales": {"smoke": {"mnist": {"autoattack_subset": 8}}}})
    assert load_comparison(path, "mnist", "smoke") == comparison_config.ComparisonConfig([1, 2], 8)
    assert load_comparison(path, "mnist", "cpu") == comparison_config.ComparisonConfig([1, 2], 100)


@pytest.mark.parametrize("section, named", [
    ({"seed_offsets": [1], "autoattack_subset": 100, "subsetz": 1}, "subsetz"),
    ({"seed_offsets": [1], "autoattack_subset": -1}, "autoattack_subset"),
    ({"seed_offsets": [0, 1], "autoattack_subset": 100}, "seed_offsets"),
    ({"seed_offsets": [1, 1], "autoattack_subset": 100}, "seed_offsets"),
    ({"autoattack_subset": 100}, "seed_offsets"),
])
def test_a_bad_comparison_file_names_file_and_key(tmp_path, section, named):
    path = write(tmp_path / "c.yaml", {"mnist": section})
    with pytest.raises(ParamsError) as err:
        load_comparison(path, "mnist", "cpu")
    assert str(path) in str(err.value) and named in str(err.value)


# ---- AutoAttack ----

@pytest.fixture(scope="module")
def linear():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(16, 1, 28, 28)
    return model, x, model(x).argmax(1)


def test_autoattack_breaks_an_undefended_linear_model_at_a_large_eps(linear):
    model, x, y = linear
    report = autoattack_standard(model, x, y, 0.3, steps=10, square_queries=50, log=lambda _: None)
    assert report.natural.all() and report.accuracy == 0.0
    assert report.as_dict()["autoattack_accuracy"] == 0.0


def test_the_cascade_only_removes_examples_and_runs_each_attack_on_what_is_left(linear):
    model, x, y = linear
    lines = []
    report = autoattack_standard(model, x, y, 0.003, steps=10, square_queries=50, log=lines.append)
    flags = [report.natural] + list(report.after.values())
    assert [name for name in report.after] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    for before, after in zip(flags, flags[1:]):
        assert not (after & ~before).any()          # nothing robust again once fooled
    assert 0.0 < report.accuracy < 1.0               # a small eps leaves some, takes some
    for line, before in zip(lines, flags):
        assert f"{int(before.sum())} examples attacked" in line


def test_the_published_settings_are_the_ones_built():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    built = {name: (attack, settings) for name, attack, settings in autoattack.standard_attacks(model, 0.3)}
    assert built["apgd-ce"][0].steps == built["apgd-t"][0].steps == built["fab-t"][0].steps == 100
    assert built["apgd-t"][0].n_target_classes == built["fab-t"][0].n_target_classes == 9
    assert built["fab-t"][0].multi_targeted and built["apgd-ce"][0].loss == "ce"
    square = built["square"][0]
    assert square.n_queries == 5000 and square.p_init == 0.8 and square.rescale_schedule is False
    assert square.loss == "margin" and all(a.n_restarts == 1 for a, _ in built.values())
    assert all(a.eps == 0.3 and a.norm == "Linf" for a, _ in built.values())


def test_an_attack_that_leaves_the_eps_ball_stops_the_evaluation(linear, monkeypatch):
    """Planted fault: an "attack" that returns points outside the threat model must not be scored."""
    model, x, y = linear

    class Cheat:
        def __call__(self, xb, yb):
            return (xb + 0.5).clamp(0, 1)

    monkeypatch.setattr(autoattack, "standard_attacks", lambda *a, **k: [("cheat", Cheat(), {})])
    with pytest.raises(ValueError, match="outside the L-inf ball"):
        autoattack_standard(model, x, y, 0.1, log=lambda _: None)


# ---- the verdict across seeds ----

def ms(*accs, n=500):
    return [Measurement(a, n) for a in accs]


def test_a_side_wins_only_when_every_seed_interval_is_above_every_other():
    assert seed_verdict(ms(0.70, 0.72, 0.71), ms(0.90, 0.89, 0.91)).startswith("Madry wins")
    assert seed_verdict(ms(0.90, 0.89, 0.91), ms(0.70, 0.72, 0.71)).startswith("AAA wins")


def test_overlapping_seeds_or_small_samples_are_a_tie():
    # one AAA seed reaches Madry's range: a tie, whatever the means say
    assert seed_verdict(ms(0.70, 0.72, 0.88), ms(0.90, 0.89, 0.91)).startswith("inconclusive")
    # the same means on 20 examples: the intervals overlap
    assert seed_verdict(ms(0.70, 0.72, n=20), ms(0.90, 0.89, n=20)).startswith("inconclusive")
    assert seed_verdict([], ms(0.9)) == "not measured"


def test_the_interval_is_wilsons_on_known_cases():
    lo, hi = Measurement(0.5, 100).interval
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3
    assert Measurement(1.0, 100).interval[1] == 1.0 and Measurement(0.0, 100).interval[0] == 0.0


# ---- the seed wrapper ----

def test_with_seed_runs_the_stage_on_a_copy_with_the_seed_moved(tmp_path, monkeypatch):
    from stages import with_seed

    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    seen = {}

    def fake_call(cmd):
        path = Path(cmd[cmd.index("--params") + 1])
        seen.update(cmd=cmd, raw=yaml.safe_load(path.read_text()), path=path)
        return 3

    monkeypatch.setattr(subprocess, "call", fake_call)
    result = CliRunner().invoke(with_seed.main, ["--offset", "2", "--params", str(params), "stages.train_ae",
                                                 "--dataset", "mnist"])
    assert result.exit_code == 3                                  # the stage's status is passed on
    original = yaml.safe_load(params.read_text())
    assert seen["raw"]["seed"] == original["seed"] + 2
    assert {k: v for k, v in seen["raw"].items() if k != "seed"} == {k: v for k, v in original.items() if k != "seed"}
    assert seen["cmd"][1:5] == ["-m", "stages.train_ae", "--dataset", "mnist"]
    assert not seen["path"].exists()                              # the copy is removed


@pytest.mark.parametrize("args", [["--offset", "0", "stages.train_ae"], ["--offset", "1", "os.system"],
                                  ["--offset", "1", "stages.train_ae", "--params", "x.yaml"],
                                  ["--offset", "1", "stages.train_ae", "--params=x.yaml"]])
def test_with_seed_refuses_what_it_cannot_do(args, monkeypatch):
    from stages import with_seed

    monkeypatch.setattr(subprocess, "call", lambda cmd: pytest.fail("the stage must not run"))
    result = CliRunner().invoke(with_seed.main, ["--params", str(ROOT / "params.yaml"), *args])
    assert result.exit_code == 2


# ---- the report ----

def evaluate_metrics(natural, pgd, n=500):
    return {"attack": {"examples": n, "steps": 200}, "natural_accuracy": natural,
            "robust_accuracy": {"pgd40": pgd + 0.01, "pgd200": pgd}}


def autoattack_metrics(accuracy, natural, steps=autoattack.STANDARD_STEPS,
                       queries=autoattack.STANDARD_SQUARE_QUERIES):
    """An AutoAttack metrics record as stages/autoattack.py writes it (its version decided the stage's way), each
    attack of the cascade leaving ``accuracy``."""
    version = "standard" if (steps, queries) == (autoattack.STANDARD_STEPS, autoattack.STANDARD_SQUARE_QUERIES) \
        else "reduced"
    settings = {"apgd-ce": {"steps": steps, "restarts": 1, "loss": "ce"},
                "apgd-t": {"steps": steps, "restarts": 1, "loss": "dlr-targeted", "targets": 9},
                "fab-t": {"steps": steps, "restarts": 1, "targets": 9},
                "square": {"queries": queries, "restarts": 1, "p_init": 0.8, "loss": "margin",
                           "rescale_schedule": False}}
    return {"attack": {"name": "AutoAttack", "version": version, "norm": "linf", "eps": 0.3},
            "autoattack_accuracy": accuracy, "examples": 100, "natural_accuracy": natural,
            "cascade": [{"name": name, "settings": {**kw, "eps": 0.3, "norm": "linf", "seed": 0},
                         "accuracy_after": accuracy, "seconds": 1.0} for name, kw in settings.items()]}


def fill(study: Path, comp: Path, offsets, aaa=(0.97, 0.75, 0.70, 0.50), madry=(0.97, 0.88, 0.85, 0.84)):
    for seed in (0, *offsets):
        for name, (nat, pgd, worst, aa) in (("ae_ce_mse-dnn", aaa), ("dnn_adv", madry)):
            folder = comp / f"s{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            ev, rb = evaluate_metrics(nat, pgd), {"worst_case_accuracy": worst, "examples": 100}
            if seed == 0:
                for sub, obj in (("evaluate", ev), ("robustness", rb)):
                    (study / sub).mkdir(parents=True, exist_ok=True)
                    (study / sub / f"{name}.json").write_text(json.dumps(obj))
            else:
                (folder / f"evaluate_{name}.json").write_text(json.dumps(ev))
                (folder / f"robustness_{name}.json").write_text(json.dumps(rb))
            (folder / f"autoattack_{name}.json").write_text(json.dumps(autoattack_metrics(aa, nat)))


def render(tmp_path, comp_file):
    from stages import render_comparison

    return CliRunner().invoke(render_comparison.main, [
        "--dataset", "mnist", "--loss", "ce_mse", "--source", "dnn", "--study-dir", str(tmp_path / "study"),
        "--dir", str(tmp_path / "comp"), "--out", str(tmp_path / "report.md"), "--summary",
        str(tmp_path / "summary.json"), "--params", str(ROOT / "params.yaml"), "--comparison", str(comp_file)])


def test_the_report_gives_every_seed_mean_sd_and_the_verdict(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1, 2], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1, 2])
    result = render(tmp_path, comp_file)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    table, cascade = text.split("AutoAttack's cascade")
    assert table.count("| ae_ce_mse-dnn |") == 4 and table.count("| dnn_adv |") == 4   # 3 seeds + mean
    assert cascade.count("| ae_ce_mse-dnn |") == 3 and "apgd-ce 50.0" in cascade
    assert ("AutoAttack (standard version: APGD-CE, APGD-T and FAB-T on 9 target classes at 100 iterations, "
            "Square with 5,000 queries;") in table
    assert "75.0 [71.0, 78.6]" in text                                                # PGD with its interval
    # these metrics keep no per-example flags: no verdict is invented (the paired verdicts: tests/test_verdicts.py)
    assert "- PGD: no per-example flags: not compared" in text
    assert "- AutoAttack: no per-example flags: not compared" in text and "tie" not in text
    assert summ_verdict(tmp_path, "pgd") == "no per-example flags: not compared (seed 0, seed 1, seed 2)"
    summ = json.loads((tmp_path / "summary.json").read_text())["mnist"]
    assert summ["seeds"] == 3 and summ["pgd"]["dnn_adv"]["sd"] == 0.0
    assert summ["autoattack"]["ae_ce_mse-dnn"]["mean"] == pytest.approx(0.50)


def summ_verdict(tmp_path, measure):
    return json.loads((tmp_path / "summary.json").read_text())["mnist"][measure]["verdict"]


def test_a_missing_seed_stops_the_report_naming_it(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1, 2, 3], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1, 2])
    result = render(tmp_path, comp_file)
    assert result.exit_code == 1 and not (tmp_path / "report.md").exists()
    assert "seed offset(s) [3]" in str(result.exception)


def test_a_seed_missing_one_measure_stops_the_report_naming_it(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1, 2], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1, 2])
    (tmp_path / "comp/s2/robustness_dnn_adv.json").unlink()
    result = render(tmp_path, comp_file)
    assert result.exit_code == 1 and "dnn_adv lacks metrics at seed offset(s) [2] (2: worst)" in str(
        result.exception)


def test_autoattack_is_needed_at_the_studys_seed_only(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1, 2], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1, 2])
    (tmp_path / "comp/s2/autoattack_dnn_adv.json").unlink()
    assert render(tmp_path, comp_file).exit_code == 0
    (tmp_path / "comp/s0/autoattack_dnn_adv.json").unlink()
    result = render(tmp_path, comp_file)
    assert result.exit_code == 1 and "(0: autoattack)" in str(result.exception)


def test_the_autoattack_version_is_the_records_not_the_params_files(tmp_path):
    """comparison.yaml asks for the standard version, the records ran a reduced one: the report says what ran."""
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1])
    for path in (tmp_path / "comp").glob("s*/autoattack_*.json"):
        path.write_text(json.dumps(autoattack_metrics(0.5, 0.97, steps=5, queries=50)))
    result = render(tmp_path, comp_file)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert ("AutoAttack (REDUCED, not the standard version's 100 iterations and 5,000 queries: APGD-CE, APGD-T "
            "and FAB-T on 9 target classes at 5 iterations, Square with 50 queries;") in text
    assert "standard version:" not in text


def test_autoattack_records_of_different_settings_stop_the_report_naming_them(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1])
    (tmp_path / "comp/s0/autoattack_dnn_adv.json").write_text(
        json.dumps(autoattack_metrics(0.84, 0.97, steps=5, queries=50)))
    result = render(tmp_path, comp_file)
    assert result.exit_code == 1 and not (tmp_path / "report.md").exists()
    message = str(result.exception)
    assert "differ in version or settings" in message and "dnn_adv at seed offset 0: reduced, 5 iterations" in message


def test_autoattack_records_without_their_settings_leave_them_unsaid(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1])
    for path in (tmp_path / "comp").glob("s*/autoattack_*.json"):
        record = json.loads(path.read_text())
        del record["attack"]
        path.write_text(json.dumps(record))
    result = render(tmp_path, comp_file)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert "the adaptive suite's worst case (`suite`) and AutoAttack.\n" in text and "100 iterations" not in text


def test_seed_measurements_reads_the_largest_step_count():
    got = seed_measurements(evaluate_metrics(0.97, 0.75), None, None)
    assert got["pgd"] == Measurement(0.75, 500) and got["natural"] == Measurement(0.97, 500)
    assert set(summary(Side("a", {0: got}), Side("m", {0: got}))) == set(seeds.MEASURES)


def test_the_finetuned_madry_is_set_beside_aaa_and_says_when_it_has_not_run(tmp_path):
    comp_file = write(tmp_path / "c.yaml", {"mnist": {"seed_offsets": [1], "autoattack_subset": 100}})
    fill(tmp_path / "study", tmp_path / "comp", [1])
    assert render(tmp_path, comp_file).exit_code == 0
    assert "Not run: `dvc repro comparison/dvc.yaml:finetune_madry`" in (tmp_path / "report.md").read_text()
    folder = tmp_path / "comp" / "finetuned"
    folder.mkdir()
    (folder / "evaluate_dnn_adv_ft.json").write_text(json.dumps(evaluate_metrics(0.98, 0.90)))
    (folder / "robustness_dnn_adv_ft.json").write_text(json.dumps({"worst_case_accuracy": 0.86, "examples": 100}))
    (folder / "train_dnn_adv_ft.json").write_text(json.dumps({"train": {"epochs": 3, "epoch_images": 6000},
                                                              "attack": {"steps": 3, "eps": 0.3}}))
    result = render(tmp_path, comp_file)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    assert "## Madry fine-tuned from the natural `dnn`" in text and "3 epochs of 6000 images, PGD-3" in text
    assert "| PGD (n=500) | 75.0 [71.0, 78.6] | 90.0 [87.1, 92.3] | no per-example flags: not compared |" in text
    summ = json.loads((tmp_path / "summary.json").read_text())["mnist"]["finetuned_madry"]
    assert summ["worst"]["finetuned_madry"] == pytest.approx(0.86) and summ["pgd"]["aaa"] == pytest.approx(0.75)
