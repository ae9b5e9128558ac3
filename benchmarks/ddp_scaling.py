"""DDP scaling: training images per second with 1 and N processes (torchrun + DistributedDataParallel).

The same Madry training (MNIST DNN, PGD-``--steps`` training attack, global batch ``--batch``) on synthetic
images, run by ``aaa_core.training.loops.fit`` under torchrun with 1 and with N processes (gloo on the CPU, where
the cores are shared among the processes: each gets cores / N threads; NCCL with one GPU each on CUDA).
Prints images per second of each and the ratio N / 1, from runs in this one invocation.
Run: ``.venv/bin/python benchmarks/ddp_scaling.py --nproc 2``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    from aaa_core import distributed
    from aaa_core.attacks import PGDConfig
    from aaa_core.models import build
    from aaa_core.runtime import resolve_device
    from aaa_core.training.loops import TrainConfig, train_classifier, training_attack

    device = distributed.init(resolve_device(args.device))
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.iterations
    x = torch.rand(n + 64, 1, 28, 28, generator=g).to(device)
    y = torch.randint(0, 10, (n + 64,), generator=g).to(device)
    torch.manual_seed(0)
    model = build("mnist", "dnn").to(device)
    cfg = TrainConfig(epochs=2, batch_size=args.batch, lr=0.002, lr_patience=5, seed=0, bf16=args.bf16)
    attack = training_attack(PGDConfig(eps=0.3, alpha=0.04, steps=args.steps))
    history = train_classifier(model, x[:n], y[:n], x[n:], y[n:], cfg, attack=attack, log=lambda _: None)
    if distributed.is_main():   # epoch 2 only: epoch 1 warms up (allocator, threads, DDP buckets)
        print(f"RESULT {n / history[1]['seconds']:.1f}", flush=True)
    distributed.finish()


def launch(nproc: int, args) -> float:
    threads = max(1, (os.cpu_count() or 1) // nproc) if not torch.cuda.is_available() else 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "AAA_PROGRESS": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, "--worker", "--batch", str(args.batch), "--iterations", str(args.iterations),
           "--steps", str(args.steps), "--device", args.device] + (["--bf16"] if args.bf16 else [])
    start = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    print(f"  {nproc} process(es), {threads} thread(s) each: {time.perf_counter() - start:.0f} s with start-up",
          flush=True)
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("RESULT")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--iterations", type=int, default=20, help="optimizer iterations per epoch")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    print(f"Madry training, MNIST DNN, global batch {args.batch}, PGD-{args.steps}, {args.iterations} iterations "
          f"timed (the second epoch), device {args.device}, {'bf16' if args.bf16 else 'float32'}, "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    one = launch(1, args)
    many = launch(args.nproc, args)
    print(f"{'processes':>10s} {'images/s':>10s} {'ratio to 1':>11s}")
    print(f"{1:>10d} {one:10.1f} {1.0:11.2f}")
    print(f"{args.nproc:>10d} {many:10.1f} {many / one:11.2f}")


if __name__ == "__main__":
    main()
