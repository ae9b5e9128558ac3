"""The committed dvc.lock files describe the committed code: every stage of every pipeline is up to date
except for outputs that are simply absent (a clone has no DVC cache, so models and datasets are missing
until `dvc repro` rebuilds them).

This is the project's rule "committed metrics, reports and dvc.lock come from a clean run of the committed
code" as a test: a change to a module, a params value or a stage command that was not followed by a re-run
(or a metrics file edited by hand) fails here, naming the stages and what changed.
"""
import shutil
import subprocess
from contextlib import chdir
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
MISSING = ("deleted", "not in cache")   # an output absent from the workspace or the cache: rebuilt by repro


def stale_stages(repo: Path) -> dict[str, list[str]]:
    """Stage -> what makes it stale beyond absent outputs, from `dvc status` over every pipeline."""
    with chdir(repo), Repo(".") as dvc_repo:   # stage names relative to the repository
        outs = [Path(out.fs_path).relative_to(Path.cwd()) for stage in dvc_repo.index.stages for out in stage.outs]
        produced = {str(p) for out in outs for p in (out, *out.parents)}   # outputs and folders of outputs
        status = dvc_repo.status()
    stale = {}
    for stage, entries in status.items():
        reasons = []
        for entry in entries:
            if isinstance(entry, str):             # "changed command", "always changed", ...
                reasons.append(entry)
                continue
            for kind, changes in entry.items():
                for path, state in changes.items():
                    if isinstance(state, dict):     # a params file: {key: "modified" | "new" | "deleted"}
                        reasons += [f"{kind}: {path}:{key} {how}" for key, how in state.items()]
                    elif state not in MISSING or (kind == "changed deps" and path not in produced):
                        reasons.append(f"{kind}: {path} {state}")
        if reasons:
            stale[stage] = reasons
    return stale


def describe(stale: dict[str, list[str]]) -> str:
    lines = [f"{stage}: {'; '.join(reasons[:3])}" + (" ..." if len(reasons) > 3 else "")
             for stage, reasons in sorted(stale.items())]
    return (f"{len(stale)} stage(s) out of date with the committed code (re-run them, `dvc repro -P`, before "
            "committing):\n" + "\n".join(lines[:20]))


def test_every_committed_stage_is_up_to_date_with_the_code():
    stale = stale_stages(ROOT)
    assert not stale, describe(stale)


def orphan_lock_entries(repo: Path) -> dict[str, list[str]]:
    """Per dvc.lock, its entries that name no stage of its pipeline: DVC keeps the entry of a stage that was
    renamed or removed, and nothing reads it again."""
    with chdir(repo), Repo(".") as dvc_repo:
        stages = [(Path(stage.path).parent, stage.addressing.rsplit(":", 1)[-1]) for stage in dvc_repo.index.stages]
    orphans = {}
    for folder in sorted({folder for folder, _ in stages}):
        defined = {name for f, name in stages if f == folder}
        lock = folder / "dvc.lock"
        entries = set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()
        if entries - defined:
            orphans[str(lock.relative_to(repo))] = sorted(entries - defined)
    return orphans


def test_every_lock_entry_is_a_stage_of_its_pipeline():
    assert orphan_lock_entries(ROOT) == {}


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """The repository's tracked files (no data, no models: a fresh clone's state) in a git repository."""
    repo = tmp_path_factory.mktemp("lock")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in tracked:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    return repo


def test_the_check_passes_on_a_copy_and_fails_on_planted_faults(copy):
    # the copy is a fresh clone: every output absent, nothing else
    assert stale_stages(copy) == {} and orphan_lock_entries(copy) == {}
    # a planted orphan: the entry of a stage that no longer exists
    lock = copy / "blackbox" / "dvc.lock"
    original = lock.read_text()
    entries = yaml.safe_load(original)
    entries["stages"]["train_ae_blackbox@mnist-removed"] = entries["stages"]["train_ae_blackbox@mnist-query"]
    lock.write_text(yaml.safe_dump(entries))
    try:
        assert orphan_lock_entries(copy) == {"blackbox/dvc.lock": ["train_ae_blackbox@mnist-removed"]}
    finally:
        lock.write_text(original)
    # planted faults: a module edited, a params value changed, a metrics file edited, each without a re-run
    faults = {"aaa_core/losses.py": lambda t: t + "\n# edited\n",
              "params.yaml": lambda t: t.replace("knn:", "knn:", 1).replace("k: 10, bpda_tolerance: 0.025",
                                                                           "k: 5, bpda_tolerance: 0.025", 1),
              "metrics/mnist/evaluate/dnn.json": lambda t: t.replace('"natural_accuracy"', '"natural_accuracy" ', 1)}
    for name, edit in faults.items():
        original = (copy / name).read_text()
        (copy / name).write_text(edit(original))
        assert (copy / name).read_text() != original, name
        try:
            stale = stale_stages(copy)
        finally:
            (copy / name).write_text(original)
        assert stale, f"editing {name} went unnoticed"
        if name == "aaa_core/losses.py":
            assert "train_ae@mnist-ce" in stale and "prepare_data@mnist" not in stale
            assert "blackbox/dvc.yaml:train_ae_blackbox@mnist-query" in stale
        if name == "params.yaml":
            assert set(stale) == {f"knn_eval@mnist-{ae}-{c}" for ae in ("ae_ce", "ae_mse", "ae_ce_mse")
                                  for c in ("dnn", "fc")}
        if name.startswith("metrics/"):   # its stage, and the two that read MNIST's metrics folder
            assert set(stale) == {"evaluate@mnist-dnn", "summarize@mnist", "render_tables@mnist"}
