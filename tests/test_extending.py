"""Extending the project (the README's "Extending"): a dataset, an AE loss, a suite attack or a pipeline, each in at
most 4 files.

Each test copies the code and the pipelines' definitions (never data/, models/ or .venv) into a temporary folder,
adds a toy extension there, asserts how many files of the copy differ from the repository's, and proves in seconds
that the toy works: Python run with the copy as its working directory and PYTHONPATH (no training of real size, no
download, no `dvc repro` of a real stage). Each then leaves out one of the files it touched and shows that this
breaks it, so none of the files is listed for nothing.

"""
from __future__ import annotations

import copy as copying
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
# what a toy extension may need: the code, the study's and the other pipelines' definitions and knobs, the Makefile
COPY = ["aaa_core", "stages", "paper", "tests/conftest.py", "tests/test_dvc.py", "dvc.yaml", "params.yaml",
        "blackbox", "blackbox.yaml", "comparison", "comparison.yaml", "ablations", "ablations.yaml", "certify",
        "Makefile", "pyproject.toml", ".dvcignore", ".gitignore"]
IGNORED = shutil.ignore_patterns("__pycache__", "dvc.lock")
MAX_FILES = 4


# ---- the copy, its edits and what they touched ----

@pytest.fixture
def repo(tmp_path) -> Path:
    copy = tmp_path / "repo"
    for name in COPY:
        src, dst = ROOT / name, copy / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, dst)
    return copy


def touched(copy: Path) -> list[str]:
    """The files of the copy that are new or differ from the repository's."""
    out = []
    for path in sorted(copy.rglob("*")):
        rel = path.relative_to(copy)
        if path.is_file() and not {"__pycache__", ".git", ".dvc"} & set(rel.parts):
            original = ROOT / rel
            if not original.is_file() or original.read_bytes() != path.read_bytes():
                out.append(rel.as_posix())
    return out


def assert_at_most_four(copy: Path, expected: set[str]) -> None:
    files = touched(copy)
    assert set(files) == expected, files
    assert len(files) <= MAX_FILES, f"{len(files)} files for one extension: {files}"


def edit(copy: Path, rel: str, change) -> None:
    path = copy / rel
    path.write_text(change(path.read_text()))


def replace_once(old: str, new: str, why: str = ""):
    def change(text: str) -> str:
        assert text.count(old) == 1, f"expected one {old!r} in the file{': ' + why if why else ''}"
        return text.replace(old, new)
    return change


def sub_once(pattern: str, repl: str):
    """Replace the one match of the multi-line regex ``pattern``."""
    def change(text: str) -> str:
        new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
        assert n == 1, f"expected one match of {pattern!r}, found {n}"
        return new
    return change


def _insert(prefix: str, block: str, after: bool):
    """Insert ``block`` after (or before) the one line that starts with ``prefix``."""
    def change(text: str) -> str:
        lines = text.splitlines(keepends=True)
        hits = [i for i, line in enumerate(lines) if line.startswith(prefix)]
        assert len(hits) == 1, f"expected one line starting with {prefix!r}, found {len(hits)}"
        at = hits[0] + after
        return "".join(lines[:at]) + block + "".join(lines[at:])
    return change


def after_line(prefix: str, block: str):
    return _insert(prefix, block, after=True)


def before_line(prefix: str, block: str):
    return _insert(prefix, block, after=False)


def yaml_edit(change):
    def apply(text: str) -> str:
        raw = yaml.safe_load(text)
        change(raw)
        return yaml.safe_dump(raw, sort_keys=False, width=120)
    return apply


def restore(copy: Path, rel: str) -> None:
    """Leave out one file of the extension: the repository's version back (or none, for a new file)."""
    if (ROOT / rel).is_file():
        shutil.copy2(ROOT / rel, copy / rel)
    else:
        (copy / rel).unlink()


# ---- running things in the copy ----

def env(copy: Path, *extra: Path) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (copy, *extra)),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def run(cmd: list, copy: Path, *, ok: bool = True, extra_path: tuple[Path, ...] = ()) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=copy, env=env(copy, *extra_path), capture_output=True,
                          text=True, timeout=180, check=False)
    out = proc.stdout + proc.stderr
    what = " ".join(str(c) for c in cmd)[:100]
    expected = "0" if ok else "an error"
    assert (proc.returncode == 0) == ok, f"{what} exited {proc.returncode} (expected {expected}):\n{out[-3000:]}"
    return out


def python(copy: Path, script: str, **kwargs) -> str:
    return run([sys.executable, "-c", textwrap.dedent(script)], copy, **kwargs)


def init_dvc(copy: Path) -> None:
    run(["git", "init", "-q"], copy)
    run([DVC, "init", "-q"], copy)


# ---- an AE loss: its function, its name, and params.yaml choosing it ----

LOSS_FN = '''

def toy(logits: Tensor, y: Tensor, recon: Tensor, x_clean: Tensor) -> Tensor:
    """A toy objective: L_ce plus the mean absolute reconstruction error."""
    return ce(logits, y, recon, x_clean) + (recon - x_clean).abs().mean()
'''

LOSS_PROOF = """
import torch
from aaa_core.config import AE_LOSSES, load_params
assert load_params("params.yaml").loss == "toy"            # params.yaml's headline loss
from aaa_core.training.losses import get_loss
x = torch.rand(4, 1, 28, 28)
value = get_loss("toy")(torch.randn(4, 10), torch.arange(4), x.flip(0), x)
assert value.ndim == 0 and torch.isfinite(value), value
import aaa_core.cli, stages.train_ae
def choices(command):
    return next(p.type.choices for p in command.params if p.name == "loss")
assert "toy" in choices(stages.train_ae.main), "stages.train_ae --loss"
assert "toy" in choices(aaa_core.cli.fit), "aaa fit --loss"
from aaa_core.reporting.tables import PIPELINE_ORDER, ROW_LABELS, not_run_row
assert "aaa_toy" in PIPELINE_ORDER and "toy" in ROW_LABELS["aaa_toy"], "the tables' rows"
assert "toy" in not_run_row("toy", {}, [40])["Model"]
print("OK")
"""


def test_a_loss_takes_at_most_four_files(repo):
    edit(repo, "aaa_core/training/losses.py",
         before_line("AE_LOSSES: dict[str, AELoss] = {", LOSS_FN.lstrip("\n") + "\n\n"))
    edit(repo, "aaa_core/training/losses.py",
         sub_once(r"^(AE_LOSSES: dict\[str, AELoss\] = \{.*)\}$", r'\1, "toy": toy}'))
    edit(repo, "aaa_core/config.py", sub_once(r"^(AE_LOSSES = \(.*)\)$", r'\1, "toy")'))
    edit(repo, "params.yaml", sub_once(r"^loss: \w+", "loss: toy"))
    assert_at_most_four(repo, {"aaa_core/training/losses.py", "aaa_core/config.py", "params.yaml"})

    assert python(repo, LOSS_PROOF).strip().endswith("OK")

    # without its name in aaa_core/config.py, params.yaml may not choose it (and stages.train_ae refuses it); without
    # the function in losses.py get_loss("toy") fails; without params.yaml nothing trains it
    restore(repo, "aaa_core/config.py")
    out = python(repo, "from aaa_core.config import load_params; load_params('params.yaml')", ok=False)
    assert "loss must be one of" in out


# ---- a suite attack: the attack and its knob in suite.py, the knob in config.py and params.yaml ----

SUITE_ATTACK = '''    def toy_noise(seed: int) -> Tensor:
        """The toy: random corners of the eps ball, toy_samples per example (query-only: no gradient)."""
        generator = make_generator(seed, x.device)
        flags = torch.ones(len(x), dtype=torch.bool, device=x.device)
        for _ in range(cfg.toy_samples):
            sign = torch.randint(0, 2, x.shape, generator=generator, device=x.device).float() * 2 - 1
            x_adv = (x + cfg.eps * sign).clamp(0, 1)
            check_in_ball(x_adv, x, cfg.eps, "toy-noise")
            flags &= correct_flags(model, x_adv, y)
        return flags

    add("toy-noise", QUERY_ONLY, {"samples": cfg.toy_samples, "library": "aaa_core"}, toy_noise)
'''

SUITE_PROOF = """
from dataclasses import replace
import torch
from torch import nn
from aaa_core.config import load_params
from aaa_core.evaluation.suite import QUERY_ONLY, evaluate_suite, suite_config
cfg = suite_config(load_params("params.yaml"), "mnist")     # as the robustness stage builds it
assert cfg.toy_samples == 3, cfg
cfg = replace(cfg, paper_steps=[2, 3], pgd_steps=2, pgd_restarts=1, apgd_steps=2, apgdt_targets=3, square_queries=2,
              transfer_steps=2, curve_eps=[0.0, 1.0], curve_steps=2, masking_tolerance=1.0, max_acc_at_high_eps=1.0)
torch.manual_seed(0)
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
x = torch.rand(24, 1, 28, 28)
y = model(x).argmax(1)                                       # every example classified correctly before the attacks
report = evaluate_suite(model, x, y, cfg, transfer_sources={"itself": model}, log=lambda _: None)
toy = next(r for r in report.results if r.name == "toy-noise")
assert toy.kind == QUERY_ONLY and toy.settings["samples"] == 3 and len(toy.flags) == len(x)
assert report.worst <= toy.accuracy                          # in the per-example worst case
assert "no_masked_gradients:toy-noise" in {c.name for c in report.checks}   # and in the masking check
assert any(a["name"] == "toy-noise" for a in report.as_dict()["attacks"])   # and in the stage's metrics
print("OK", toy.accuracy, report.worst)
"""


def test_a_suite_attack_takes_at_most_four_files(repo):
    suite = "aaa_core/evaluation/suite.py"
    edit(repo, suite, after_line("    max_masking_gap: float = 1.0", "    toy_samples: int = 1  # the toy's draws\n"))
    edit(repo, suite, replace_once("seed=params.seed if seed is None else seed)",
                                   "seed=params.seed if seed is None else seed, toy_samples=budget.toy_samples)",
                                   "the end of suite_config"))
    edit(repo, suite, before_line("    source_cfg = PGDConfig(", SUITE_ATTACK))
    edit(repo, "aaa_core/config.py",
         after_line("    max_masking_gap: Fraction = 1.0", "    toy_samples: Count = 1  # the toy attack's draws\n"))

    def knob(raw):
        raw["suite"]["mnist"]["toy_samples"] = 3
    edit(repo, "params.yaml", yaml_edit(knob))
    assert_at_most_four(repo, {suite, "aaa_core/config.py", "params.yaml"})

    assert python(repo, SUITE_PROOF).startswith("OK")

    # without the knob in aaa_core/config.py's SuiteConfig, params.yaml's suite section is refused; without suite.py
    # there is no attack; without params.yaml the knob keeps its default (an attack without a knob is suite.py alone)
    restore(repo, "aaa_core/config.py")
    out = python(repo, "from aaa_core.config import load_params; load_params('params.yaml')", ok=False)
    assert "suite.mnist.toy_samples" in out


# ---- a dataset: its module (models and sources), its facts line, params.yaml and dvc.yaml ----

DATASET_MODULE = '''"""A toy dataset, random 3x8x8 images in 10 classes: its models and (DATA) its source."""
from __future__ import annotations

import torch
from torch import nn

from aaa_core.data import DatasetSpec
from aaa_core.models.compose import EncoderDecoder, Normalize

SHAPE, N_TRAIN, N_TEST = (3, 8, 8), 60000, 10000


class ToyAE(EncoderDecoder):
    def __init__(self, latent_dim: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(192, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, 192), nn.Sigmoid(), nn.Unflatten(1, SHAPE))


def dnn() -> nn.Module:
    return nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 10))


def fc() -> nn.Module:
    return nn.Sequential(Normalize(0.5, 0.25), nn.Flatten(), nn.Linear(192, 10))


def generate(_where=None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = lambda n: torch.randint(0, 256, (n, *SHAPE), generator=g, dtype=torch.uint8)  # noqa: E731
    labels = lambda n: torch.randint(0, 10, (n,), generator=g)  # noqa: E731
    return {"x_train": images(N_TRAIN), "y_train": labels(N_TRAIN),
            "x_test": images(N_TEST), "y_test": labels(N_TEST)}


CLASSIFIERS = {"dnn": dnn, "fc": fc}
AUTOENCODERS = {"ae": ToyAE}
AE_PARAMS = {"latent_dim": "latent_dim"}
DATA = DatasetSpec(name="toy", label="Toy", files={}, offline_source="generated in memory", read=generate,
                   offline=lambda offline_dir: (generate(), "offline: generated in memory", "Toy"))
'''

DATASET_PROOF = """
import aaa_core
from aaa_core.config import DATASET_SIZES, ParamsError, load_params, parse_params, read_params_file
assert aaa_core.INPUT_SHAPES.get("toy") == (3, 8, 8), "aaa_core.INPUT_SHAPES (load_defended, the aaa command)"
assert DATASET_SIZES.get("toy") == (60000, 10000, 10), "aaa_core.config.DATASET_SIZES"
params = load_params("params.yaml")
for section in ("split", "train", "classifier", "models", "adversarial", "ae", "evaluate", "sweep", "suite"):
    for scale in params.resolved:
        assert "toy" in params.resolved[scale][section], (scale, section)
raw = read_params_file("params.yaml")
raw["split"]["toy"]["train_subset"] = 60001                  # more than the toy's training images
try:
    parse_params(raw)
    raise AssertionError("split.toy.train_subset = 60001 passed: the toy's sizes are not checked")
except ParamsError as err:
    assert "split.toy.train_subset" in str(err), err

import torch
from aaa_core.data import load_prepared
from aaa_core.models import ae_kwargs, build, zoo_classifiers
x = torch.rand(2, *aaa_core.INPUT_SHAPES["toy"])
assert zoo_classifiers("toy") == ["dnn", "fc"]
for name in zoo_classifiers("toy"):
    assert build("toy", name)(x).shape == (2, aaa_core.NUM_CLASSES), name
ae = build("toy", "ae", **ae_kwargs("toy", params.section("ae", "toy")))
assert ae(x).shape == x.shape
from stages.prepare_data import main                          # the study's first stage (no download: generated)
main.main(["--dataset", "toy", "--out", "data/toy/toy.pt", "--metrics", "metrics/toy/prepare_data.json"],
          standalone_mode=False)
data = load_prepared("data/toy/toy.pt")
assert data["x_train"].shape == (60000, 3, 8, 8) and data["x_test"].shape == (10000, 3, 8, 8), data["x_train"].shape
print("OK")
"""


def add_toy_params(raw: dict) -> None:
    """params.yaml: the toy in every per-dataset section and in every scale's overlay, MNIST's values."""
    sections = [raw] + list(raw["scales"].values())
    for holder in sections:
        for section in holder.values():
            if isinstance(section, dict) and "mnist" in section:
                section["toy"] = copying.deepcopy(section["mnist"])


def add_toy_stages(raw: dict) -> None:
    """dvc.yaml: the toy beside MNIST in every foreach and matrix, but for the paper's tables (report)."""
    def swap(value):
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return "toy" if value == "mnist" else value

    for name, stage in raw["stages"].items():
        loop = stage.get("foreach")
        if name == "report":
            continue
        if isinstance(loop, list) and "mnist" in loop:
            loop.append("toy")
        elif isinstance(loop, dict):
            for key in [k for k in loop if k == "mnist" or k.startswith("mnist-")]:
                loop["toy" + key[len("mnist"):]] = swap(loop[key])
        elif "mnist" in (stage.get("matrix") or {}).get("dataset", []):
            stage["matrix"]["dataset"].append("toy")


def test_a_dataset_takes_at_most_four_files(repo):
    (repo / "aaa_core/models/toy.py").write_text(DATASET_MODULE)
    edit(repo, "aaa_core/__init__.py",
         replace_once("DATASET_FACTS = {", 'DATASET_FACTS = {"toy": ((3, 8, 8), 60000, 10000, 10), ',
                      "aaa_core.DATASET_FACTS, the one table of shapes and sizes (the proposed change)"))
    edit(repo, "params.yaml", yaml_edit(add_toy_params))
    edit(repo, "dvc.yaml", yaml_edit(add_toy_stages))
    assert_at_most_four(repo, {"aaa_core/models/toy.py", "aaa_core/__init__.py", "params.yaml", "dvc.yaml"})

    assert python(repo, DATASET_PROOF).strip().endswith("OK")
    init_dvc(repo)
    listed = run([DVC, "stage", "list", "--name-only"], repo).split()
    for stage in ("prepare_data@toy", "train_classifier@toy-dnn", "train_classifier@toy-fc", "train_ae@toy",
                  "evaluate@toy", "knn_eval@toy", "robustness@toy"):
        assert stage in listed, stage

    # without its line in aaa_core/__init__.py, the toy has no input shape and no size check; without its module no
    # model and no data; without params.yaml load_params has no section for it; without dvc.yaml no stage runs it
    restore(repo, "aaa_core/__init__.py")
    assert "aaa_core.INPUT_SHAPES" in python(repo, DATASET_PROOF, ok=False)


# ---- a pipeline: <name>/dvc.yaml, its knobs file and its render stage ----

PIPELINE = """\
# A toy pipeline beside the study: one render stage reading its knobs (toy.yaml). Paths are the repository's (wdir ..).
stages:
  render_toy:
    wdir: ..
    cmd: python -m stages.render_toy --knobs toy.yaml --out reports/toy.md
    deps: [aaa_core/__init__.py, aaa_core/config.py, aaa_core/errors.py, aaa_core/io.py, aaa_core/models,
           stages/_cli.py, stages/render_toy.py]
    params: [{toy.yaml: [mnist]}]
    outs:
      - reports/toy.md: {cache: false}
"""

PIPELINE_KNOBS = "# the toy pipeline's knobs (toy/dvc.yaml)\nmnist: {greeting: hello from toy.yaml}\n"

RENDER_STAGE = '''"""render_toy: the toy pipeline's report (reports/toy.md), from its knobs file."""
from __future__ import annotations

from pathlib import Path

import click

from aaa_core.config import read_params_file
from stages._cli import run


@click.command()
@click.option("--knobs", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def main(knobs: Path, out: Path) -> None:
    greeting = read_params_file(knobs)["mnist"]["greeting"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Toy\\n\\n{greeting}\\n")
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
'''

PIPELINE_PROOF = """
import test_dvc
assert "toy/dvc.yaml" in test_dvc.PIPELINES, test_dvc.PIPELINES      # the dependency check covers it
test_dvc.test_every_stage_depends_on_every_project_module_its_command_imports("toy/dvc.yaml:render_toy")
print("OK")
"""


def test_a_pipeline_takes_at_most_four_files(repo):
    (repo / "toy").mkdir()
    (repo / "toy/dvc.yaml").write_text(PIPELINE)
    (repo / "toy.yaml").write_text(PIPELINE_KNOBS)
    (repo / "stages/render_toy.py").write_text(RENDER_STAGE)
    assert_at_most_four(repo, {"toy/dvc.yaml", "toy.yaml", "stages/render_toy.py"})

    init_dvc(repo)
    assert "toy/dvc.yaml:render_toy" in run([DVC, "stage", "list", "toy/dvc.yaml", "--name-only"], repo).split()
    run([DVC, "repro", "toy/dvc.yaml"], repo)                  # the toy stage itself: a second
    assert "hello from toy.yaml" in (repo / "reports/toy.md").read_text()
    make = run(["make", "-n", "toy"], repo)                      # prints what `make toy` would run
    assert "dvc repro toy/dvc.yaml" in make and "cat reports/toy.md" in make, make[-1000:]
    assert python(repo, PIPELINE_PROOF, extra_path=(repo / "tests",)).strip().endswith("OK")

    # without its render stage the pipeline does not run; without toy.yaml DVC misses its params; without
    # toy/dvc.yaml there is no pipeline
    restore(repo, "stages/render_toy.py")
    assert "render_toy" in run([DVC, "repro", "toy/dvc.yaml"], repo, ok=False)
