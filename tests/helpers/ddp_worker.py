"""Run under torchrun by tests/test_distributed.py: a small training on synthetic data, in N processes.

Usage: ddp_worker.py OUT MODE [RESUME_ROOT]; AAA_TEST_DEVICE=cuda trains on GPUs (one per process); MODE is natural, adversarial or adversarial-crash (the last one
dies right after rank 0 saved the state of epoch 1, like a killed job). Rank 0 saves the final weights to OUT.
"""
import os
import sys

import torch

from aaa_core import distributed
from aaa_core.attacks import PGDConfig
from aaa_core.models import build
from aaa_core.runtime import Resume
from aaa_core.training.loops import TrainConfig, train_classifier, training_attack


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(256, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (256,), generator=g)
    return x, y


def main(out: str, mode: str, root: str = "", batch_size: int = 32) -> None:
    device = distributed.init(torch.device(os.environ.get("AAA_TEST_DEVICE", "cpu")))
    x, y = (t.to(device) for t in data())
    torch.manual_seed(0)
    model = build("mnist", "fc").to(device)
    adversarial = mode.startswith("adversarial")
    cfg = TrainConfig(epochs=2 if adversarial else 1, batch_size=batch_size, lr=0.002, lr_patience=5, seed=0,
                      eps_ramp=4 if adversarial else 0)
    attack = training_attack(PGDConfig(eps=0.3, alpha=0.1, steps=2)) if adversarial else None
    kwargs = {}
    if root:
        resume = Resume(out, root=root)
        saver = resume.saver({"test": 1})

        def save(state):
            saver(state)
            if mode == "adversarial-crash" and len(state["history"]) == 1:
                os._exit(3)

        kwargs = {"resume": resume.load({"test": 1}), "save_state": save}
    train_classifier(model, x[:224], y[:224], x[224:], y[224:], cfg, attack=attack, log=lambda _: None, **kwargs)
    if distributed.is_main():
        torch.save(model.state_dict(), out)
    distributed.finish()


if __name__ == "__main__":
    main(*sys.argv[1:])
