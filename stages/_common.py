"""What the evaluation stages (evaluate, robustness, knn_eval) share: the sanity gate and the metrics write."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import click
import torch

from aaa_core.io import write_json
from aaa_core.evaluation.checks import Check, SanityError, enforce

def mean(flags: torch.Tensor) -> float:
    """Accuracy from per-example "still correct" flags."""
    return flags.float().mean().item()


def enforce_checks(checks: Sequence[Check], name: str) -> None:
    """Stop the stage, writing nothing, when a sanity check failed; the message names the pipeline."""
    try:
        enforce(checks)
    except SanityError as err:
        raise click.ClickException(f"{name}: {err}") from None


def write_metrics(metrics: dict, path: Path, start: float) -> None:
    """Record the stage's wall time (from ``start``, a ``time.perf_counter()``) and write the metrics file."""
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_json(metrics, path)
