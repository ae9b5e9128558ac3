"""One prepared device check: what needs a GPU, run and recorded in one call of at most 8 minutes.

Five parts, each in its own process under its own wall-time limit, so that one that fails, hangs or crashes
loses nothing of the others:

- ``cuda_tests``: pytest on the tests that need CUDA (those marked ``skipif(..., reason="needs ... CUDA ...")``;
  this file is the pytest plugin that selects them).
- ``pgd_throughput``: our PGD against torchattacks' on the MNIST (AE + DNN) and CIFAR-10 (AE + ResNet) pipelines
  at the paper's model sizes, float32 and bfloat16 autocast, with ``benchmarks/pgd_throughput.py``'s timer;
  ratios against runs in the same process.
- ``ddp_scaling``: Madry training images/s under torchrun with 1 and N processes, N the GPUs present
  (``benchmarks/ddp_scaling.py``; with one GPU, N = 1 only).
- ``paper_epoch``: one epoch of MNIST AAA training at the paper scale's budget (params.yaml's ``scales.paper``,
  read through ``aaa_core.config``), timed, and the time of the paper's epochs extrapolated from it.
- ``smoke_stages``: the study's MNIST stages at smoke scale on the GPU in a temporary copy of the repository,
  through DVC when ``dvc`` is importable, else their commands in the DAG order derived from dvc.yaml.

Writes ``device_check.json``, ``device_check.md`` and ``device_check.log`` into ``--out`` (default ``$OUT``
when set, else ``benchmarks/device_check_out``), the JSON and markdown again after every part. Each part is
``ok``, ``failed`` (with the error line) or ``skipped`` (with the reason).

``--tiny`` runs every part on the CPU in seconds (tiny batches, 1-2 steps, one process, two stages), so that
the script cannot rot unnoticed (``tests/test_device_check.py``). ``--prepare`` (on a machine with the data
and internet) builds the bundle that must travel to a machine without them: see benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import fnmatch
import gzip
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BUNDLE = ROOT / ".devcheck"
PARTS = ("cuda_tests", "pgd_throughput", "ddp_scaling", "paper_epoch", "smoke_stages")
TITLES = {"cuda_tests": "(a) CUDA tests", "pgd_throughput": "(b) PGD throughput, ours against torchattacks",
          "ddp_scaling": "(c) DDP training scaling", "paper_epoch": "(d) one paper-scale epoch of MNIST AAA",
          "smoke_stages": "(e) the study's MNIST stages at smoke scale"}
# seconds per part, and for everything (the wheel install included): 8 minutes; the last part, the smoke stages
# (about 12 stages of a few seconds each on a GPU, mostly start-up), gets what the others leave, up to its limit
LIMITS = {"cuda_tests": 75, "pgd_throughput": 70, "ddp_scaling": 50, "paper_epoch": 110, "smoke_stages": 240}
BUDGET = 470
TINY_LIMIT, TINY_BUDGET = 90, 300
# the MNIST study of tests/test_pipeline.py (its black-box stages aside); --tiny: two stages
STUDY_TARGETS = ["robustness@mnist", "report@mnist"]
TINY_TARGETS = ["train_classifier@mnist-fc"]
STAGE_FILES = ["aaa_core", "stages", "paper", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]
MNIST_FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
# import name -> (distribution, install without its dependencies): torchattacks 3.5.1 pins requests~=2.25.1,
# which a machine without internet cannot honour and torchattacks does not need; DVC needs its dependencies
OPTIONAL = {"torchattacks": ("torchattacks", True), "dvc": ("dvc", False)}
NEVER_INSTALL = re.compile(r"(torch|torchvision|torchaudio|triton|nvidia_.*)$")   # the machine's own builds stay


class Skip(Exception):
    """A part that cannot run here: recorded as skipped, with this reason."""


class PartFailure(Exception):
    """A part that failed after producing something worth keeping (``result``)."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


# ----------------------------------------------------------------------------------------------------------
# pytest plugin (`pytest -p device_check`, with benchmarks/ on the path): keep only the tests that need CUDA

def needs_cuda(item) -> bool:
    """A test skipped without a CUDA GPU: a ``skipif`` whose reason names CUDA or a GPU (the repository's way)."""
    for mark in item.iter_markers("skipif"):
        if re.search(r"cuda|gpu", str(mark.kwargs.get("reason", "")), re.IGNORECASE):
            return True
    return item.get_closest_marker("cuda") is not None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DEVICE_CHECK_INFO"):   # what the part needs to know, without importing torch itself
        import torch
        Path(os.environ["DEVICE_CHECK_INFO"]).write_text(json.dumps(
            {"cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0, "torch": torch.__version__}))
    keep = [item for item in items if needs_cuda(item)]
    dropped = [item for item in items if not needs_cuda(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def cuda_test_files() -> list[str]:
    """Test files that mention CUDA at all: only these are collected (collecting the others would import what
    they need, DVC for one, which a GPU machine may lack)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if re.search("cuda", p.read_text(), re.IGNORECASE))


# ----------------------------------------------------------------------------------------------------------
# dvc.yaml without DVC: expand foreach/matrix and ${...}, order the stages by their deps and outs

def _lookup(expr: str, context: dict):
    value = context
    for part in expr.strip().split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"cannot interpolate ${{{expr}}}")
        value = value[part]
    return value


def interpolate(value, context: dict):
    if isinstance(value, str):
        whole = re.fullmatch(r"\$\{([^}]+)\}", value.strip())
        if whole:
            return _lookup(whole.group(1), context)
        return re.sub(r"\$\{([^}]+)\}", lambda m: str(_lookup(m.group(1), context)), value)
    if isinstance(value, list):
        return [interpolate(v, context) for v in value]
    if isinstance(value, dict):
        return {interpolate(k, context): interpolate(v, context) for k, v in value.items()}
    return value


def _paths(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []]


def expand_stages(dvc_yaml: Path, params: dict) -> dict[str, dict]:
    """Every stage of ``dvc_yaml`` as DVC names it (``name@key``, matrix values joined by '-'), with its command,
    deps and outs (outs, metrics and plots), ``params`` (params.yaml's top level) as the variables."""
    import yaml

    stages: dict[str, dict] = {}
    for name, spec in (yaml.safe_load(dvc_yaml.read_text()).get("stages") or {}).items():
        instances: list[tuple[str, dict, dict]] = []   # (name, context, body)
        if "foreach" in spec:
            items = interpolate(spec["foreach"], params)
            pairs = items.items() if isinstance(items, dict) else ((item, item) for item in items)
            instances = [(f"{name}@{key}", {**params, "key": key, "item": item}, spec["do"]) for key, item in pairs]
        elif "matrix" in spec:
            axes = {k: interpolate(v, params) for k, v in spec["matrix"].items()}
            combos = [{}]
            for axis, values in axes.items():
                combos = [{**c, axis: v} for c in combos for v in values]
            body = {k: v for k, v in spec.items() if k != "matrix"}
            instances = [(f"{name}@{'-'.join(str(v) for v in c.values())}", {**params, "item": c}, body)
                         for c in combos]
        else:
            instances = [(name, params, spec)]
        for stage_name, context, body in instances:
            cmd = interpolate(body["cmd"], context)
            stages[stage_name] = {
                "cmd": " && ".join(cmd) if isinstance(cmd, list) else " ".join(str(cmd).split()),
                "deps": [str(d) for d in interpolate(body.get("deps", []), context)],
                "outs": [p for key in ("outs", "metrics", "plots") for p in _paths(interpolate(body.get(key), context))],
            }
    return stages


def _overlaps(dep: str, out: str) -> bool:
    dep, out = dep.rstrip("/"), out.rstrip("/")
    return dep == out or out.startswith(dep + "/") or dep.startswith(out + "/")


def stage_order(stages: dict[str, dict], targets: list[str]) -> list[str]:
    """The stages matching ``targets`` (fnmatch patterns) and all they need, producers before consumers, in
    dvc.yaml's order where the DAG leaves a choice."""
    producers = {name: sorted({other for dep in spec["deps"] for other, o in stages.items() if other != name
                               and any(_overlaps(dep, out) for out in o["outs"])}, key=list(stages).index)
                 for name, spec in stages.items()}
    wanted = [n for n in stages if any(fnmatch.fnmatchcase(n, t) for t in targets)]
    missing = [t for t in targets if not any(fnmatch.fnmatchcase(n, t) for n in stages)]
    if missing:
        raise ValueError(f"no stage of dvc.yaml matches {', '.join(missing)}")
    needed, todo = set(), list(wanted)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo += producers[name]
    order: list[str] = []
    while len(order) < len(needed):
        ready = [n for n in stages if n in needed and n not in order and all(p in order for p in producers[n])]
        if not ready:
            raise ValueError(f"dvc.yaml has a cycle among {sorted(needed - set(order))}")
        order.append(ready[0])
    return order


# ----------------------------------------------------------------------------------------------------------
# helpers of the parts (each part runs in its own process, see run_part)

def last_line(text: str | bytes | None) -> str:
    """The line that says what went wrong: the last ``error: ...`` (a stage's one-line error) or exception line,
    else the last line."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"(error: |[\w.]*(Error|Exception|Interrupt)\b)", line)]
    return (errors or lines or [""])[-1][:400]


def python_shim(folder: Path) -> Path:
    """A folder with ``python`` running this interpreter (dvc.yaml's commands say ``python``; a GPU machine may
    have only ``python3``)."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n")
    shim.chmod(0o755)
    return folder


def child_env(extra_path: Path | None = None) -> dict:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    if extra_path is not None:
        env["PATH"] = f"{extra_path}{os.pathsep}{env.get('PATH', '')}"
    return env


def stream(cmd: list[str], cwd: Path, env: dict, on_line=None) -> tuple[int, str]:
    """Run ``cmd``, its output (stderr too) streamed into this part's log as it comes, so that a part stopped at
    its limit still shows how far it got. Returns the exit status and the output."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        lines.append(line)
        if on_line is not None:
            on_line(line)
    return proc.wait(), "".join(lines)


def run_logged(cmd: list[str], cwd: Path, env: dict, what: str, on_line=None) -> str:
    """``stream``, raising with the line that says what went wrong when the command fails."""
    code, text = stream(cmd, cwd, env, on_line)
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}): {last_line(text)}")
    return text


RESULT_PATH: Path | None = None


def checkpoint(result: dict) -> None:
    """What a part has so far, kept by the parent if the part is stopped at its limit."""
    if RESULT_PATH is not None:
        RESULT_PATH.write_text(json.dumps({"partial": True, "result": result}, default=str))


def require(module: str) -> None:
    import importlib.util
    if importlib.util.find_spec(module) is None:
        raise Skip(f"{module} is not importable and was not installed from the wheel folder (see setup)")


def torch_device(opts):
    import torch
    from aaa_core.runtime import resolve_device
    return resolve_device("cpu" if opts.tiny else opts.device), torch


def study_params(scale: str):
    import dataclasses
    from aaa_core.config import load_params
    return dataclasses.replace(load_params(ROOT / "params.yaml"), scale=scale)


# ----------------------------------------------------------------------------------------------------------
# the parts

def part_cuda_tests(opts) -> dict:
    """(a) pytest on the tests that need CUDA (selected by this file as a pytest plugin)."""
    files = cuda_test_files()
    with tempfile.TemporaryDirectory() as tmp:
        env = child_env()
        env.update(PYTHONPATH=os.pathsep.join([str(BENCH), env["PYTHONPATH"]]),
                   DEVICE_CHECK_INFO=str(Path(tmp) / "info.json"))
        base = [sys.executable, "-m", "pytest", "-p", "device_check", "-p", "no:cacheprovider", "-q", *files]
        code, text = stream([*base, "--collect-only"], ROOT, env)
        selected = [line.strip() for line in text.splitlines() if re.match(r"tests/\S+::", line)]
        if not selected:
            raise RuntimeError(f"no CUDA tests selected in {files} (pytest exit {code}): {last_line(text)}")
        info = json.loads((Path(tmp) / "info.json").read_text())
        result = {"files": files, "selected": selected, **info}
        if opts.tiny or not info["cuda_devices"]:
            why = "--tiny runs on the CPU only" if info["cuda_devices"] else "no CUDA GPU on this machine"
            raise Skip(f"{why} ({len(selected)} CUDA tests selected: "
                       f"{', '.join(s.split('::')[-1] for s in selected)})")
        junit = Path(tmp) / "cuda.xml"
        checkpoint(result)
        code, text = stream([*base, "-rA", f"--junitxml={junit}"], ROOT, env)
        tests = read_junit(junit) if junit.is_file() else []
    lines = [line.strip("= \n") for line in text.splitlines() if line.strip()]
    result.update(exit_code=code, tests=tests, summary=lines[-1] if lines else "")
    if code != 0:
        bad = [t["id"] for t in tests if t["outcome"] in ("failed", "error")]
        raise PartFailure(f"pytest exit {code}: {result['summary']}"
                          + (f"; failed: {', '.join(bad)}" if bad else ""), result)
    return result


def read_junit(path: Path) -> list[dict]:
    import xml.etree.ElementTree as ET
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (node.get("message") or "").strip()[:300]
        tests.append({"id": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), "message": message})
    return tests


def part_pgd_throughput(opts) -> dict:
    """(b) image-steps/s of our PGD, torchattacks' PGD and a bare forward+backward, float32 and bfloat16."""
    require("torchattacks")
    device, torch = torch_device(opts)
    import torchattacks
    sys.path.insert(0, str(BENCH))
    import pgd_throughput as bench
    from aaa_core import INPUT_SHAPES
    from aaa_core.attacks import pgd
    from aaa_core.models import Defended, ae_kwargs, build
    from aaa_core.runtime import device_name, generator

    params = study_params("smoke" if opts.tiny else "paper")   # the paper's model sizes; smoke's for --tiny
    steps, repeats = (2, 1) if opts.tiny else (20, 3)
    batches = {"mnist": 4, "cifar10": 4} if opts.tiny else {"mnist": 256, "cifar10": 128}
    classifiers = {"mnist": "dnn", "cifar10": "resnet"}
    out = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
           "torchattacks": torchattacks.__version__, "steps": steps, "best_of": repeats, "scale": params.scale,
           "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
           "pipelines": {}}
    for dataset, clf_name in classifiers.items():
        torch.manual_seed(0)
        clf_kwargs = params.section("models", dataset).get(clf_name, {})
        arch = ae_kwargs(dataset, params.section("ae", dataset))
        model = Defended(build(dataset, "ae", **arch), build(dataset, clf_name, **clf_kwargs)).to(device).eval()
        batch = batches[dataset]
        x = torch.rand(batch, *INPUT_SHAPES[dataset]).to(device)
        y = torch.randint(0, 10, (batch,)).to(device)
        threat = params.attack(dataset)
        eps, alpha = threat.eps, threat.alpha
        reference = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

        def ours():
            pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, generator=generator(0, device))

        def theirs():
            reference(x, y)

        def bare():
            for _ in range(steps):
                xa = x.clone().requires_grad_(True)
                torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y), xa)

        def bf16(fn):
            def wrapped():
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    fn()
            return wrapped

        variants = {"ours_float32": ours, "torchattacks_float32": theirs, "bare_float32": bare,
                    "ours_bfloat16": bf16(ours), "torchattacks_bfloat16": bf16(theirs)}
        rates = {name: round(bench.rate(fn, batch, steps, repeats), 1) for name, fn in variants.items()}
        ratios = {"ours/torchattacks float32": rates["ours_float32"] / rates["torchattacks_float32"],
                  "ours/torchattacks bfloat16": rates["ours_bfloat16"] / rates["torchattacks_bfloat16"],
                  "ours/bare float32": rates["ours_float32"] / rates["bare_float32"],
                  "ours bfloat16/float32": rates["ours_bfloat16"] / rates["ours_float32"]}
        out["pipelines"][dataset] = {
            "model": f"ae{arch or ''} + {clf_name}{clf_kwargs or ''}", "batch": batch, "eps": eps, "alpha": alpha,
            "image_steps_per_s": rates, "ratios": {k: round(v, 3) for k, v in ratios.items()}}
        print(f"{dataset}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
        del model, reference
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def part_ddp_scaling(opts) -> dict:
    """(c) Madry training images/s under torchrun: 1 process, then one per GPU present."""
    device, torch = torch_device(opts)
    sys.path.insert(0, str(BENCH))
    import ddp_scaling

    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    nprocs = [1] + ([gpus] if gpus > 1 else [])
    args = argparse.Namespace(batch=8, iterations=2, steps=1, device="cpu", bf16=False) if opts.tiny else \
        argparse.Namespace(batch=256, iterations=20, steps=10, device=device.type, bf16=False)
    if opts.tiny:   # launch() gives each process cores / N threads: in --tiny one, a shared CI machine's cores
        ddp_scaling.os.cpu_count = lambda: 1   # are not ours (this process only launches, then exits)
    rates = {}
    for n in nprocs:
        try:
            rates[n] = ddp_scaling.launch(n, args)
        except subprocess.CalledProcessError as err:
            print(err.stdout or "", err.stderr or "")
            raise PartFailure(f"torchrun with {n} process(es) failed (exit {err.returncode}): "
                              f"{last_line(err.stderr) or last_line(err.stdout)}",
                              {"images_per_s": rates}) from None
    result = {"device": device.type, "gpus": gpus, "global_batch": args.batch, "iterations": args.iterations,
              "pgd_steps": args.steps, "precision": "float32", "images_per_s": {str(n): r for n, r in rates.items()}}
    if len(nprocs) > 1:
        result["ratio_N_to_1"] = round(rates[nprocs[-1]] / rates[1], 3)
    else:
        result["note"] = (f"N=1 only: {gpus} GPU present" if gpus == 1 else "N=1 only: "
                          + ("--tiny runs one process on the CPU" if opts.tiny else "no CUDA GPU"))
    return result


def part_paper_epoch(opts) -> dict:
    """(d) one epoch of MNIST AAA at the paper scale's budget, timed; the paper's epochs extrapolated."""
    device, torch = torch_device(opts)
    import dataclasses
    from aaa_core.attacks import PGDConfig
    from aaa_core.data import fetch, split_train_val, to_float
    from aaa_core.training.losses import get_loss
    from aaa_core.models import ae_kwargs, build
    from aaa_core.runtime import device_name, seed_everything
    from aaa_core.training.loops import TrainConfig, train_ae, training_attack

    params = study_params("paper")
    split, train, adv, ae_cfg = (params.section(s, "mnist") for s in ("split", "train", "adversarial", "ae"))
    seed_everything(params.seed)
    if opts.tiny:   # the same code path on a few random images; the extrapolation means nothing here
        split = dataclasses.replace(split, train_subset=16, val_size=8)
        adv = dataclasses.replace(adv, steps=2, epoch_images=16)
        train = dataclasses.replace(train, batch_size=8)
        data, source = {"x_train": torch.rand(64, 1, 28, 28), "y_train": torch.randint(0, 10, (64,))}, "random (--tiny)"
    else:
        try:
            raw, record = fetch("mnist", user_dir=None, download=False, offline_dir=ROOT / "data" / "offline")
            data, source = {"x_train": to_float(raw["x_train"]), "y_train": raw["y_train"]}, record["source"]
        except Exception as err:   # the cost of a step does not depend on the pixels
            print(f"no MNIST ({err}); random images of MNIST's size instead")
            data, source = ({"x_train": torch.rand(60000, 1, 28, 28), "y_train": torch.randint(0, 10, (60000,))},
                            f"random images of MNIST's size (no MNIST: {type(err).__name__})")
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=split.train_subset,
                                             val_size=split.val_size, seed=params.seed)
    x, y, x_val, y_val = (t.to(device) for t in (x, y, x_val, y_val))
    cfg = TrainConfig(epochs=1, batch_size=train.batch_size, lr=train.lr, lr_patience=train.lr_patience,
                      seed=params.seed, bf16=train.bf16, epoch_images=adv.epoch_images, eps_ramp=adv.eps_ramp,
                      augment=train.augment)
    attack_cfg = PGDConfig(eps=params.attack("mnist").eps, alpha=adv.alpha, steps=adv.steps)
    ae = build("mnist", "ae", **ae_kwargs("mnist", ae_cfg)).to(device)
    classifier = build("mnist", "dnn", **params.section("models", "mnist").get("dnn", {})).to(device).eval()
    start = time.perf_counter()
    history = train_ae(ae, [classifier], get_loss(params.loss, ae_cfg.mse_weight), x, y, x_val, y_val, cfg,
                       attack=training_attack(attack_cfg), log=print)
    wall = time.perf_counter() - start
    seconds = history[0]["seconds"]
    images = adv.epoch_images or len(x)
    result = {"device": str(device), "device_name": device_name(device), "torch": torch.__version__,
              "data": source, "scale": "paper" + (" (shrunk by --tiny)" if opts.tiny else ""),
              "train_images": len(x), "val_images": len(x_val), "epoch_images": images,
              "batch_size": cfg.batch_size, "iterations": -(-images // cfg.batch_size), "pgd_steps": adv.steps,
              "precision": "bfloat16 autocast" if cfg.bf16 else "float32", "loss": params.loss,
              "warm_epochs": ae_cfg.warm_epochs, "classifier": "mnist dnn, untrained (a step's cost does not "
              "depend on the weights)", "epoch_seconds": round(seconds, 2), "wall_seconds": round(wall, 2),
              "paper_epochs": adv.epochs, "extrapolated_seconds": round(seconds * adv.epochs, 1),
              "extrapolated_hours": round(seconds * adv.epochs / 3600, 3)}
    if not opts.tiny and split.train_subset:
        result["note"] = (f"the paper scale's split.mnist.train_subset is {split.train_subset}: this epoch is "
                          f"{len(x)} images, not all of MNIST's training images less the {split.val_size} held out")
    return result


def part_smoke_stages(opts) -> dict:
    """(e) the MNIST stages at smoke scale, in a temporary copy of the repository, on the GPU."""
    import importlib.util

    import yaml

    if opts.tiny:
        device = "cpu"
    else:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    targets = TINY_TARGETS if opts.tiny else STUDY_TARGETS
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    order = stage_order(expand_stages(ROOT / "dvc.yaml", params), targets)
    runner = "dvc" if importlib.util.find_spec("dvc") is not None and not opts.no_dvc else "direct"
    result = {"runner": runner, "device": device, "targets": targets, "stages": order}
    with tempfile.TemporaryDirectory(prefix="device_check_") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for name in STAGE_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy(src, repo / name)
        params.update(scale="smoke", device=device, devices=1)
        params["data"].update(download=False, offline_dir=str(ROOT / "data" / "offline"))
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = child_env(python_shim(Path(tmp) / "bin"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                            if p and Path(p).resolve() != ROOT)   # the copy's aaa_core only
        env["AAA_PROGRESS"] = "0"
        start = time.perf_counter()
        begun: list[str] = []   # DVC's stages: one has run once the next one begins, or once DVC ends well
        try:
            if runner == "dvc":
                dvc = [sys.executable, "-m", "dvc"]
                if shutil.which("git"):
                    run_logged(["git", "init", "-q"], repo, env, "git init")
                    run_logged([*dvc, "init", "-q"], repo, env, "dvc init")
                else:
                    run_logged([*dvc, "init", "-q", "--no-scm"], repo, env, "dvc init --no-scm")

                def started(line: str) -> None:
                    found = re.match(r"Running stage '([^']+)'", line)
                    if found:
                        begun.append(found.group(1))
                        result.update(ran=begun[:-1], running=begun[-1])
                        checkpoint({**result, "seconds": round(time.perf_counter() - start, 1)})

                try:
                    run_logged([*dvc, "repro", "--glob", *targets], repo, env, "dvc repro", on_line=started)
                finally:
                    result.pop("running", None)
                result["ran"] = begun
            else:
                stages = expand_stages(repo / "dvc.yaml", params)
                result["ran"], result["stage_seconds"] = [], {}
                for name in order:
                    cmd = shlex.split(stages[name]["cmd"])
                    cmd = [sys.executable if c == "python" else c for c in cmd]
                    began = time.perf_counter()
                    print(f"running stage {name}", flush=True)
                    result["running"] = name
                    checkpoint({**result, "seconds": round(began - start, 1)})
                    run_logged(cmd, repo, env, f"stage {name}")
                    del result["running"]
                    result["ran"].append(name)
                    result["stage_seconds"][name] = round(time.perf_counter() - began, 1)
        except RuntimeError as err:
            if runner == "dvc" and begun:
                result["failed_stage"] = begun[-1]
            elif "running" in result:
                result["failed_stage"] = result.pop("running")
            result["seconds"] = round(time.perf_counter() - start, 1)
            result["metrics"] = stage_metrics(repo)
            raise PartFailure(str(err), result) from None
        result["seconds"] = round(time.perf_counter() - start, 1)
        result["metrics"] = stage_metrics(repo)
    missing = [s for s in order if s not in result["ran"]]
    if missing:
        raise PartFailure(f"{len(missing)} stage(s) did not run: {', '.join(missing)}", result)
    return result


def stage_metrics(repo: Path) -> dict:
    """Seconds and device each stage recorded in its metrics JSON."""
    found = {}
    for path in sorted((repo / "metrics").rglob("*.json")) if (repo / "metrics").is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ("seconds" in data or "runtime" in data):
            found[str(path.relative_to(repo))] = {"seconds": data.get("seconds"),
                                                  "device": (data.get("runtime") or {}).get("device")}
    return found


PART_FUNCS = {"cuda_tests": part_cuda_tests, "pgd_throughput": part_pgd_throughput,
              "ddp_scaling": part_ddp_scaling, "paper_epoch": part_paper_epoch, "smoke_stages": part_smoke_stages}


def run_part(opts) -> int:
    """The worker: one part, its record written to ``--result``."""
    global RESULT_PATH
    name = opts.run_part
    RESULT_PATH = Path(opts.result)
    # stopped at its limit: unwind, so that temporary folders go (the partial record stays as it is)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    record: dict = {}
    try:
        fault = dict(f.split("=", 1) if "=" in f else (f, "raise") for f in opts.plant_fault).get(name)
        if fault == "hang":
            time.sleep(3600)
        if fault:
            raise RuntimeError(f"planted fault in {name}")
        record = {"status": "ok", "result": PART_FUNCS[name](opts)}
    except Skip as why:
        record = {"status": "skipped", "reason": str(why)}
    except Exception as err:   # recorded, not raised: the parent goes on with the other parts
        traceback.print_exc()
        record = {"status": "failed", "error": f"{type(err).__name__}: {' '.join(str(err).split())}"[:1000]}
        if isinstance(err, PartFailure):
            record["result"] = err.result
    Path(opts.result).write_text(json.dumps(record, indent=1, default=str))
    return 0


# ----------------------------------------------------------------------------------------------------------
# the parent: set-up, each part in its own process under its limit, the records

def setup(opts) -> dict:
    """MNIST from the bundle where data/offline/mnist lacks it; torchattacks and DVC from the wheel folder where
    they are missing (never torch: the machine's own build stays)."""
    import importlib.util
    from importlib import metadata

    record: dict = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
    offline = ROOT / "data" / "offline" / "mnist"
    have = [n for n in MNIST_FILES if (offline / n).is_file() or (offline / f"{n}.gz").is_file()]
    if len(have) == len(MNIST_FILES):
        record["mnist"] = f"present in {offline.relative_to(ROOT)}"
    else:
        bundle = Path(opts.mnist)
        found = {n: p for n in MNIST_FILES for p in (bundle / n, bundle / f"{n}.gz") if p.is_file()}
        if len(found) == len(MNIST_FILES):
            offline.mkdir(parents=True, exist_ok=True)
            for path in found.values():
                shutil.copy(path, offline / path.name)
            record["mnist"] = f"copied from {bundle} into {offline.relative_to(ROOT)}"
        else:
            record["mnist"] = (f"missing: {offline.relative_to(ROOT)} and {bundle} lack "
                               f"{', '.join(sorted(set(MNIST_FILES) - set(found)))}")
    wheels = Path(opts.wheels)
    pins = []
    for dist in ("torch", "torchvision"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            pass
    record["packages"] = {}
    for module, (dist, no_deps) in OPTIONAL.items():
        if importlib.util.find_spec(module) is not None:
            record["packages"][module] = f"present ({metadata.version(dist)})"
            continue
        candidates = [p.name for p in wheels.glob(f"{dist.replace('-', '_')}-*.whl")] if wheels.is_dir() else []
        if not candidates:
            record["packages"][module] = f"missing: no {dist} wheel in {wheels}"
            continue
        with tempfile.TemporaryDirectory() as tmp:   # the machine's torch stays: pinned to what is installed
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text("\n".join(pins) + "\n")
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", str(wheels),
                   "--no-cache-dir", "-c", str(constraints), *(["--no-deps"] if no_deps else []), dist]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        importlib.invalidate_caches()
        ok = proc.returncode == 0 and importlib.util.find_spec(module) is not None
        record["packages"][module] = (f"installed from {wheels} ({metadata.version(dist)})" if ok else
                                      f"install failed (exit {proc.returncode}): {last_line(proc.stderr)}")
    return record


def run_parent(opts) -> int:
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    if ROOT in out.resolve().parents:   # the default folder inside the checkout: never committed by accident
        (out / ".gitignore").write_text("*\n")
    log = out / "device_check.log"
    log.write_text("")
    started = time.perf_counter()
    budget = opts.budget or (TINY_BUDGET if opts.tiny else BUDGET)
    limits = {p: TINY_LIMIT if opts.tiny else LIMITS[p] for p in PARTS}
    for item in opts.limit:
        part, _, seconds = item.partition("=")
        if part not in PARTS:
            raise SystemExit(f"--limit {item}: unknown part {part!r}; expected one of {', '.join(PARTS)}")
        limits[part] = float(seconds)
    chosen = [p.strip() for p in opts.parts.split(",")] if opts.parts else list(PARTS)
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)}; expected {', '.join(PARTS)}")
    report = {"mode": "tiny (CPU, seconds)" if opts.tiny else "full", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "host": platform.node(), "budget_s": budget, "setup": {}, "parts": {}}
    try:
        report["setup"] = setup(opts)
    except Exception as err:   # the parts still run, and say what they lack
        report["setup"] = {"error": f"{type(err).__name__}: {err}"}
    write_reports(out, report)
    lock = threading.Lock()

    def one(part: str) -> None:
        left = budget - (time.perf_counter() - started)
        limit = min(limits[part], left)
        if left < 5:
            entry = {"status": "skipped", "reason": f"the overall budget of {budget:.0f} s was spent", "seconds": 0}
        else:
            print(f"== {part} (limit {limit:.0f} s)", flush=True)
            entry = run_child(part, opts, limit, limits[part], log, lock)
            print(f"== {part}: {entry['status']} in {entry['seconds']:.0f} s "
                  f"{entry.get('error') or entry.get('reason') or ''}", flush=True)
        with lock:
            report["parts"][part] = entry
            write_reports(out, report)

    for part in PARTS:
        if part not in chosen:
            report["parts"][part] = {"status": "skipped", "reason": "not selected (--parts)", "seconds": 0}
    jobs = opts.jobs or (2 if opts.tiny else 1)   # one at a time unless --tiny: timings must not overlap
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, [p for p in PARTS if p in chosen]))
    report["seconds"] = round(time.perf_counter() - started, 1)
    write_reports(out, report)
    print(f"wrote {out / 'device_check.json'} and {out / 'device_check.md'}")
    print((out / "device_check.md").read_text())
    return 0


def run_child(part: str, opts, limit: float, nominal: float, log: Path, lock: threading.Lock) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        output = Path(tmp) / "output.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), *opts.argv, "--run-part", part, "--result", str(result)]
        env = child_env()
        env.setdefault("AAA_PROGRESS_SECONDS", "15")
        if opts.tiny:   # one thread per process: a shared CI machine's cores are not all ours
            env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        start = time.perf_counter()
        with output.open("w") as sink:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                proc.wait(timeout=limit)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
                    try:
                        os.killpg(proc.pid, sig)   # the part and what it started (torchrun, pytest, stages)
                    except ProcessLookupError:
                        break
                    try:
                        proc.wait(timeout=wait)
                        break
                    except subprocess.TimeoutExpired:
                        continue
        seconds = round(time.perf_counter() - start, 1)
        text = output.read_text(errors="replace")
        with lock, log.open("a") as sink:
            sink.write(f"\n===== {part} ({seconds} s, limit {limit:.0f} s) =====\n{text[-2_000_000:]}")
        tail = text.splitlines()[-15:]
        record = json.loads(result.read_text()) if result.is_file() else {}
        if record and not record.get("partial"):
            entry = record
        elif timed_out:
            entry = {"status": "failed", "error": f"timed out after {limit:.0f} s (limit {nominal:.0f} s)"}
        else:
            entry = {"status": "failed", "error": f"exit {proc.returncode} without a record: {last_line(text)}"}
        if record.get("partial"):
            entry["result"] = record["result"]   # how far it got
    entry.update(seconds=seconds, limit_s=round(limit))
    if entry["status"] == "failed":
        entry["output_tail"] = tail
    return entry


def write_reports(out: Path, report: dict) -> None:
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "device_check.md").write_text(markdown(report))


def markdown(report: dict) -> str:
    lines = [f"# Device check ({report['mode']})", "",
             f"{report['started']} on {report['host']}; Python {report['setup'].get('python', '?')}; "
             f"MNIST: {report['setup'].get('mnist', '?')}; "
             + "; ".join(f"{k}: {v}" for k, v in report["setup"].get("packages", {}).items())
             + (f"; set-up failed: {report['setup']['error']}" if "error" in report["setup"] else ""), "",
             "| part | status | seconds | limit | detail |", "|---|---|---|---|---|"]
    for part in PARTS:
        entry = report["parts"].get(part)
        if entry is None:
            lines.append(f"| {TITLES[part]} | not run yet | | | |")
            continue
        detail = entry.get("error") or entry.get("reason") or summary(part, entry.get("result") or {})
        lines.append(f"| {TITLES[part]} | {entry['status']} | {entry.get('seconds', '')} | {entry.get('limit_s', '')} "
                     f"| {str(detail).replace('|', '/')} |")
    pgd = (report["parts"].get("pgd_throughput") or {}).get("result") or {}
    if pgd.get("pipelines"):
        lines += ["", f"PGD-{pgd['steps']} image-steps/s on {pgd['device_name']} (best of {pgd['best_of']}, "
                  f"torch {pgd['torch']}, torchattacks {pgd['torchattacks']}):", "",
                  "| pipeline | batch | ours fp32 | torchattacks fp32 | bare fp32 | ours bf16 | torchattacks bf16 | "
                  "ours/ta fp32 | ours/ta bf16 | ours bf16/fp32 |", "|---|---|---|---|---|---|---|---|---|---|"]
        for dataset, row in pgd["pipelines"].items():
            r, q = row["image_steps_per_s"], row["ratios"]
            lines.append(f"| {dataset}: {row['model']} | {row['batch']} | {r['ours_float32']:.0f} | "
                         f"{r['torchattacks_float32']:.0f} | {r['bare_float32']:.0f} | {r['ours_bfloat16']:.0f} | "
                         f"{r['torchattacks_bfloat16']:.0f} | {q['ours/torchattacks float32']:.2f} | "
                         f"{q['ours/torchattacks bfloat16']:.2f} | {q['ours bfloat16/float32']:.2f} |")
    tests = ((report["parts"].get("cuda_tests") or {}).get("result") or {}).get("tests") or []
    if tests:
        lines += ["", "CUDA tests:", ""] + [f"- {t['outcome']}: {t['id']} ({t['seconds']:.1f} s)"
                                            + (f": {t['message']}" if t["message"] else "") for t in tests]
    for part in PARTS:
        entry = report["parts"].get(part) or {}
        if entry.get("output_tail"):
            lines += ["", f"{TITLES[part]}, last lines of its output:", "", "```", *entry["output_tail"], "```"]
    return "\n".join(lines) + "\n"


def summary(part: str, r: dict) -> str:
    if not r:
        return ""
    if part == "cuda_tests":
        counts = {}
        for t in r.get("tests", []):
            counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
        return ", ".join(f"{n} {k}" for k, n in counts.items()) or f"{len(r.get('selected', []))} selected"
    if part == "pgd_throughput":
        return "; ".join(f"{d}: ours/torchattacks {p['ratios']['ours/torchattacks float32']:.2f} fp32, "
                         f"{p['ratios']['ours/torchattacks bfloat16']:.2f} bf16; bf16/fp32 "
                         f"{p['ratios']['ours bfloat16/float32']:.2f}" for d, p in r.get("pipelines", {}).items())
    if part == "ddp_scaling":
        rates = ", ".join(f"{n} process(es) {v:.0f} images/s" for n, v in r.get("images_per_s", {}).items())
        return rates + (f"; N/1 {r['ratio_N_to_1']:.2f}" if "ratio_N_to_1" in r else f"; {r.get('note', '')}")
    if part == "paper_epoch":
        return (f"{r['epoch_seconds']:.1f} s for {r['iterations']} iterations of PGD-{r['pgd_steps']} "
                f"({r['epoch_images']} images, {r['precision']}, {r['device_name']}); {r['paper_epochs']} epochs "
                f"~ {r['extrapolated_seconds'] / 60:.1f} min" + (f". Note: {r['note']}" if r.get("note") else ""))
    if part == "smoke_stages":
        return (f"{len(r.get('ran', []))} of {len(r.get('stages', []))} stages through {r['runner']} on "
                f"{r['device']} in {r.get('seconds', '?')} s")
    return ""


# ----------------------------------------------------------------------------------------------------------
# --prepare: the bundle a machine without the data and internet needs

def prepare(opts) -> int:
    """Gzipped MNIST and the wheels (torchattacks; DVC's closure with --prepare-dvc) under .devcheck/."""
    from importlib import metadata

    mnist, wheels = Path(opts.mnist), Path(opts.wheels)
    mnist.mkdir(parents=True, exist_ok=True)
    wheels.mkdir(parents=True, exist_ok=True)
    offline = ROOT / "data" / "offline" / "mnist"
    for name in MNIST_FILES:
        target = mnist / f"{name}.gz"
        if not target.is_file():
            src = offline / name
            if not src.is_file():
                raise SystemExit(f"{src} is missing: run `make data` first")
            target.write_bytes(gzip.compress(src.read_bytes(), compresslevel=6))
    pip = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(wheels)]
    subprocess.run([*pip, "--no-deps", f"torchattacks=={metadata.version('torchattacks')}"], check=True)
    if opts.prepare_dvc:   # the GPU machine's Python (3.12, manylinux x86-64), dependencies resolved for it
        target = ["--python-version", "3.12", "--implementation", "cp", "--abi", "cp312", "--platform",
                  "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64", "--platform",
                  "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
        # hydra-core (a DVC dependency) pins antlr4-python3-runtime 4.9.*, published as a source archive only:
        # its wheel is built here (pure Python), where pip download --only-binary finds it
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                        f"antlr4-python3-runtime=={metadata.version('antlr4-python3-runtime')}"], check=True)
        subprocess.run([*pip, *target, "--find-links", str(wheels), f"dvc=={metadata.version('dvc')}",
                        "ruamel.yaml.clib"], check=True)
        for whl in wheels.glob("*.whl"):   # never the machine's torch or CUDA
            if NEVER_INSTALL.match(whl.name.split("-")[0].lower()):
                whl.unlink()
    size = {folder: sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20 for folder in (mnist, wheels)}
    print(f"{mnist}: {size[mnist]:.1f} MiB; {wheels}: {size[wheels]:.1f} MiB in {len(list(wheels.glob('*.whl')))} "
          f"wheels. The working tree that travels (tracked files, untracked ones not ignored, carried paths) must "
          f"stay under 64 MiB in all")
    print("then: echo /.devcheck/ >> .git/info/exclude, and on the GPU machine (tool `run`, carry [\".devcheck\"]):\n"
          "  PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --out $OUT")
    return 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or str(BENCH / "device_check_out"),
                        help="folder for device_check.json, .md and .log (default: $OUT, else %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="every part on the CPU in seconds (the test's mode)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (not with --tiny)")
    parser.add_argument("--parts", default="", help=f"comma-separated subset of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--limit", action="append", default=[], metavar="PART=SECONDS",
                        help="another wall-time limit for a part (defaults: " +
                        ", ".join(f"{p} {s} s" for p, s in LIMITS.items()) + f"; --tiny {TINY_LIMIT} s each)")
    parser.add_argument("--budget", type=float, default=0,
                        help=f"seconds for all parts together (default {BUDGET}; --tiny {TINY_BUDGET})")
    parser.add_argument("--wheels", default=str(BUNDLE / "wheels"),
                        help="wheel folder for a missing torchattacks or dvc (pip --no-index --find-links)")
    parser.add_argument("--mnist", default=str(BUNDLE / "mnist"),
                        help="MNIST's four IDX files (raw or .gz), used where data/offline/mnist lacks them")
    parser.add_argument("--jobs", type=int, default=0,
                        help="parts run at once (default 1; --tiny: 2, its timings mean nothing anyway)")
    parser.add_argument("--no-dvc", action="store_true", help="run the smoke stages without DVC even if it is there")
    parser.add_argument("--prepare", action="store_true", help="build the bundle (MNIST .gz, wheels) and stop")
    parser.add_argument("--prepare-dvc", action="store_true", help="with --prepare: DVC's wheels for Python 3.12 too")
    parser.add_argument("--plant-fault", action="append", default=[], help=argparse.SUPPRESS)  # PART[=raise|hang]
    parser.add_argument("--run-part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    opts.argv = sys.argv[1:] if argv is None else list(argv)
    if opts.run_part:
        return run_part(opts)
    if opts.prepare:
        return prepare(opts)
    return run_parent(opts)


if __name__ == "__main__":
    sys.exit(main())
