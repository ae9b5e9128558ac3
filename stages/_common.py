"""What the evaluation stages (evaluate, robustness, knn_eval, certify, autoattack) share: the NAME=SPEC options,
the sanity gate and the metrics write."""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Sequence

import click
import torch

from aaa_core.io import write_json
from aaa_core.evaluation.checks import Check, SanityError, enforce

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")   # a pipeline's name: it names its output files


def named_specs(items: Sequence[str], option: str) -> dict[str, str]:
    """The ``option``'s NAME=SPEC items (SPEC: CLASSIFIER.pt or AE.pt+CLASSIFIER.pt, for
    ``aaa_core.models.checkpoints.load_pipeline``) as {name: spec}, in the order given. A malformed item (no
    '=', an empty SPEC, a NAME other than letters, digits, '_', '.' and '-') or a NAME given twice is a usage
    error naming ``option``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not spec or not NAME.fullmatch(name):
            raise click.BadParameter(f"{item!r}: expected NAME=CLASSIFIER.pt or NAME=AE.pt+CLASSIFIER.pt, NAME made "
                                     "of letters, digits, '_', '.' and '-'", param_hint=option)
        if name in out:
            raise click.BadParameter(f"{name!r} is given twice", param_hint=option)
        out[name] = spec
    return out


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
