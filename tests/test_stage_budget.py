"""The time budget of the committed study (benchmarks/stage_times.py --budget).

The first test checks the repository as committed: the study (dvc.yaml) within STUDY_BUDGET_MIN minutes
of stage time and all pipelines within ALL_BUDGET_MIN, every stage with a recorded time. It is what keeps
the committed study inside one sitting, so it fails whenever the committed metrics describe a longer study.
The others plant faults in a copy of what the check reads (the dvc.yaml files, the files their `vars` name
and the metrics JSONs, rewritten to a small clean set) and check that each one fails the check, through the
function and through the command's exit status.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "stage_times.py"

_spec = importlib.util.spec_from_file_location("stage_times", SCRIPT)
stage_times = importlib.util.module_from_spec(_spec)
sys.modules["stage_times"] = stage_times
_spec.loader.exec_module(stage_times)

SMALL = 1.0   # seconds per metrics file in the clean set: far inside both budgets


def test_committed_study_fits_its_budget():
    problems = stage_times.budget_report(ROOT, stage_times.STUDY_BUDGET_MIN, stage_times.ALL_BUDGET_MIN)
    assert problems == [], "the committed stage times break the budget:\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def layout() -> dict:
    """The repository's pipelines, stages and metrics outputs, as the script derives them."""
    return stage_times.stage_times(ROOT)


@pytest.fixture
def tree(tmp_path, layout) -> Path:
    """A copy of what the check reads, every metrics file rewritten: SMALL seconds each (none for the
    render/summarize stages, which record none by design)."""
    for f in ROOT.glob("*.yaml"):   # dvc.yaml and the files the pipelines' `vars` read
        shutil.copy(f, tmp_path / f.name)
    for pipeline in layout:
        (tmp_path / pipeline).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / pipeline, tmp_path / pipeline)
    for stages in layout.values():
        for t in stages.values():
            for rel in t.metrics:
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_text(json.dumps({"headline": 0.5} if t.untimed else {"seconds": SMALL}))
    return tmp_path


def _timed(layout, pipeline_is_study: bool, declared: bool = False):
    """(pipeline, stage, its StageTime) of the timed stage with the most metrics outputs; ``declared``: among
    stages whose outputs are all declared files (a record deleted from a folder of records leaves no trace)."""
    candidates = [(p, n, t) for p, stages in layout.items() for n, t in stages.items()
                  if (p == stage_times.STUDY_PIPELINE) == pipeline_is_study and not t.untimed and t.metrics
                  and not (declared and t.folders)]
    assert candidates, "no timed stage with metrics outputs to plant a fault in"
    return max(candidates, key=lambda c: len(c[2].metrics))


def _set(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def test_the_clean_small_set_passes(tree):
    # the render/summarize stages' metrics record no seconds here, by design: not missing
    assert stage_times.budget_report(tree, stage_times.STUDY_BUDGET_MIN, stage_times.ALL_BUDGET_MIN) == []


def test_only_render_and_summarize_commands_record_no_time_by_design():
    assert stage_times._untimed("python -m stages.render_tables --dataset mnist")
    assert stage_times._untimed(["python -m stages.summarize --dataset mnist", "python -m stages.render_x"])
    assert not stage_times._untimed("python -m stages.train_ae --dataset mnist")
    assert not stage_times._untimed(["python -m stages.evaluate --dataset mnist", "python -m stages.render_tables"])
    assert not stage_times._untimed("python -m stages.with_seed --offset 1 stages.train_ae --dataset mnist")


def test_a_study_stage_over_the_budget_is_reported(tree, layout):
    pipeline, name, t = _timed(layout, pipeline_is_study=True)
    _set(tree / t.metrics[0], seconds=(stage_times.STUDY_BUDGET_MIN + 1) * 60)
    problems = stage_times.budget_report(tree, stage_times.STUDY_BUDGET_MIN, stage_times.ALL_BUDGET_MIN)
    assert len(problems) == 1, problems
    assert problems[0].startswith("over budget: the study (dvc.yaml)")
    assert f"budget of {stage_times.STUDY_BUDGET_MIN} minutes" in problems[0]
    # the same tree within a wider study budget
    assert stage_times.budget_report(tree, stage_times.STUDY_BUDGET_MIN + 10, stage_times.ALL_BUDGET_MIN) == []


def test_all_pipelines_over_the_budget_sum_a_stages_metrics_outputs(tree, layout):
    """A stage's time is the sum of its metrics outputs: spread over them, no one file breaks the budget."""
    pipeline, name, t = _timed(layout, pipeline_is_study=False)
    assert len(t.metrics) >= 2, f"{name}: expected a stage with several metrics outputs"
    each = (stage_times.ALL_BUDGET_MIN + 1) * 60 / len(t.metrics)
    assert each < stage_times.ALL_BUDGET_MIN * 60 - 60
    for rel in t.metrics:
        _set(tree / rel, seconds=each)
    times = stage_times.stage_times(tree)
    assert times[pipeline][name].seconds == pytest.approx(each * len(t.metrics))
    problems = stage_times.budget_report(tree, stage_times.STUDY_BUDGET_MIN, stage_times.ALL_BUDGET_MIN,
                                         times=times)
    assert len(problems) == 1, problems
    assert problems[0].startswith("over budget: all pipelines")
    assert f"budget of {stage_times.ALL_BUDGET_MIN} minutes" in problems[0]


@pytest.mark.parametrize("fault", ["deleted", "no seconds", "seconds null"])
def test_a_stage_without_a_recorded_time_is_missing_not_zero(tree, layout, fault):
    pipeline, name, t = _timed(layout, pipeline_is_study=False, declared=True)
    broken = tree / t.metrics[-1]   # one of several outputs: the others still record their seconds
    if fault == "deleted":
        broken.unlink()
    elif fault == "no seconds":
        broken.write_text(json.dumps({"accuracy": 0.9}))
    else:
        _set(broken, seconds=None)
    problems = stage_times.budget_report(tree, stage_times.STUDY_BUDGET_MIN, stage_times.ALL_BUDGET_MIN)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"missing time: {stage_times.label(pipeline, name)} ")
    assert t.metrics[-1] in problems[0]


def _cli(tree: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--budget", "--root", str(tree), *args],
                          capture_output=True, text=True, timeout=120)


def test_the_command_exits_1_on_a_violation_and_0_within(tree, layout):
    within = _cli(tree)
    assert within.returncode == 0, within.stderr
    assert f"of {stage_times.STUDY_BUDGET_MIN} minutes" in within.stdout
    assert f"of {stage_times.ALL_BUDGET_MIN} minutes" in within.stdout

    _, _, t = _timed(layout, pipeline_is_study=True)
    _set(tree / t.metrics[0], seconds=(stage_times.STUDY_BUDGET_MIN + 1) * 60)
    over = _cli(tree)
    assert over.returncode == 1, over.stdout + over.stderr
    assert over.stderr.strip().splitlines() == [line for line in over.stderr.strip().splitlines()
                                                if line.startswith("over budget: the study")] != []

    # the budgets are options: within a wider study budget, until a stage's time goes missing
    wider = ("--study-minutes", str(stage_times.STUDY_BUDGET_MIN + 10))
    assert _cli(tree, *wider).returncode == 0
    pipeline, name, t = _timed(layout, pipeline_is_study=False, declared=True)
    (tree / t.metrics[0]).unlink()
    missing = _cli(tree, *wider, "--all-minutes", "1000")
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        line for line in missing.stderr.strip().splitlines()
        if line.startswith(f"missing time: {stage_times.label(pipeline, name)} ")] != []
