"""The committed dvc.lock files describe the committed code: every stage of every pipeline is up to date
except for outputs that are simply absent (a clone has no DVC cache, so models and datasets are missing
until `dvc repro` rebuilds them).

This is the project's rule "committed metrics, reports and dvc.lock come from a clean run of the committed
code" as a test: a change to a module, a params value or a stage command that was not followed by a re-run
(or a metrics file edited by hand) fails here, naming the stages and what changed.
"""
import os
import shutil
import subprocess
from contextlib import chdir
from pathlib import Path

import pytest
import yaml
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
MISSING = ("deleted", "not in cache")   # an output absent from the workspace or the cache: rebuilt by repro


def _rel(path: str | Path, root: Path) -> str:
    return os.path.relpath(os.path.normpath(path), root)


def _lock_entries(stages) -> dict[Path, dict]:
    """Each pipeline's folder -> the entries of its dvc.lock ({} where it has none yet)."""
    locks = {}
    for folder in {Path(stage.path).parent for stage in stages}:
        lock = folder / "dvc.lock"
        locks[folder] = yaml.safe_load(lock.read_text())["stages"] if lock.exists() else {}
    return locks


def _only_gitignores(path: Path) -> bool:
    """A folder of cached outputs in a clone: DVC's .gitignore files (in git) and nothing else, so a folder
    dependency on it (models/<ds>) reads "modified" where its files are simply absent."""
    return path.is_dir() and all(p.name == ".gitignore" for p in path.rglob("*") if p.is_file())


def stale_stages(repo: Path) -> dict[str, list[str]]:
    """Stage -> what makes it disagree with its dvc.lock entry, beyond cached outputs that are absent:
    what `dvc status` reports over every pipeline (a changed module, params value or command, an edited or
    missing committed output); what it does not (a dependency, params key or output added to or removed
    from dvc.yaml, no lock entry at all); and a dependency recorded with another hash than the lock entry
    of the stage that produces it (one stage re-run, its consumer not)."""
    repo = repo.resolve()
    with chdir(repo), Repo(".") as dvc_repo:   # stage names relative to the repository
        stages = list(dvc_repo.index.stages)
        names = {id(stage): stage.addressing for stage in stages}
        status = dvc_repo.status()
    cached = {_rel(out.fs_path, repo) for stage in stages for out in stage.outs if out.use_cache}
    cached |= {str(parent) for out in list(cached) for parent in Path(out).parents if str(parent) != "."}
    stale: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):             # "changed command", "always changed", ...
                stale.setdefault(stage, []).append(entry)
                continue
            for kind, changes in entry.items():
                for path, state in changes.items():
                    if isinstance(state, dict):     # a params file: {key: "modified" | "new" | "deleted"}
                        stale.setdefault(stage, []).extend(f"{kind}: {path}:{k} {how}" for k, how in state.items())
                    elif not (state in MISSING or _only_gitignores(Path(repo, path))) \
                            or _rel(Path(repo, path), repo) not in cached:
                        stale.setdefault(stage, []).append(f"{kind}: {path} {state}")
    locks = _lock_entries(stages)
    produced: dict[str, str] = {}   # output (repository path) -> md5 its producer's lock entry records
    for stage in stages:
        entry = locks[Path(stage.path).parent].get(stage.name)
        for out in (entry or {}).get("outs", []):
            produced[_rel(Path(stage.wdir, out["path"]), repo)] = out.get("md5")
    for stage in stages:
        name = names[id(stage)]
        entry = locks[Path(stage.path).parent].get(stage.name)
        if entry is None:
            stale.setdefault(name, []).append("no dvc.lock entry (never run)")
            continue
        defined = {"deps": {d.def_path for d in stage.deps if not hasattr(d, "params")},
                   "outs": {o.def_path for o in stage.outs},
                   "params": {(d.def_path, key) for d in stage.deps if hasattr(d, "params") for key in d.params}}
        locked = {"deps": {d["path"] for d in entry.get("deps", [])},
                  "outs": {o["path"] for o in entry.get("outs", [])},
                  "params": {(f, key) for f, keys in entry.get("params", {}).items() for key in keys}}
        for part in ("deps", "outs", "params"):
            for item in sorted(defined[part] - locked[part], key=str):
                stale.setdefault(name, []).append(f"{part}: {item} in dvc.yaml, not in dvc.lock")
            for item in sorted(locked[part] - defined[part], key=str):
                stale.setdefault(name, []).append(f"{part}: {item} in dvc.lock, no longer in dvc.yaml")
        for dep in entry.get("deps", []):
            path = _rel(Path(stage.wdir, dep["path"]), repo)
            if path in produced and produced[path] != dep.get("md5"):
                stale.setdefault(name, []).append(f"deps: {dep['path']} recorded with another hash than its "
                                                  "producer's lock entry")
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
        stages = list(dvc_repo.index.stages)
    orphans = {}
    for folder, entries in sorted(_lock_entries(stages).items()):
        extra = set(entries) - {stage.name for stage in stages if Path(stage.path).parent == folder}
        if extra:
            orphans[str((folder / "dvc.lock").relative_to(repo.resolve()))] = sorted(extra)
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


def _lock_edit(mutate):
    """An edit of a dvc.lock's text: ``mutate`` changes its parsed stage entries in place."""
    def edit(text: str) -> str:
        entries = yaml.safe_load(text)
        mutate(entries["stages"])
        return yaml.safe_dump(entries, sort_keys=False)
    return edit


def _zero_dnn_hash_in_knn(stages: dict) -> None:
    next(d for d in stages["knn_eval@mnist"]["deps"] if d["path"] == "models/mnist/dnn.pt")["md5"] = "0" * 32


# planted faults, each without a re-run: the edits (file -> edit of its text, None: delete it), applied
# together (a status run costs 5-10 s), and per fault a stage that must be reported with a reason naming it.
# The missing lock entry goes alone (a stage without an entry has nothing else to compare).
EDITS = {
    "aaa_core/training/losses.py": lambda t: t + "\n# edited\n",
    "params.yaml": lambda t: t.replace("k: 10, bpda_tolerance: 0.04", "k: 5, bpda_tolerance: 0.04", 1),
    "metrics/mnist/evaluate/dnn.json": lambda t: t.replace('"natural_accuracy"', '"natural_accuracy" ', 1),
    # a command changed, and a dependency removed from dvc.yaml
    "blackbox/dvc.yaml": lambda t: t.replace("--metrics-dir metrics/blackbox/${item}\n",
                                             "--metrics-dir metrics/blackbox/${item}/\n", 1)
                                    .replace("aaa_core/reporting/verdicts.py, aaa_core/stats.py, stages/_cli.py,",
                                             "aaa_core/reporting/verdicts.py, stages/_cli.py,", 1),
    "reports/blackbox_mnist.md": None,
    "dvc.lock": _lock_edit(_zero_dnn_hash_in_knn),
}
FAULTS = {
    "a module edited": {"train_ae@mnist": "aaa_core/training/losses.py modified",
                        "blackbox/dvc.yaml:train_ae_blackbox@mnist-scores": "aaa_core/training/losses.py modified"},
    "a params value changed": {"knn_eval@mnist": "params.yaml:knn.mnist modified"},
    # its stage, and one that reads MNIST's metrics folder
    "a metrics file edited": {"evaluate@mnist": "metrics/mnist/evaluate modified",
                              "report@mnist": "metrics/mnist modified"},
    "a command changed": {"blackbox/dvc.yaml:render_blackbox@mnist": "changed command"},
    "a dependency removed from dvc.yaml": {"blackbox/dvc.yaml:render_blackbox@mnist":
                                           "aaa_core/stats.py in dvc.lock, no longer in dvc.yaml"},
    "a committed output deleted": {"blackbox/dvc.yaml:render_blackbox@mnist": "reports/blackbox_mnist.md deleted"},
    "a dependency's hash not its producer's": {"knn_eval@mnist": "models/mnist/dnn.pt recorded with another hash"},
}


def _planted(copy: Path, edits: dict):
    """Apply {file: edit or None (delete)}; return a function that restores every file."""
    originals = {name: (copy / name).read_text() for name in edits}
    for name, edit in edits.items():
        if edit is None:
            (copy / name).unlink()
        else:
            (copy / name).write_text(edit(originals[name]))
            assert (copy / name).read_text() != originals[name], name
    return lambda: [(copy / name).write_text(text) for name, text in originals.items()]


def test_the_check_passes_on_a_copy_and_fails_on_planted_faults(copy):
    # the copy is a fresh clone: every cached output absent, nothing else
    assert stale_stages(copy) == {} and orphan_lock_entries(copy) == {}
    # a planted orphan: the entry of a stage that no longer exists
    def orphan(stages: dict) -> None:
        stages["train_ae_blackbox@mnist-removed"] = stages["train_ae_blackbox@mnist-scores"]
    restore = _planted(copy, {"blackbox/dvc.lock": _lock_edit(orphan)})
    try:
        assert orphan_lock_entries(copy) == {"blackbox/dvc.lock": ["train_ae_blackbox@mnist-removed"]}
    finally:
        restore()
    restore = _planted(copy, EDITS)
    try:
        stale = stale_stages(copy)
    finally:
        restore()
    for fault, expected in FAULTS.items():
        for stage, reason in expected.items():
            assert any(reason in r for r in stale.get(stage, [])), f"{fault}: {stage} not reported ({stale.get(stage)})"
    assert "prepare_data@mnist" not in stale
    restore = _planted(copy, {"blackbox/dvc.lock": _lock_edit(lambda stages: stages.pop("render_blackbox@mnist"))})
    try:
        stale = stale_stages(copy)
    finally:
        restore()
    assert set(stale) == {"blackbox/dvc.yaml:render_blackbox@mnist"}   # dvc status lists it too, every dep "modified"
    assert "no dvc.lock entry (never run)" in stale["blackbox/dvc.yaml:render_blackbox@mnist"]
    assert stale_stages(copy) == {}
