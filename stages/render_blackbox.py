"""render_blackbox: reports/blackbox_<dataset>.md, the AE trained with gradients, with the black box's labels only, and
with its scores, each then attacked white-box through AE + the real classifier by the whole adaptive suite.

Each blind-trained AE is judged against the white-box one, and the score-trained AE against the label-trained one (do
the scores add anything to the labels?), under the suite's worst case by the exact paired test on the same
examples (``aaa_core.reporting.verdicts.judge`` on the records' ``worst_case_flags``). An AE whose natural
accuracy (full test set) is below half of the classifier's alone (``natural_accuracy_full_test`` of the
classifier's evaluate record, ``metrics/<dataset>/evaluate/<classifier>.json`` unless ``--classifier-metrics``
names it) is marked collapsed and left out of the verdicts.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from aaa_core.io import atomic_path
from aaa_core.errors import AAAError
from aaa_core.stats import percent_with_interval
from aaa_core.reporting.verdicts import (Scored, collapse_reason, collapsed_mark, example_count, example_set, judge, percent)
from stages._cli import output_file, run

ACCESS = {"gradient": "white-box (reference)",
          "labels": "labels only: white-box against the surrogate fitted to them",
          "scores": "scores: white-box against the surrogate distilled from them"}
BLENDED = ("scores: PGD on the surrogate distilled from them (transferred), update blending the surrogate's "
           "gradient and a latent zeroth-order estimate")
SHORT = {"gradient": "white-box AE", "labels": "label-trained AE", "scores": "score-trained AE"}
REFERENCE = "gradient"
FITS = ("labels", "scores")
OUTPUTS = {"logits": "logits", "probs": "softmax probabilities"}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise AAAError(f"{path}: missing; run the black-box study, `dvc repro blackbox/dvc.yaml`") from None
    except json.JSONDecodeError as err:
        raise AAAError(f"{path}: not valid JSON ({err}); re-run the stage that writes it") from None


def _attack(suite: dict, name: str) -> float:
    for attack in suite["attacks"]:
        if attack["name"] == name:
            return attack["accuracy"]
    raise AAAError(f"no attack {name!r} in the robustness metrics of {suite['name']}")


def collapses(runs: dict[str, tuple[dict, dict]], alone: float | None) -> dict[str, str | None]:
    """Per access, ``collapse_reason`` of the AE's natural accuracy (full test set) against the classifier's
    alone; all None where the classifier alone was not measured."""
    return {access: collapse_reason(train.get("natural_test_accuracy"), alone) for access, (train, _) in runs.items()}


def verdicts(runs: dict[str, tuple[dict, dict]], collapsed: dict[str, str | None]) -> list[str]:
    """Each blind-trained AE against the white-box one, then the score-trained AE against the label-trained one (do
    the scores add anything to the labels?), under the suite's worst case, paired on the same examples."""
    def scored(access: str) -> Scored:
        suite = runs[access][1]
        return Scored(SHORT[access], suite["worst_case_accuracy"], example_count(suite), suite.get("worst_case_flags"),
                      example_set(suite), collapsed.get(access))

    reference = scored(REFERENCE)
    lines = [f"- {SHORT[access]} against the {SHORT[REFERENCE]}: {judge(scored(access), reference).text}"
             for access in runs if access != REFERENCE]
    if {"scores", "labels"} <= set(runs):
        lines.append(f"- {SHORT['scores']} against the {SHORT['labels']}: "
                     f"{judge(scored('scores'), scored('labels')).text}")
    return lines


def gaps(runs: dict[str, tuple[dict, dict]], collapsed: dict[str, str | None] | None = None) -> list[str]:
    """Each blind-trained AE's natural (full test set) and worst-case accuracy beside the white-box AE's, and the gap
    (marked where either has collapsed)."""
    def pair(access: str) -> tuple[float, float]:
        train, suite = runs[access]
        return 100 * train["natural_test_accuracy"], 100 * suite["worst_case_accuracy"]

    ref_natural, ref_worst = pair(REFERENCE)
    lines = []
    for access in runs:
        if access != REFERENCE:
            natural, worst = pair(access)
            marks = "".join(collapsed_mark((collapsed or {}).get(a)) for a in (access, REFERENCE))
            lines.append(f"- {SHORT[access]}: natural {natural:.1f} against {ref_natural:.1f} "
                         f"({natural - ref_natural:+.1f} points), worst case {worst:.1f} against {ref_worst:.1f} "
                         f"({worst - ref_worst:+.1f} points){marks}")
    return lines


def table(dataset: str, runs: dict[str, tuple[dict, dict]], surrogates: dict[str, dict],
          collapsed: dict[str, str | None] | None = None) -> list[str]:
    """One row per way: every query it cost (its surrogate's included), per training image drawn, its wall times,
    natural accuracy and the suite's accuracies with Wilson intervals."""
    any_suite = next(iter(runs.values()))[1]
    paper = sorted(a["settings"]["steps"] for a in any_suite["attacks"] if a["name"].endswith("-paper"))
    n = example_count(any_suite)
    head = (["AE trained", "queries to the black box", "per training image", "AE training (s)", "natural, full test set"]
            + [f"PGD-{k} (paper)" for k in paper] + ["worst case (suite)", "masked gradients"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for access, (train, suite) in runs.items():
        queries, surrogate = train["queries"], surrogates.get(access)
        fitting = surrogate["queries"] if surrogate else 0
        parts = ([f"{queries['ae_training']:,} AE training"] if queries["ae_training"] else []) + \
                ([f"{fitting:,} fitting the surrogate"] if fitting else [])
        total = (queries["ae_training"] or 0) + fitting
        spent = (f"{total:,} ({', '.join(parts)})" if len(parts) > 1 else f"{total:,}") if parts else "none (gradients)"
        per_image = f"{total / queries['training_images']:.1f}" if total else "-"
        seconds = f"{train['ae_training_seconds']:.0f}" + (f" (+{surrogate['seconds']:.0f} surrogate)" if surrogate else "")
        masked = suite["masked_gradients"]
        label = BLENDED if queries.get("per_estimated_image") else ACCESS[access]
        row = [label + collapsed_mark((collapsed or {}).get(access)), spent, per_image, seconds,
               f"{100 * train['natural_test_accuracy']:.1f}"]
        row += [percent_with_interval(_attack(suite, f"pgd{k}-paper"), n) for k in paper]
        row += [percent_with_interval(suite["worst_case_accuracy"], n),
                ("yes" + (" (acknowledged)" if masked["acknowledged"] else "")) if masked["detected"] else "no"]
        lines.append("| " + " | ".join(row) + " |")
    return lines


@click.command()
@click.option("--dataset", required=True)
@click.option("--metrics-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="metrics/blackbox/<dataset>: surrogate_<fit>.json, train_<access>.json and robustness/<access>.json")
@output_file("--out")
@click.option("--classifier-metrics", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The classifier's evaluate metrics (its natural accuracy alone, for the collapse rule); default "
                   "metrics/<dataset>/evaluate/<classifier>.json beside metrics/blackbox.")
def main(dataset: str, metrics_dir: Path, out: Path, classifier_metrics: Path | None) -> None:
    runs = {a: (_read(metrics_dir / f"train_{a}.json"), _read(metrics_dir / "robustness" / f"{a}.json")) for a in ACCESS}
    surrogates = {fit: _read(metrics_dir / f"surrogate_{fit}.json") for fit in FITS}
    train, suite = runs["scores"]
    if classifier_metrics is None:
        classifier_metrics = metrics_dir.parent.parent / dataset / "evaluate" / f"{Path(train['classifier']).stem}.json"
    alone = _read(classifier_metrics).get("natural_accuracy_full_test") if classifier_metrics.is_file() else None
    collapsed = collapses(runs, alone)
    budget, attack = train["blackbox"], train["attack"]
    batch, latent = train["train"]["batch_size"], train["queries"]["per_estimated_image"]
    weight = budget["surrogate_weight"]
    settings = "; ".join(f"{a['name']}: " + ", ".join(f"{k} {v}" for k, v in a["settings"].items()
                                                       if k not in ("eps", "norm", "examples", "seed"))
                         for a in suite["attacks"])
    labels, scores = surrogates["labels"], surrogates["scores"]

    def fitted(record: dict) -> str:
        cosine = record["input_gradient_cosine"]
        return (f"agrees with the black box on {percent(record['test_agreement_with_blackbox'])} of the test set, "
                f"and the cosine between its input gradient and the black box's is {cosine['mean']:.3f} (mean over "
                f"the first {cosine['examples']:,} test images)")
    gradient = (f"{weight:g} times the surrogate's exact gradient plus {1 - weight:g} times a zeroth-order estimate"
                if weight > 0 else "a zeroth-order estimate alone,")
    white_box = ("white-box against {}: the training attack and the update run through AE + surrogate, and the "
                 "black box is not queried again.")
    update = (f"The label-trained AE then trains {white_box.format('its surrogate')} The score-trained AE's training "
              "attack runs through AE + its surrogate too (transferred: no query); its update is the black box's "
              f"loss, and the gradient that reaches the AE is {gradient} "
              "taken in the AE's latent, with decoder and classifier queried as one black box: coordinate-wise "
              f"forward differences (smoothing {budget['smoothing']}), {latent} queries per estimated image, for "
              f"{budget['estimate_images']} images of each batch of {batch} (their estimate scaled by "
              f"{batch}/{budget['estimate_images']}); the other images are queried once. The estimate reaches the "
              "encoder only; the surrogate's gradient and the MSE term reach encoder and decoder exactly."
              if latent else
              f"Both blind AEs then train {white_box.format('their surrogate')}")
    lines = [
        f"# {dataset}: AAA trained through a black box", "",
        f"One AE ({train['loss']} loss) trained {len(runs)} ways against the frozen natural classifier "
        f"`{train['classifier']}`, at one budget: {budget['epochs']} epochs of {budget['epoch_images']} images, "
        f"batch {batch}, eps ramp over {budget['eps_ramp']} iterations, training attack "
        f"PGD-{attack['steps']} at eps {attack['eps']}, step {attack['alpha']}. Every AE starts with "
        f"{budget['warm_epochs']} epoch(s) of clean reconstruction (no queries).", "",
        f"The blind AEs see the classifier only through queries. Each has a surrogate ({labels['arch']}, its own "
        "weights) fitted to the black box's answers for the training and validation images: "
        f"the label-trained AE's learns its predicted classes ({labels['queries']:,} queries) and {fitted(labels)}; "
        f"the score-trained AE's is distilled from its {OUTPUTS.get(budget['output'], budget['output'])} "
        f"({scores['queries']:,} queries) and {fitted(scores)}. {update} \"Per training image\" is every query the way cost (fitting its surrogate"
        + (", and for the score-trained AE the update and the validation passes" if latent else "")
        + ") over the images its AE trained on.", "",
        f"Then every AE is attacked white-box through AE + the real classifier (the defender trained blind, the "
        f"attacker is not limited) by the adaptive suite on {example_count(suite)} test images, seed "
        f"{suite['seed']}, eps {attack['eps']}, float32. Accuracies in percent with 95% Wilson intervals over "
        "the examples. The natural accuracy is on the full test set.", "",
        *table(dataset, runs, surrogates, collapsed), "",
        "Each blind-trained AE against the white-box one, and the score-trained AE against the label-trained one, "
        "under the suite's worst case, paired on the same "
        "examples: the exact two-sided McNemar test at 0.05 (\"n vs m discordant\": examples only the better "
        "side, or for an inconclusive verdict the first-named AE, gets right, against examples only the other "
        "does; \"inconclusive\" says the test could not separate them, not that they are equal). "
        + (f"An AE whose natural accuracy is below half of the classifier's alone ({percent(alone)}, full test "
           "set) has collapsed: it is marked and left out." if alone is not None else
           f"Collapse not checked: no metrics of the classifier alone ({classifier_metrics})."), "",
        *verdicts(runs, collapsed), "",
        f"Each blind-trained AE beside the {SHORT[REFERENCE]}, in percent (natural on the full test set, worst case on "
        "the suite's examples):", "", *gaps(runs, collapsed), "",
        "The suite's attacks: " + settings + ".", "",
    ]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    run(main)
