"""The DVC layer: complete code dependencies, and each params knob invalidating exactly its readers.

Neither test trains anything: the first reads dvc.yaml and the stages' imports; the second commits
placeholder outputs in a temporary repository, changes one knob at a time and asks `dvc status`.
"""
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import set_key
from dvc.repo import Repo

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


def module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_project_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in ("aaa_core", "stages")}


def import_closure(module: str) -> set[str]:
    """Files of every project module ``module`` imports, transitively (parent packages included)."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(imported_project_modules(path))
    return {str(p.relative_to(ROOT)) for p in seen} - {"stages/__init__.py"}


def stage_definitions() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("family", sorted(stage_definitions()))
def test_every_stage_depends_on_every_project_module_its_command_imports(family):
    spec = stage_definitions()[family]
    module = re.search(r"python -m (stages\.\w+)", spec["cmd"]).group(1)
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]]
    missing = sorted(p for p in import_closure(module) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {family} ({module}) lacks dependencies {missing}"


def test_the_import_closure_sees_transitive_imports():
    # evaluate imports aaa_core.runtime, which imports aaa_core.data: the test must see data.py
    assert "aaa_core/data.py" in import_closure("stages.evaluate")
    assert "aaa_core/losses.py" in import_closure("stages.train_ae")


def run(cmd, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def committed_repo(tmp_path_factory):
    """A repository whose every stage is up to date with placeholder outputs (nothing trained)."""
    repo = tmp_path_factory.mktemp("dvcparams")
    for name in ("aaa_core", "stages", "paper"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", "blackbox.yaml"):
        shutil.copy(ROOT / name, repo / name)
    run(["git", "init", "-q"], repo)
    run([DVC, "init", "-q"], repo)
    with Repo(str(repo)) as dvc_repo:
        for stage in dvc_repo.index.stages:
            for out in stage.outs:
                path = Path(out.fs_path)
                if fnmatch.fnmatch(path.name, "*.*"):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
                else:
                    path.mkdir(parents=True, exist_ok=True)
                    (path / "placeholder").write_text("placeholder\n")
    run([DVC, "commit", "-f"], repo)
    assert json.loads(run([DVC, "status", "--json"], repo) or "{}") == {}
    return repo


def stale_after(repo: Path, key: str, value) -> set[str]:
    path = repo / "params.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    set_key(raw, key, value)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    try:
        with Repo(str(repo)) as dvc_repo:   # in-process: a `dvc status` process per knob takes 15 s
            return {name.rsplit(":", 1)[-1] for name in dvc_repo.status()}
    finally:
        path.write_text(original)


def names(repo: Path, *patterns: str) -> set[str]:
    listed = run([DVC, "stage", "list", "--name-only"], repo).split()
    return {n for n in listed if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


MNIST_TRAINING = ("train_classifier@mnist-*", "train_madry@mnist-*", "train_ae@mnist-*", "train_ae_ensemble@mnist",
                  "train_ae_blackbox@mnist-*")


KNOBS = [
    ("evaluate.mnist.subset", 100, ("evaluate@mnist-*", "evaluate_aaa@mnist-*")),
    ("sweep.mnist.steps", 10, ("sweep_eps@mnist",)),
    ("suite.mnist.subset", 50, ("robustness@mnist-*", "robustness_blackbox@mnist-*")),
    ("knn.mnist.k", 5, ("knn_eval@mnist-*",)),
    ("classifier.mnist.epochs", 3, ("train_classifier@mnist-*", "train_ae_blackbox@mnist-*")),   # the surrogates
    ("ae.mnist.latent_dim", 64, ("train_ae@mnist-*", "train_ae_ensemble@mnist", "train_ae_blackbox@mnist-*")),
    ("models.cifar10.vgg19.width_divisor", 4, ("train_classifier@cifar10-*", "train_madry@cifar10-*")),
    ("adversarial.mnist.steps", 3, ("train_madry@mnist-*", "train_ae@mnist-*", "train_ae_ensemble@mnist",
                                   "train_ae_blackbox@mnist-*")),
    ("adversarial.mnist.epochs", 3, ("train_madry@mnist-*", "train_ae@mnist-*", "train_ae_ensemble@mnist")),
    ("train.mnist.lr", 0.001, MNIST_TRAINING),
    ("split.mnist.val_size", 500, MNIST_TRAINING + ("knn_eval@mnist-*",)),
    ("models.cifar10.resnet.widen", 2, ("train_classifier@cifar10-*", "train_madry@cifar10-*")),
    ("threat.mnist.alpha", 0.02, ("evaluate@mnist-*", "evaluate_aaa@mnist-*", "knn_eval@mnist-*", "robustness@mnist-*",
                                 "robustness_blackbox@mnist-*")),
    ("data.download", False, ("prepare_data@*",)),
    ("devices", 2, ("train_classifier@*", "train_madry@*", "train_ae@*", "train_ae_ensemble@*")),
    ("device", "cpu", ("train_classifier@*", "train_madry@*", "train_ae@*", "train_ae_ensemble@*", "evaluate@*",
                       "evaluate_aaa@*", "knn_eval@*", "sweep_eps@*", "robustness@*", "train_ae_blackbox@*",
                       "robustness_blackbox@*")),
    ("scales.smoke.evaluate.mnist.subset", 10, ()),   # another scale's overlay: nothing at cpu
    ("scales.cpu.evaluate.mnist.subset", 100, ("evaluate@mnist-*", "evaluate_aaa@mnist-*")),
   ]


def tracked_keys() -> dict[str, list[str]]:
    """Every stage's tracked params keys, as DVC resolves dvc.yaml at the repository's params.yaml."""
    with Repo(str(ROOT)) as repo:
        return {stage.addressing.rsplit(":", 1)[-1]: [key for dep in stage.deps if hasattr(dep, "params")
                                                   for key in dep.params]
                for stage in repo.index.stages}


def reads(keys: list[str], knob: str) -> bool:
    return any(knob == k or knob.startswith(k + ".") or k.startswith(knob + ".") for k in keys)


@pytest.mark.parametrize("key, value, readers", KNOBS)
def test_each_knob_is_tracked_by_exactly_its_readers(key, value, readers):
    stages = tracked_keys()
    listed = list(stages)
    expected = {n for n in listed if any(fnmatch.fnmatchcase(n, p) for p in readers)}
    assert {name for name, keys in stages.items() if reads(keys, key)} == expected


DEFAULT_KNOBS = ("evaluate.mnist.subset", "scales.smoke.evaluate.mnist.subset")


@pytest.mark.parametrize("key, value, readers", [k if k[0] in DEFAULT_KNOBS else pytest.param(*k, marks=pytest.mark.slow)
                                                 for k in KNOBS])
def test_a_knob_makes_exactly_its_readers_stale(committed_repo, key, value, readers):
    """The same through `dvc status` on a repository whose stages are all up to date (15 s a knob:
    two in the default run, every knob with RUN_SLOW=1)."""
    expected = names(committed_repo, *readers) if readers else set()
    assert stale_after(committed_repo, key, value) == expected


def test_the_black_box_stages_track_their_own_params_file():
    """blackbox.yaml's section (and its scale overlay) is read by the black-box training stages and nothing else."""
    with Repo(str(ROOT)) as repo:
        readers = {stage.addressing.rsplit(":", 1)[-1]: sorted(key for dep in stage.deps if hasattr(dep, "params")
                                                               and dep.def_path.endswith("blackbox.yaml")
                                                               for key in dep.params)
                   for stage in repo.index.stages}
    assert {name: keys for name, keys in readers.items() if keys} == {
        f"train_ae_blackbox@mnist-{access}": ["mnist", "scales.cpu.mnist"]
        for access in ("gradient", "query", "transfer", "surrogate")}
