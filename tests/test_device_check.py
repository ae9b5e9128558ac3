"""benchmarks/device_check.py, the one prepared check for a GPU machine, kept from rotting on the CPU.

Its ``--tiny`` mode runs every part (CUDA tests, PGD throughput, DDP scaling, a paper-scale epoch, smoke stages)
on the CPU in seconds; a planted fault and a planted hang show that a part that fails is recorded as failed,
with its error line, while the others still run. No timing is checked: tiny timings mean nothing.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aaa_core.config import load_params

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
sys.path.insert(0, str(SCRIPT.parent))
import device_check  # noqa: E402


def tiny(out: Path, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--out", str(out), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "device_check.md").is_file() and (out / "device_check.log").is_file()
    return json.loads((out / "device_check.json").read_text())


def test_tiny_mode_runs_every_part_and_records_its_status(tmp_path):
    report = tiny(tmp_path / "out")
    parts = report["parts"]
    assert set(parts) == set(device_check.PARTS)
    failed = {name: part.get("error") for name, part in parts.items() if part["status"] not in ("ok", "skipped")}
    assert not failed, failed
    # no GPU in --tiny: the CUDA tests are selected (this repo marks them skipif ... "needs ... CUDA ...") but not run
    cuda = parts["cuda_tests"]
    assert cuda["status"] == "skipped" and re.search(r"\(\d+ CUDA tests selected: test_", cuda["reason"])
    for name in ("pgd_throughput", "ddp_scaling", "paper_epoch", "smoke_stages"):
        assert parts[name]["status"] == "ok", (name, parts[name])
    for pipeline in parts["pgd_throughput"]["result"]["pipelines"].values():
        assert set(pipeline["ratios"]) == {"ours/torchattacks float32", "ours/torchattacks bfloat16",
                                           "ours/bare float32", "ours bfloat16/float32"}
    assert set(parts["pgd_throughput"]["result"]["pipelines"]) == {"mnist", "cifar10"}
    assert list(parts["ddp_scaling"]["result"]["images_per_s"]) == ["1"]
    epoch = parts["paper_epoch"]["result"]
    paper = dataclasses.replace(load_params(ROOT / "params.yaml"), scale="paper")
    assert epoch["paper_epochs"] == paper.section("adversarial", "mnist").epochs
    assert epoch["extrapolated_seconds"] == pytest.approx(epoch["epoch_seconds"] * epoch["paper_epochs"], abs=1)
    stages = parts["smoke_stages"]["result"]
    assert stages["ran"] == stages["stages"] == ["prepare_data@mnist", "train_classifier@mnist-fc"]
    markdown = (tmp_path / "out" / "device_check.md").read_text()
    assert all(title in markdown for title in device_check.TITLES.values())


def test_a_part_that_fails_or_hangs_is_recorded_and_the_others_still_run(tmp_path):
    report = tiny(tmp_path / "out", "--parts", "pgd_throughput,ddp_scaling,paper_epoch", "--plant-fault",
                  "pgd_throughput", "--plant-fault", "ddp_scaling=hang", "--limit", "ddp_scaling=3")
    parts = report["parts"]
    assert set(parts) == set(device_check.PARTS)
    assert parts["pgd_throughput"]["status"] == "failed"
    assert parts["pgd_throughput"]["error"] == "RuntimeError: planted fault in pgd_throughput"
    assert parts["ddp_scaling"]["status"] == "failed" and parts["ddp_scaling"]["error"].startswith("timed out after 3 s")
    assert parts["paper_epoch"]["status"] == "ok"
    assert all(parts[p]["status"] == "skipped" and "not selected" in parts[p]["reason"]
               for p in ("cuda_tests", "smoke_stages"))
    markdown = (tmp_path / "out" / "device_check.md").read_text()
    assert "planted fault in pgd_throughput" in markdown and "timed out after 3 s" in markdown


def test_the_stages_without_dvc_are_dvcs_in_dag_order():
    """The fallback runner expands dvc.yaml itself: the same commands, deps and outs as DVC's, in DAG order."""
    repo_mod = pytest.importorskip("dvc.repo")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    mine = device_check.expand_stages(ROOT / "dvc.yaml", params)
    theirs = [s for s in repo_mod.Repo(str(ROOT)).index.stages if getattr(s, "path_in_repo", "") == "dvc.yaml"]
    assert set(mine) == {s.name for s in theirs}
    for stage in theirs:
        ours = mine[stage.name]
        assert ours["cmd"].split() == stage.cmd.split(), stage.name
        assert sorted(ours["deps"]) == sorted(d.def_path for d in stage.deps if type(d).__name__ != "ParamsDependency")
        assert sorted(ours["outs"]) == sorted(o.def_path for o in stage.outs), stage.name
    order = device_check.stage_order(mine, device_check.STUDY_TARGETS)
    assert all(re.search(r"@mnist(-|$)", name) for name in order) and "report@mnist" in order
    for position, name in enumerate(order):
        for dep in mine[name]["deps"]:
            producers = [other for other in mine if other != name
                         and any(device_check._overlaps(dep, out) for out in mine[other]["outs"])]
            assert all(p in order[:position] for p in producers), (name, dep, producers)
