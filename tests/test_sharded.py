"""Evaluation sharded over processes (aaa_core.evaluation.sharded) gives the one-process flags, example for example.

In one process: each rank's part, computed here rank by rank and put together, equals aaa_core.evaluation.flags's
one-process functions; a planted fault (ranks that do not make the draws of the batches they skip) breaks it.
Under torchrun: 2 gloo processes give exactly what 1 process gives.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aaa_core.evaluation import flags as evaluate, sharded

HELPERS = Path(__file__).resolve().parent / "helpers"
sys.path.insert(0, str(HELPERS))
import sharded_worker as w  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def reference():
    model, x, y = w.model_and_data()
    return model, x, y, w.evaluate(model, x, y, evaluate)


def assembled(parts_by_rank: list[dict[int, torch.Tensor]]) -> torch.Tensor:
    merged: dict[int, torch.Tensor] = {}
    for part in parts_by_rank:
        assert not merged.keys() & part.keys(), "two ranks attacked the same batch"
        merged.update(part)
    return torch.cat([merged[i] for i in sorted(merged)])


def by_ranks(model, x, y, world):
    robust = [sharded.local_robust_flags(model, x, y, w.ATTACK, record_at=[1], seed=5, batch_size=w.BATCH,
                                         rank=r, world=world) for r in range(world)]
    return {"robust1": assembled([p[1] for p in robust]), "robust2": assembled([p[2] for p in robust]),
            "transfer": assembled([sharded.local_transfer_flags(model, model, x, y, w.ATTACK, seed=6,
                                                                batch_size=w.BATCH, rank=r, world=world)
                                   for r in range(world)]),
            "predictions": assembled([sharded.local_predictions(model, x, batch_size=w.BATCH, rank=r, world=world)
                                      for r in range(world)])}


def test_the_batches_are_the_one_process_runs():
    # the batch decides the random draws: sharded.BATCH must be aaa_core.evaluation.flags's batch size
    import inspect
    for fn in (evaluate.robust_flags, evaluate.transfer_flags, evaluate.predictions, evaluate.correct_flags):
        assert inspect.signature(fn).parameters["batch_size"].default == sharded.BATCH, fn.__name__


def test_one_process_is_the_plain_evaluation():
    model, x, y, ref = reference()
    assert 0 < ref["robust2"].sum() < len(x), "the attack must fool some examples and miss others"
    assert not torch.equal(ref["robust1"], ref["robust2"])
    ours = w.evaluate(model, x, y, sharded)
    for name in ref:
        assert torch.equal(ours[name], ref[name]), name


@pytest.mark.parametrize("world", [2, 3, 11])   # 11 ranks for 10 batches: one rank attacks nothing
def test_every_rank_split_gives_the_one_process_flags(world):
    model, x, y, ref = reference()
    ours = by_ranks(model, x, y, world)
    for name in ours:
        assert torch.equal(ours[name], ref[name]), f"{name} with {world} ranks"


def test_ranks_that_skip_the_draws_of_other_batches_would_change_the_numbers(monkeypatch):
    model, x, y, ref = reference()
    monkeypatch.setattr(sharded, "_skip_random_start", lambda *a: None)   # the planted fault
    ours = by_ranks(model, x, y, 2)
    assert not torch.equal(ours["robust2"], ref["robust2"]) and not torch.equal(ours["transfer"], ref["transfer"])


def torchrun(nproc: int, out: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "AAA_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           str(HELPERS / "sharded_worker.py"), str(out)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_gloo_processes_give_exactly_the_one_process_flags(tmp_path):
    torchrun(1, tmp_path / "one.pt")
    torchrun(2, tmp_path / "two.pt")
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name], two[name]), name
    _, _, _, ref = reference()   # and both are the plain evaluation's
    assert all(torch.equal(one[name], ref[name]) for name in ref)
