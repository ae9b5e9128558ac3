"""prepare_data: fetch a dataset from the first source that has it, check it, save uint8 tensors."""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.io import save_torch, write_json
from aaa_core.config import load_params
from aaa_core.data import DataError, fetch
from stages._cli import output_file, run


@click.command()
@click.option("--dataset", required=True, help="Dataset name, e.g. mnist.")
@output_file("--out")
@output_file("--metrics", "metrics_path")
@click.option("--params", "params_path", type=click.Path(dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, out: Path, metrics_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    try:
        tensors, record = fetch(dataset, user_dir=params.data.user_dir, download=params.data.download,
                                offline_dir=params.data.offline_dir, log=click.echo)
    except DataError as err:
        raise click.ClickException(str(err)) from None
    available = {"train": len(tensors["x_train"]), "test": len(tensors["x_test"])}
    kept = dict(zip(available, params.data.sizes(available["train"], available["test"])))
    for split, n in kept.items():   # the first n of each set (params data.train_images, data.test_images)
        if n < available[split]:    # copies: a saved slice would carry the whole set's storage into the file
            for key in (f"x_{split}", f"y_{split}"):
                tensors[key] = tensors[key][:n].clone()
    click.echo(f"{record['label']}: {kept['train']} of {available['train']} train / {kept['test']} of "
               f"{available['test']} test images from {record['source']}")
    save_torch({**tensors, "dataset": dataset, "label": record["label"], "source": record["source"]}, out)
    write_json({"dataset": dataset, **record, "n_train": kept["train"], "n_test": kept["test"],
                **({"n_available": available} if kept != available else {}),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)


if __name__ == "__main__":
    run(main)
