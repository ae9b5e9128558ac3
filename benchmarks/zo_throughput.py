"""The price of query-only access: PGD through MNIST AE + DNN with zeroth-order gradients against white-box PGD.

Prints, measured in this one process on the same models, batch and thread count: image-steps per second
of white-box PGD (float32), of zeroth-order PGD for several direction counts q (each step: one query for
the forward pass and q for the gradient estimate), the ratio of each to white-box, and the black box's
queries per second. Untrained weights: the cost of a step does not depend on them.
Run: `.venv/bin/python benchmarks/zo_throughput.py`.
"""
from __future__ import annotations

import argparse

import torch
from pgd_throughput import rate   # the same best-of-repeats timing (this script's folder is on sys.path)

from aaa_core.attacks import pgd
from aaa_core.training.query_only import QueryOnly, ZeroOrder
from aaa_core.models import Defended, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--directions", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    ae, dnn = build("mnist", "ae"), build("mnist", "dnn")
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    def attack(model):
        return lambda: pgd(model, x, y, eps=0.3, alpha=0.04, steps=args.steps,
                           generator=torch.Generator().manual_seed(0))

    white = rate(attack(Defended(ae, dnn).eval()), args.batch, args.steps, args.repeats)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, PGD-{args.steps}")
    print(f"{'white-box PGD':28s} {white:9.0f} image-steps/s   1.00x")
    for q in args.directions:
        box = QueryOnly(dnn)
        model = Defended(ae, ZeroOrder(box, directions=q, smoothing=0.005)).eval()
        zo = rate(attack(model), args.batch, args.steps, args.repeats)
        per_image = box.queries / (args.repeats + 1) / args.batch    # rate runs a warm-up, then the repeats
        print(f"{f'zeroth-order PGD, q={q}':28s} {zo:9.0f} image-steps/s   {zo / white:.3f}x   "
              f"{per_image * zo / args.steps:8.0f} queries/s   {per_image:.0f} queries per image")


if __name__ == "__main__":
    main()
