"""PGD throughput on the MNIST AE + DNN pipeline: ours against torchattacks and a bare forward+backward.

Prints image-steps per second (images x PGD steps / wall time) for each, and the ratios to ours, all
measured in this one process on the same model, batch, device and thread count (``--device auto``: the
GPU when there is one). Untrained weights: the cost of
an attack step does not depend on them. Run: `make bench` or `.venv/bin/python benchmarks/pgd_throughput.py`.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchattacks

from aaa_core.attacks import pgd
from aaa_core.models import Defended, build
from aaa_core.runtime import device_name, generator, resolve_device


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def rate(fn, images: int, steps: int, repeats: int) -> float:
    fn()  # warm-up
    _sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return images * steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = Defended(build("mnist", "ae"), build("mnist", "dnn")).to(device).eval()
    x = torch.rand(args.batch, 1, 28, 28).to(device)
    y = torch.randint(0, 10, (args.batch,)).to(device)
    eps, alpha = 0.3, 0.01

    def ours():
        pgd(model, x, y, eps=eps, alpha=alpha, steps=args.steps, generator=generator(0, device))

    def ours_bf16():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            ours()

    reference = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=args.steps, random_start=True)

    def theirs():
        reference(x, y)

    def bare():
        for _ in range(args.steps):
            xa = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xa), y)
            torch.autograd.grad(loss, xa)

    results = {name: rate(fn, args.batch, args.steps, args.repeats)
               for name, fn in [("aaa pgd (float32)", ours), ("torchattacks PGD 3.5.1 (float32)", theirs),
                                ("bare forward+backward (float32)", bare), ("aaa pgd (bfloat16 autocast)", ours_bf16)]}
    base = results["aaa pgd (float32)"]
    print(f"MNIST AE + DNN on {device} ({device_name(device)}), batch {args.batch}, {args.steps} steps, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, best of {args.repeats}")
    print(f"{'attack':36s} {'image-steps/s':>14s} {'ours / this':>12s}")
    for name, value in results.items():
        print(f"{name:36s} {value:14.0f} {base / value:12.2f}")


if __name__ == "__main__":
    main()
