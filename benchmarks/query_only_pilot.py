"""Where does query-only AAA lose to white-box AAA? One MNIST AE trained several ways at the study's AE budget.

Each way trains the headline AE (ce_mse, mse weight 10, latent 128, one warm epoch) against the frozen natural DNN
for 3 epochs of 6,000 images, batch 64, PGD-3 at eps 0.3 (step 0.15, ramp 100), seed 0, and is then scored on the
validation split (the split the black-box study's knobs are chosen on): natural accuracy on its 1,000 images and
white-box PGD-40 (step 0.01, one random start) through AE + DNN on the first --examples. The ways differ in the
training attack (white-box, or transferred from a surrogate fitted to the DNN's answers, one query per training and
validation image: its labels, or its logits distilled) and in the AE's update:

    white            attack white-box,  update white-box (the reference)
    labels<E>        attack surrogate,  update surrogate, the surrogate fitted to labels for E epochs (default 1)
    scores<E>        attack surrogate,  update surrogate, the surrogate distilled from logits for E epochs
    ball<E>          the same, the surrogate also asked at a random point of each training image's eps-ball
    pick<K>          the same as scores, the surrogate picked among K initialisations (torch seeds 0..K-1) by its
                     input-gradient cosine with the DNN on the validation images PGD-40 does not score
    ens<K>           attack and update through an ensemble of K such surrogates (seeds 0..K-1), one drawn per batch
                     (train_ae's ensemble, as AAA against several classifiers)
    surattack        attack surrogate,  update white-box (what the transferred attack alone costs)
    hybrid<W>        attack surrogate,  update SurrogateBlend: W/100 surrogate + the rest latent CGE on K images
    cge              attack surrogate,  update latent CGE alone on K images a batch
    cgewhiteattack   attack white-box,  update latent CGE alone on K images a batch

surattack, hybrid and cge use the surrogate --fit names (without the ball). Each row also gives the surrogate's input-gradient cosine
with the DNN's (mean over the validation images scored) and the AE training's queries (update and validation) per
training image; fitting the surrogate costs one more query per training and validation image wherever one is used.

Run from the repository root after the study's MNIST data and DNN exist (`dvc repro train_classifier@mnist-dnn`):
`.venv/bin/python benchmarks/query_only_pilot.py --ways white,labels,scores,hybrid75 --k 8` (one to three minutes
per way on 2 CPU cores, pick and ens about K times longer to fit their surrogates; one seed, so about +-4 points on 500 examples: a pilot, not a verdict, which the black-box
study makes).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from aaa_core.attacks import PGDConfig
from aaa_core.evaluation.flags import correct_flags, robust_flags
from aaa_core.models import Defended, build
from aaa_core.training.loops import TrainConfig, pretrain_ae, train_ae, training_attack
from aaa_core.training.losses import get_loss
from aaa_core.training.query_only import (LatentAE, LatentZeroOrder, QueryOnly, SurrogateBlend, ThroughLatent,
                                          input_gradient_cosine, train_surrogate, transferred)
from _mnist_study import mnist_study   # this script's folder is on sys.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ways", default="white,labels,scores,surattack,hybrid75")
    parser.add_argument("--fit", choices=("labels", "scores"), default="scores",
                        help="the surrogate of the surattack, hybrid and cge ways")
    parser.add_argument("--examples", type=int, default=500, help="validation images PGD-40 is scored on")
    parser.add_argument("--k", type=int, default=8, help="images per batch the latent estimate covers")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    _, dnn, (x, y), (x_val, y_val) = mnist_study(args.threads)
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.002, lr_patience=5, seed=0, bf16=False, epoch_images=6000,
                      eps_ramp=100, augment=False)
    loss, attack = get_loss("ce_mse", 10.0), training_attack(PGDConfig(eps=0.3, alpha=0.15, steps=3))
    print(f"{'way':<16} {'natural':>8} {'PGD-40':>7} {'train s':>8} {'surrogate cosine':>17} "
          f"{'AE-training queries per image':>30}")
    for way in args.ways.split(","):
        torch.manual_seed(0)
        ae = build("mnist", "ae", latent_dim=128)
        pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=1, eps_ramp=0), log=lambda _: None)
        box = QueryOnly(dnn)
        surrogate, cosine = None, "-"

        def scores_surrogates(k: int) -> list:
            """k scores surrogates, initialised from torch seeds 0..k-1."""
            fitted = []
            for seed in range(k):
                torch.manual_seed(seed)
                fitted.append(train_surrogate(box, build("mnist", "dnn"), x, x_val,
                                              dataclasses.replace(cfg, epochs=1, epoch_images=0, eps_ramp=0),
                                              log=lambda _: None)[0])
            return fitted

        ensemble = None
        if way.startswith("ens"):
            ensemble = scores_surrogates(int(way[3:] or 3))
            cosine = " / ".join(f"{input_gradient_cosine(m, dnn, x_val[:args.examples], y_val[:args.examples]):.2f}"
                                for m in ensemble)
        elif way.startswith("pick"):
            candidates = [(input_gradient_cosine(c, dnn, x_val[args.examples:], y_val[args.examples:]), seed, c)
                          for seed, c in enumerate(scores_surrogates(int(way[4:] or 3)))]
            held_out, seed, surrogate = max(candidates, key=lambda c: c[0])
            print(f"{way}: held-out cosines " + ", ".join(f"seed {s} {c:.3f}" for c, s, _ in candidates)
                  + f"; picked seed {seed}", flush=True)
            cosine = f"{input_gradient_cosine(surrogate, dnn, x_val[:args.examples], y_val[:args.examples]):.3f}"
        elif way != "white":
            fit, epochs, ball = args.fit, 1, 0.0
            for named in ("labels", "scores", "ball"):
                if way.startswith(named):
                    fit, epochs = ("scores" if named == "ball" else named), int(way[len(named):] or 1)
                    ball = 0.3 if named == "ball" else 0.0
            surrogate, _ = train_surrogate(box, build("mnist", "dnn"), x, x_val,
                                           dataclasses.replace(cfg, epochs=epochs, epoch_images=0, eps_ramp=0),
                                           fit=fit, ball=ball, log=lambda _: None)
            cosine = f"{input_gradient_cosine(surrogate, dnn, x_val[:args.examples], y_val[:args.examples]):.3f}"
        before, start = box.queries, time.perf_counter()
        estimate = ThroughLatent(LatentZeroOrder(ae.decoder, box, smoothing=0.01), estimate_images=args.k)
        targets = None
        if way == "white":
            trained, target, way_attack = ae, dnn, attack
        elif ensemble is not None:
            trained, target, targets, way_attack = ae, None, ensemble, attack
        elif way.startswith(("labels", "scores", "ball", "pick")):
            trained, target, way_attack = ae, surrogate, attack
        elif way == "surattack":
            trained, target, way_attack = ae, dnn, transferred(attack, surrogate)
        elif way.startswith("hybrid"):
            weight = int(way[6:] or 50) / 100
            trained, target, way_attack = LatentAE(ae), SurrogateBlend(estimate, surrogate, weight), \
                transferred(attack, surrogate)
        elif way == "cge":
            trained, target, way_attack = LatentAE(ae), estimate, transferred(attack, surrogate)
        elif way == "cgewhiteattack":
            trained, target, way_attack = LatentAE(ae), estimate, attack
        else:
            raise SystemExit(f"--ways: unknown way {way!r}")
        train_ae(trained, targets or [target], loss, x, y, x_val, y_val, cfg, attack=way_attack, log=lambda _: None)
        seconds = time.perf_counter() - start
        ae.eval()
        pipeline = Defended(ae, dnn)
        natural = correct_flags(pipeline, x_val, y_val).float().mean().item()
        pgd = robust_flags(pipeline, x_val[:args.examples], y_val[:args.examples],
                           PGDConfig(eps=0.3, alpha=0.01, steps=40))[40]
        spent = (box.queries - before) / (cfg.epochs * cfg.epoch_images)
        print(f"{way:<16} {natural:>8.3f} {pgd.float().mean().item():>7.3f} {seconds:>8.0f} {cosine:>17} "
              f"{spent:>30.1f}", flush=True)


if __name__ == "__main__":
    main()
