"""DDP on the CPU (gloo, 2 processes under torchrun): the same training as one process, and resume.

The CUDA path (NCCL, SyncBatchNorm, one GPU per process) is the same code with another backend; it runs
only where a GPU is (the marked test at the end).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aaa_core import distributed

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "helpers" / "ddp_worker.py"
sys.path.insert(0, str(WORKER.parent))
import ddp_worker  # noqa: E402


def torchrun(nproc: int, *args, check: bool = True, device: str = "cpu") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "AAA_PROGRESS": "0",
           "AAA_TEST_DEVICE": device}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", str(WORKER), *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    torchrun(2, tmp_path / "ddp.pt", "natural")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    ddp_worker.main(str(tmp_path / "one.pt"), "natural")      # one process, in this one
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    for name in one:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-5, msg=f"{name} differs")
    # the comparison can fail: one process with each rank's batch (16), not the global one, differs
    ddp_worker.main(str(tmp_path / "half.pt"), "natural", "", 16)
    half = torch.load(tmp_path / "half.pt", weights_only=True)
    assert any(not torch.allclose(ddp[k], half[k], rtol=1e-4, atol=1e-5) for k in one)


def test_a_killed_ddp_run_resumes_where_it_stopped(tmp_path):
    whole = tmp_path / "whole.pt"
    torchrun(2, whole, "adversarial", tmp_path / "state_whole")
    killed = tmp_path / "killed.pt"
    crashed = torchrun(2, killed, "adversarial-crash", tmp_path / "state", check=False)
    assert crashed.returncode != 0 and not killed.exists()
    assert list((tmp_path / "state").iterdir()), "no resume state was written before the kill"
    torchrun(2, killed, "adversarial-crash", tmp_path / "state")   # resumes after epoch 1: no second crash
    a, b = torch.load(whole, weights_only=True), torch.load(killed, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run differs from the uninterrupted one"


def test_with_one_process_the_helpers_are_the_identity():
    batch = torch.arange(10)
    assert distributed.world_size() == 1 and distributed.is_main()
    assert torch.equal(distributed.shard(batch), batch) and distributed.mean(2.5) == 2.5
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model and distributed.gather(3) == [3]


def test_a_stage_relaunches_itself_under_torchrun_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "execv", lambda exe, args: calls.append(args))
    monkeypatch.delenv(distributed.TORCHRUN_ENV, raising=False)
    distributed.relaunch(1, "stages.train_classifier")
    assert calls == []
    distributed.relaunch(2, "stages.train_classifier")
    assert calls[0][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert calls[0][6] == "stages.train_classifier"
    monkeypatch.setenv(distributed.TORCHRUN_ENV, "x")
    distributed.relaunch(2, "stages.train_classifier")
    assert len(calls) == 1


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_train_like_one(tmp_path, monkeypatch):
    torchrun(2, tmp_path / "ddp.pt", "natural", device="cuda")
    monkeypatch.setenv("AAA_TEST_DEVICE", "cuda")
    ddp_worker.main(str(tmp_path / "one.pt"), "natural")
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    for name in one:   # NCCL and cuBLAS reduce in other orders than one GPU: a looser tolerance
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-3, atol=1e-4, msg=f"{name} differs")
