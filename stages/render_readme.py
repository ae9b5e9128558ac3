"""render_readme: the README's headline block, rendered from the committed metrics (not a DVC stage: the README
is the user's page; tests/test_readme.py fails when its block differs from what this renders).

    python -m stages.render_readme --readme README.md            # rewrite the block in place
    python -m stages.render_readme --readme README.md --check    # exit 1 if it is out of date

Per dataset: the headline AAA pipeline (params.yaml's ``loss`` AE on the source classifier) against Madry, under
the paper's PGD protocol (its longest step count) and the adaptive suite's per-example worst case, each with its
95% Wilson interval, and the exact paired verdict (``aaa_core.reporting.verdicts``) on the same examples: the
headline that ``aaa_core.reporting.summary.headline_pairs`` gives the summary metrics too.
"""
from __future__ import annotations

from pathlib import Path

import click

from aaa_core.config import load_params
from aaa_core.errors import AAAError
from aaa_core.reporting.summary import SOURCE, headline_pairs, load_all
from stages._cli import input_file, params_file, run

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def headline_lines(metrics_root: Path, loss: str, scale: str) -> list[str]:
    """The block's lines from ``metrics_root`` (metrics/): per dataset a table row per measure of
    ``aaa_core.reporting.summary.headline_pairs``, then how to read it. Raises ``AAAError`` naming the file when
    a dataset's evaluate record of AAA, Madry or the source classifier alone is missing."""
    lines = ["| dataset | measure | AAA (`ae_" + loss + "`) | Madry | paired verdict |", "|---|---|---|---|---|"]
    for ds, src in SOURCE.items():
        folder = metrics_root / ds
        for name in (f"ae_{loss}-{src}", f"{src}_adv", src):
            if not (folder / "evaluate" / f"{name}.json").is_file():
                raise AAAError(f"{folder / 'evaluate' / f'{name}.json'}: missing; run `dvc repro` first")
        for pair in headline_pairs(load_all(folder), loss, src).values():
            cells = [f"{side.interval} (n={side.n})" for side in (pair.aaa, pair.madry)]
            lines.append(f"| {LABELS[ds]} | {pair.label} | {cells[0]} | {cells[1]} | {pair.verdict.text} |")
    lines += ["", f"Scale `{scale}`, rendered from `metrics/` by `python -m stages.render_readme`. Percent with "
              "95% Wilson intervals over the n test examples; the verdict is the exact two-sided McNemar test on "
              "the same examples (\"inconclusive\" means the test could not separate them, not that they are "
              "equal). Details, every other table and the attack settings: `reports/`."]
    return lines


def replace_block(text: str, lines: list[str], where: str) -> str:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise AAAError(f"{where}: expected one '{START}' line followed by one '{END}' line")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + "\n".join(lines) + "\n" + END + tail


@click.command()
@input_file("--readme", default="README.md",
              show_default=True)
@click.option("--metrics-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default="metrics",
              show_default=True)
@params_file()
@click.option("--check", is_flag=True, help="Exit 1, changing nothing, if the block is out of date.")
@click.option("--print", "print_only", is_flag=True,
              help="Print the headline as rendered from the metrics, changing nothing (what `make repro` ends with).")
def main(readme: Path, metrics_root: Path, params_path: Path, check: bool, print_only: bool) -> None:
    params = load_params(params_path)
    if print_only:
        click.echo("\n".join(headline_lines(metrics_root, params.loss, params.scale)))
        return
    text = readme.read_text()
    new = replace_block(text, headline_lines(metrics_root, params.loss, params.scale), str(readme))
    if check:
        if new != text:
            raise click.ClickException(f"{readme}: the headline block is out of date with {metrics_root}; run "
                                       "`python -m stages.render_readme`")
        click.echo(f"{readme}: headline block up to date")
        return
    readme.write_text(new)
    click.echo(f"wrote the headline block of {readme}")


if __name__ == "__main__":
    run(main)
