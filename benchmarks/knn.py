"""Exact kNN latent search at Fashion-MNIST size: time, and its ratio to this machine's matrix-product rate.

Default: 10,000 queries against 60,000 bank latents of 7*7*256 = 12,544 dimensions (the paper's
Fashion-MNIST AE), k = 10, float32: about 15 TFLOP of matrix product. Random latents: the cost does not
depend on the values. The reference rate is a plain float32 ``torch.mm`` of the chunk's shape, timed in
this same process. Run: `.venv/bin/python benchmarks/knn.py` (add --queries 1000 for a quick look).
"""
from __future__ import annotations

import argparse
import time

import torch

from aaa_core.evaluation.knn import knn_indices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--bank", type=int, default=60_000)
    parser.add_argument("--dim", type=int, default=7 * 7 * 256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=1024)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    bank = torch.randn(args.bank, args.dim, generator=g)
    queries = torch.randn(args.queries, args.dim, generator=g)

    a, b = queries[:args.chunk], bank[:8192].T.contiguous()
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(3):
        torch.mm(a, b)
    mm_rate = 3 * 2 * a.shape[0] * a.shape[1] * b.shape[1] / (time.perf_counter() - start)

    start = time.perf_counter()
    idx = knn_indices(queries, bank, args.k, chunk=args.chunk)
    seconds = time.perf_counter() - start
    flop = 2 * args.queries * args.bank * args.dim
    print(f"exact kNN: {args.queries} queries x {args.bank} latents x {args.dim} dims, k={args.k}, float32, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"  time                      {seconds:8.1f} s   ({flop / 1e12:.1f} TFLOP)")
    print(f"  kNN rate                  {flop / seconds / 1e9:8.1f} GFLOP/s")
    print(f"  matrix-product rate       {mm_rate / 1e9:8.1f} GFLOP/s (torch.mm, same process)")
    print(f"  kNN / matrix product      {flop / seconds / mm_rate:8.2f}")
    assert idx.shape == (args.queries, args.k)


if __name__ == "__main__":
    main()
