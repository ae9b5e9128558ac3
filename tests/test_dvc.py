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


# the study and every other pipeline: <name>/dvc.yaml (as `make <name>` finds them)
PIPELINES = ("dvc.yaml", *sorted(f"{p.parent.name}/dvc.yaml" for p in ROOT.glob("*/dvc.yaml")
                                 if not p.parent.name.startswith(".")))


def stage_definitions() -> dict[str, dict]:
    out = {}
    for pipeline in PIPELINES:
        stages = yaml.safe_load((ROOT / pipeline).read_text())["stages"]
        prefix = "" if pipeline == "dvc.yaml" else f"{pipeline}:"
        out.update({prefix + name: spec.get("do", spec) for name, spec in stages.items()})
    return out


def command_modules(cmd: str | list[str]) -> list[str]:
    """Every project module a stage's command runs: `python -m stages.x`, several commands, and the stage a
    wrapper runs (`python -m stages.with_seed --offset 1 stages.train_ae ...`)."""
    return sorted(set(re.findall(r"(?<![\w/.])(stages\.\w+)", " ".join([cmd] if isinstance(cmd, str) else cmd))))


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("family", sorted(stage_definitions()))
def test_every_stage_depends_on_every_project_module_its_command_imports(family):
    spec = stage_definitions()[family]
    modules = command_modules(spec["cmd"])
    assert modules, f"{family}: no stage module in its command"
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec["deps"]]
    for module in modules:
        missing = sorted(p for p in import_closure(module) if not covered(p, deps))
        assert not missing, f"stage {family} ({module}) lacks dependencies {missing}"


def test_command_modules_sees_wrapped_and_chained_stages():
    assert command_modules("python -m stages.with_seed --offset 1 stages.train_ae --out models/stages.pt") == [
        "stages.train_ae", "stages.with_seed"]
    assert command_modules(["python -m stages.evaluate --x 1", "python -m stages.robustness"]) == [
        "stages.evaluate", "stages.robustness"]


def test_the_import_closure_sees_transitive_imports():
    # evaluate imports aaa_core.evaluation.flags, which imports aaa_core.runtime, which imports aaa_core.io
    assert "aaa_core/io.py" in import_closure("stages.evaluate")
    assert "aaa_core/training/losses.py" in import_closure("stages.train_ae")


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
    for name in ("dvc.yaml", "params.yaml", "blackbox.yaml", "blackbox/dvc.yaml", "comparison.yaml", "comparison/dvc.yaml",
                 "ablations.yaml", "ablations/dvc.yaml", "certify/dvc.yaml"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
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
        for stage in dvc_repo.index.stages:   # deps inside another stage's output folder (metrics/<ds>/evaluate/x.json)
            for dep in stage.deps:
                path = Path(dep.fs_path)
                if not hasattr(dep, "params") and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("placeholder\n")
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
    """Stages of every pipeline of ``repo`` matching ``patterns`` (names without the pipeline's path)."""
    with Repo(str(repo)) as dvc_repo:
        listed = {stage.addressing.rsplit(":", 1)[-1] for stage in dvc_repo.index.stages}
    return {n for n in listed if any(fnmatch.fnmatchcase(n, p) for p in patterns)}


BLACKBOX_AE = ("train_ae_whitebox@mnist", "train_ae_blackbox@mnist-*")   # blackbox/dvc.yaml: one AE, three accesses
MNIST_TRAINING = ("train_classifier@mnist-*", "train_ae@mnist", "train_surrogate@mnist-*") + BLACKBOX_AE
# comparison/dvc.yaml: Madry and AAA at more seeds, and Madry fine-tuned from the natural dnn
REPLICATES = ("replicate_madry@*", "replicate_ae@*", "finetune_madry")
REPLICATE_EVAL = ("replicate_eval@*",)
VARIANTS = ("train_variant@*",)                         # ablations/dvc.yaml: AE training variants
VARIANT_EVAL = ("eval_variant@*",)
NOISE_AE = ("train_ae_noise@mnist",)   # certify/dvc.yaml: the Gaussian-noise AE, trained and scored like AAA
MNIST_EVAL = ("evaluate@mnist", "finetune_madry")    # every MNIST pipeline in one stage; the fine-tuned Madry
EVAL = ("evaluate@*", "finetune_madry")
# the suite, and the evaluate stages, which attack a pipeline flat over steps with the suite's margin PGD
SUITE = ("robustness@mnist", "robustness_blackbox@mnist", "finetune_madry", "evaluate@mnist")


KNOBS = [
    ("evaluate.mnist.subset", 100, MNIST_EVAL + REPLICATE_EVAL + VARIANT_EVAL + NOISE_AE),
    ("sweep.mnist.steps", 10, ("evaluate@mnist",)),
    ("suite.mnist.subset", 50, SUITE + REPLICATE_EVAL + VARIANT_EVAL + NOISE_AE),
    ("knn.mnist.k", 5, ("knn_eval@mnist",)),
    ("knn.mnist.square_queries", 50, ("knn_eval@mnist",)),   # kNN's Square has its own budget
    ("suite.mnist.square_queries", 500, SUITE + REPLICATE_EVAL + VARIANT_EVAL + NOISE_AE),
    ("certify.mnist.n", 1000, ("certify@mnist",)),
    ("certify.mnist.sigmas", [0.5], ("certify@mnist",) + NOISE_AE),   # the noise AE trains at the sigmas
    ("classifier.mnist.epochs", 3, ("train_classifier@mnist-*", "train_surrogate@mnist-*")),   # surrogates
    ("ae.mnist.latent_dim", 64, ("train_ae@mnist", "replicate_ae@*") + BLACKBOX_AE + VARIANTS + NOISE_AE),
    ("ae.mnist.mse_weight", 5.0, ("train_ae@mnist", "replicate_ae@*") + BLACKBOX_AE + VARIANTS + NOISE_AE),
    ("models.cifar10.vgg19.width_divisor", 4, ("train_classifier@cifar10-*",)),
    ("adversarial.mnist.steps", 3, ("train_classifier@mnist-*", "train_ae@mnist") + BLACKBOX_AE + REPLICATES
     + VARIANTS + NOISE_AE),
    ("adversarial.mnist.epochs", 3, ("train_classifier@mnist-*", "train_ae@mnist")
     + REPLICATES + VARIANTS + NOISE_AE),
    ("train.mnist.lr", 0.001, MNIST_TRAINING + REPLICATES + VARIANTS + NOISE_AE),
    ("split.mnist.val_size", 500, MNIST_TRAINING + ("knn_eval@mnist",) + REPLICATES + VARIANTS + NOISE_AE),
    ("models.cifar10.resnet.widen", 2, ("train_classifier@cifar10-*",)),
    ("threat.mnist.alpha", 0.02, MNIST_EVAL + ("knn_eval@mnist",) + SUITE + REPLICATE_EVAL + VARIANT_EVAL
     + NOISE_AE),
    # the step counts a scale may change: read where the whole threat model is
    ("scales.cpu.threat.mnist.eval_steps", [40], MNIST_EVAL + ("knn_eval@mnist",) + SUITE + REPLICATE_EVAL
     + VARIANT_EVAL + NOISE_AE),
    ("data.download", False, ("prepare_data@*",)),
    # training under DDP, and the evaluate protocol sharded over the processes
    ("devices", 2, ("train_classifier@*", "train_ae@*") + EVAL
     + REPLICATES + REPLICATE_EVAL + VARIANTS + VARIANT_EVAL + ("train_ae_noise@*",)),
    ("device", "cpu", ("train_classifier@*", "train_ae@*", "knn_eval@*",
                       "robustness@*", "train_ae_whitebox@*", "train_ae_blackbox@*", "train_surrogate@*",
                       "robustness_blackbox@*", "autoattack_study", "train_ae_noise@*", "certify@*")
     + EVAL + REPLICATES + REPLICATE_EVAL + VARIANTS + VARIANT_EVAL),
    ("scales.smoke.evaluate.mnist.subset", 10, ()),   # another scale's overlay: nothing at cpu
    ("scales.cpu.evaluate.mnist.subset", 100, MNIST_EVAL + REPLICATE_EVAL + VARIANT_EVAL + NOISE_AE),
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


def params_file_readers(name: str) -> dict[str, list[str]]:
    """Every stage (of all four pipelines) with the keys it tracks from the params file ``name``."""
    with Repo(str(ROOT)) as repo:
        return {stage.addressing.rsplit(":", 1)[-1]: sorted(key for dep in stage.deps if hasattr(dep, "params")
                                                            and dep.def_path.endswith(name) for key in dep.params)
                for stage in repo.index.stages}


def test_the_black_box_stages_track_their_own_params_file():
    """blackbox.yaml's section (and its scale overlay) is read by the black-box training stages and nothing else; the
    white-box reference reads only the training budget, the surrogates' stages only the surrogate's architecture and
    the black box's output."""
    readers = params_file_readers("blackbox.yaml")
    assert {name: keys for name, keys in readers.items() if keys} == {
        "train_ae_whitebox@mnist": ["mnist.epoch_images", "mnist.epochs", "mnist.eps_ramp", "mnist.warm_epochs",
                                    "scales.cpu.mnist"]} | {
        f"train_ae_blackbox@mnist-{access}": ["mnist", "scales.cpu.mnist"] for access in ("labels", "scores")} | {
        f"train_surrogate@mnist-{fit}": ["mnist.output", "mnist.surrogate", "scales.cpu.mnist"]
        for fit in ("labels", "scores")}


def test_the_comparison_stages_track_their_own_params_file():
    """comparison.yaml is read by the AutoAttack stage (on the study's own pair: its subset, budget and scale
    overlay only) and the comparison's report; its seed offsets name the replicate stages (one per offset)."""
    offsets = yaml.safe_load((ROOT / "comparison.yaml").read_text())["mnist"]["seed_offsets"]
    readers = params_file_readers("comparison.yaml")
    assert {name: sorted(keys) for name, keys in readers.items() if keys} == {
        "autoattack_study": ["mnist.autoattack_square_queries", "mnist.autoattack_steps", "mnist.autoattack_subset",
                             "scales.cpu.mnist"],
        "render_comparison": ["mnist", "scales.cpu.mnist"]}
    for family in ("replicate_madry", "replicate_ae", "replicate_eval"):
        assert {n for n in readers if n.startswith(family + "@")} == {f"{family}@{o}" for o in offsets}


def test_the_ablation_stages_track_their_own_variant():
    """Each variant's training stage reads its own entry of ablations.yaml (changing one variant re-trains
    that one only); the report reads them all."""
    variants = yaml.safe_load((ROOT / "ablations.yaml").read_text())["mnist"]
    readers = params_file_readers("ablations.yaml")
    assert {name: keys for name, keys in readers.items() if keys} == {
        **{f"train_variant@{v}": [f"mnist.{v}"] for v in variants}, "render_ablations": ["mnist"]}


def test_the_replicates_suite_uses_the_studys_transfer_sources():
    """replicate_eval scores each seed with the suite the study gives seed 0: the same transfer sources (the
    study's robustness@mnist shares dnn, fc and dnn_adv, leaving Madry's own model out of Madry's)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    study = stages["robustness"]["do"]["cmd"].replace("${key}", "mnist").replace("${item.src}", "dnn").replace(
        "${item.other}", "fc")
    sources = "--transfer dnn=models/mnist/dnn.pt --transfer fc=models/mnist/fc.pt --transfer dnn_adv=models/mnist/dnn_adv.pt"
    assert sources in study
    cmd = yaml.safe_load((ROOT / "comparison/dvc.yaml").read_text())["stages"]["replicate_eval"]["do"]["cmd"]
    assert "--transfer dnn=models/mnist/dnn.pt --transfer fc=models/mnist/fc.pt --data" in cmd   # Madry
    assert "--transfer dnn=models/mnist/dnn.pt --transfer fc=models/mnist/fc.pt --transfer dnn_adv=models/mnist/dnn_adv.pt" in cmd
