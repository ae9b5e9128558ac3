"""Run under torchrun by tests/test_sharded.py: the evaluation attacks of aaa_core.evaluation.sharded on a small model and
synthetic data, in N processes. Usage: sharded_worker.py OUT; every rank checks it holds the whole result, rank 0
saves {name: tensor} to OUT."""
import sys

import torch

from aaa_core import distributed
from aaa_core.evaluation import sharded
from aaa_core.attacks import PGDConfig


def model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(150, 1, 8, 8, generator=g)
    y = model(x).argmax(1).detach()     # every example starts correct: the attack decides every flag
    return model, x, y


ATTACK = PGDConfig(eps=0.3, alpha=0.02, steps=2, restarts=2)   # short steps: the random start decides many flags
BATCH = 16                                                      # 150 rows: 10 batches, the last one short


def evaluate(model, x, y, api) -> dict[str, torch.Tensor]:
    """The protocol's four calls through ``api`` (aaa_core.evaluation.sharded, or aaa_core.evaluation.flags for the reference)."""
    flags = api.robust_flags(model, x, y, ATTACK, record_at=[1], seed=5, batch_size=BATCH)
    return {"robust1": flags[1], "robust2": flags[2],
            "transfer": api.transfer_flags(model, model, x, y, ATTACK, seed=6, batch_size=BATCH),
            "noise": api.noise_flags(model, x, y, 0.3, seed=7),
            "predictions": api.predictions(model, x, BATCH)}


def main(out: str) -> None:
    distributed.init(torch.device("cpu"))
    model, x, y = model_and_data()
    result = evaluate(model, x, y, sharded)
    assert all(len(t) == len(x) for t in result.values()), "a rank is missing rows"
    if distributed.is_main():
        torch.save(result, out)
    distributed.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
