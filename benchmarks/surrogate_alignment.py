"""How well does a surrogate point where the black box's gradient does? The MNIST DNN's surrogates, fitted three ways.

Each surrogate (the DNN's architecture, its own weights, one epoch at the study's batch 64 and lr 0.002) is fitted to
the natural DNN's answers for the study's training and validation split (30,000 + 1,000 images, seed 0):

    labels       its predicted classes (natural training; one query per image)
    scores       its logits, distilled (``score_distance``; one query per image)
    scores+ball  the same, and one more query per training image at a uniform random point of its L-inf ball of
                 eps 0.3 (the threat model's), where the attacks the surrogate stands in for search

and scored on the validation split (never the test set): the mean cosine between its input gradient of the cross-
entropy and the DNN's (``input_gradient_cosine``) on the 1,000 validation images, and at the points that matter in
AAA training: the AE's outputs for PGD-10 adversarial examples (eps 0.3, step 0.05) of the first 500 validation
images through the black-box study's white-box AE + DNN; and the surrogate's agreement with the DNN there. One row
per fit and initialisation seed (the cosine varies with the surrogate's initialisation).

Run from the repository root after the study's MNIST data and DNN and the black-box study's white-box AE exist
(`dvc repro blackbox/dvc.yaml:train_ae_whitebox@mnist`): `.venv/bin/python benchmarks/surrogate_alignment.py
--seeds 0,1,2` (one to two minutes per row on 2 CPU cores).
"""
from __future__ import annotations

import argparse
import time

import torch

from aaa_core.attacks import pgd
from aaa_core.models import Defended, build
from aaa_core.models.checkpoints import load_model
from aaa_core.training.loops import TrainConfig
from aaa_core.training.query_only import QueryOnly, input_gradient_cosine, train_surrogate
from _mnist_study import ROOT, mnist_study   # this script's folder is on sys.path

FITS = {"labels": ("labels", 0.0), "scores": ("scores", 0.0), "scores+ball": ("scores", 0.3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fits", default=",".join(FITS))
    parser.add_argument("--seeds", default="0,1,2", help="initialisation seeds of the surrogate")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _, dnn, (x, _), (x_val, y_val) = mnist_study(args.threads)
    ae, _ = load_model(ROOT / "models/blackbox/mnist/ae_gradient.pt", kind="ae", dataset="mnist")
    cfg = TrainConfig(epochs=1, batch_size=64, lr=0.002, lr_patience=5, seed=0)
    x_adv = pgd(Defended(ae, dnn), x_val[:500], y_val[:500], eps=0.3, alpha=0.05, steps=10,
                generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attacked = ae(x_adv)
        answers = dnn(attacked).argmax(1)
    print(f"{'fit':<12} {'seed':>4} {'queries':>8} {'cosine, val':>12} {'cosine, attacked':>17} "
          f"{'agreement, attacked':>20} {'s':>4}")
    for name in args.fits.split(","):
        fit, ball = FITS[name]
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            start, box = time.perf_counter(), QueryOnly(dnn)
            surrogate, info = train_surrogate(box, build("mnist", "dnn"), x, x_val, cfg, fit=fit, ball=ball,
                                              log=lambda _: None)
            at_val = input_gradient_cosine(surrogate, dnn, x_val, y_val)
            at_attacked = input_gradient_cosine(surrogate, dnn, attacked, y_val[:500])
            with torch.no_grad():
                agreement = (surrogate(attacked).argmax(1) == answers).float().mean().item()
            print(f"{name:<12} {seed:>4} {info['queries']:>8,} {at_val:>12.3f} {at_attacked:>17.3f} "
                  f"{agreement:>20.3f} {time.perf_counter() - start:>4.0f}", flush=True)


if __name__ == "__main__":
    main()
