"""with_seed: run another stage with params.yaml's seed moved by an offset (training replicates).

``python -m stages.with_seed --offset 1 stages.train_ae --dataset mnist ...`` runs
``python -m stages.train_ae --dataset mnist ... --params <copy>``, where <copy> is params.yaml with
``seed`` replaced by seed + offset, in a temporary file removed afterwards. Everything a training stage
draws at random follows that seed: initialisation, batches, the training attack's starts, and the
train/validation split (each replicate holds out another validation set). Evaluation stages of the
replicates read params.yaml itself, so every seed is scored on the same examples by the same attack.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import click
import yaml

from aaa_core.config import ParamsError, load_params
from stages._cli import params_file, run


@click.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--offset", type=click.IntRange(1), required=True, help="Added to params.yaml's seed.")
@params_file()
@click.argument("stage")
@click.argument("stage_args", nargs=-1, type=click.UNPROCESSED)
def main(offset: int, params_path: Path, stage: str, stage_args: tuple[str, ...]) -> None:
    if not stage.startswith("stages.") or not stage.removeprefix("stages.").isidentifier():
        raise click.BadParameter(f"{stage!r}: expected a stage module, e.g. stages.train_ae", param_hint="STAGE")
    if any(a == "--params" or a.startswith("--params=") for a in stage_args):
        raise click.BadParameter("give --params to with_seed, not to the stage", param_hint="STAGE_ARGS")
    load_params(params_path)                      # a bad params file stops here, naming its key
    raw = yaml.safe_load(params_path.read_text())
    if not isinstance(raw.get("seed"), int):
        raise ParamsError(f"{params_path}: seed = {raw.get('seed')!r}: expected an integer")
    raw["seed"] += offset
    fd, name = tempfile.mkstemp(prefix="params-seed", suffix=".yaml")
    try:
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(raw, f, sort_keys=False)
        click.echo(f"{stage}: seed {raw['seed']} ({params_path} seed + {offset})")
        code = subprocess.call([sys.executable, "-m", stage, *stage_args, "--params", name])
    finally:
        os.unlink(name)
    sys.exit(code)


if __name__ == "__main__":
    run(main)
