"""render_readme: the README's headline block, rendered from the committed metrics (not a DVC stage: the README
is the user's page; tests/test_readme.py fails when its block differs from what this renders).

    python -m stages.render_readme --readme README.md            # rewrite the block in place
    python -m stages.render_readme --readme README.md --check    # exit 1 if it is out of date

Per dataset: the headline AAA pipeline (params.yaml's ``loss`` AE on the source classifier) against Madry, under
the paper's PGD protocol (its longest step count) and the adaptive suite's per-example worst case, each with its
95% Wilson interval, and the exact paired verdict (``aaa_core.reporting.verdicts``) on the same examples.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from aaa_core.config import load_params
from aaa_core.errors import AAAError
from aaa_core.stats import percent_with_interval
from aaa_core.reporting.verdicts import Scored, classifier_naturals, collapse_of, example_count, example_set, judge
from stages._cli import input_file, params_file, run

START, END = "<!-- headline:start -->", "<!-- headline:end -->"
SOURCES = {"mnist": "dnn", "fashion_mnist": "dnn", "cifar10": "resnet"}
LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AAAError(f"{path}: missing; run `dvc repro` first") from None


def _scored(name: str, m: dict, acc: float, flags: str | None, alone: dict[str, float]) -> Scored:
    return Scored(name, acc, example_count(m), flags, example_set(m), collapse_of(m, alone))


def headline_lines(metrics_root: Path, loss: str, scale: str) -> list[str]:
    """The block's lines: one table row per dataset, then how to read it."""
    lines = ["| dataset | measure | AAA (`ae_" + loss + "`) | Madry | paired verdict |", "|---|---|---|---|---|"]
    for ds, src in SOURCES.items():
        folder = metrics_root / ds
        aaa_name, madry_name = f"ae_{loss}-{src}", f"{src}_adv"
        ev = {n: _read(folder / "evaluate" / f"{n}.json") for n in (aaa_name, madry_name, src)}
        alone = classifier_naturals(ev.values())
        steps = max(int(k[3:]) for k in ev[aaa_name]["robust_accuracy"])
        rows = [(f"PGD-{steps}", {n: (ev[n], ev[n]["robust_accuracy"][f"pgd{steps}"],
                                      (ev[n].get("robust_flags") or {}).get(f"pgd{steps}"))
                                  for n in (aaa_name, madry_name)})]
        suite = {n: folder / "robustness" / f"{n}.json" for n in (aaa_name, madry_name)}
        if all(p.is_file() for p in suite.values()):
            rb = {n: _read(p) for n, p in suite.items()}
            rows.append(("suite worst case", {n: (rb[n], rb[n]["worst_case_accuracy"], rb[n].get("worst_case_flags"))
                                              for n in rb}))
        for measure, side in rows:
            a, m = (_scored(n, *side[n], alone) for n in (aaa_name, madry_name))
            cells = [percent_with_interval(s.accuracy, s.n) + f" (n={s.n})" for s in (a, m)]
            verdict = judge(Scored("AAA", a.accuracy, a.n, a.flags, a.examples, a.collapsed),
                            Scored("Madry", m.accuracy, m.n, m.flags, m.examples, m.collapsed))
            lines.append(f"| {LABELS[ds]} | {measure} | {cells[0]} | {cells[1]} | {verdict.text} |")
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
