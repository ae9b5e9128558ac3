"""render_comparison: the MNIST headline comparison across training seeds and under AutoAttack.

Reads the study's own metrics for seed offset 0 (metrics/<ds>/evaluate and robustness) and the
comparison pipeline's for the other seeds and for AutoAttack; writes reports/comparison_<ds>.md and a
small summary metrics file (mean, sd over seeds, verdict per measure).

The verdict per measure is the stratified exact paired test (``aaa_core.reporting.verdicts.judge_pooled``): at each seed
AAA and Madry are paired on the same examples by their per-example flags (natural: the evaluate record's
``natural_flags``; PGD: its ``robust_flags``; suite worst case: ``worst_case_flags``; AutoAttack: its
``robust_flags``), and the discordant counts are pooled over the seeds. A seed whose AAA has collapsed (natural
accuracy below half of the natural source classifier's alone, ``<study-dir>/evaluate/<source>.json``) is left
out and named. AutoAttack's version (standard or reduced) and settings are those its records give (what
stages/autoattack.py ran), not comparison.yaml's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import click

from aaa_core.io import atomic_path, write_json
from aaa_core.reporting.seeds import MEASURES, Side, mean_sd, pct_interval, seed_measurements, summary
from aaa_core.config import load_comparison
from aaa_core.config import load_params
from aaa_core.errors import AAAError
from aaa_core.reporting.verdicts import (Scored, Verdict, collapse_reason, example_count, example_set, judge, judge_pooled, percent)
from stages._cli import output_file, params_file, run

# Croce & Hein (ICML 2020), Table 2: Madry et al.'s released MNIST model, eps 0.3
PUBLISHED = ("Madry et al.'s released MNIST model (PGD-40 adversarial training, 100,000 iterations of batch 50) "
             "under AutoAttack (standard, eps 0.3): 88.50% (Croce & Hein, 2020)")
COLUMNS = {"natural": "natural", "pgd": "PGD", "worst": "suite worst case", "autoattack": "AutoAttack"}


class AutoAttackRun(NamedTuple):
    """The AutoAttack an AutoAttack metrics record ran: ``version`` ("standard" or "reduced", as
    stages/autoattack.py decided it), the iterations of APGD-CE, APGD-T and FAB-T, their target classes, and
    Square's queries."""
    version: str
    steps: int
    targets: int
    queries: int


def counted(m: dict | None) -> dict | None:
    """``m`` with a bare example count under ``examples`` (what ``comparison.seed_measurements`` reads), where
    the stage wrote the example-set record ({"n", "seed", "indices_sha256"})."""
    if m is None or not isinstance(m.get("examples"), dict):
        return m
    return {**m, "examples": example_count(m)}


def scores(name: str, records: dict[str, dict | None], collapsed: str | None) -> dict[str, Scored]:
    """One pipeline at one seed under each measure, with its per-example flags and example set, for the paired
    verdict. AutoAttack's record keeps its flags as ``robust_flags`` (a 0/1 list) and its example set under
    ``attack.subset``; a record from before that (no hash) ran on the first ``examples`` test images (the
    unshuffled ``data.test_subset`` of then), which is its example set here, so it pairs only with another such
    record of the same count, never with a hashed one."""
    ev, rb, aa = records["evaluate"], records["robustness"], records["autoattack"]
    out = {}
    if ev is not None:
        n, steps = ev["attack"]["examples"], ev["attack"]["steps"]
        out["natural"] = Scored(name, ev["natural_accuracy"], n, ev.get("natural_flags"), example_set(ev), collapsed)
        out["pgd"] = Scored(name, ev["robust_accuracy"][f"pgd{steps}"], n,
                            (ev.get("robust_flags") or {}).get(f"pgd{steps}"), example_set(ev), collapsed)
    if rb is not None:
        out["worst"] = Scored(name, rb["worst_case_accuracy"], example_count(rb), rb.get("worst_case_flags"),
                              example_set(rb), collapsed)
    if aa is not None:
        n = example_count(aa)
        out["autoattack"] = Scored(name, aa["autoattack_accuracy"], n, aa.get("robust_flags"),
                                   example_set(aa) or f"the first {n} test images (unshuffled)", collapsed)
    return out


def read(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise AAAError(f"{path}: not valid JSON ({err.msg}); re-run the stage that writes it") from None


@click.command()
@click.option("--dataset", required=True)
@click.option("--loss", required=True, help="The headline AE loss (params.yaml's loss).")
@click.option("--source", required=True, help="The AE's source classifier, e.g. dnn.")
@click.option("--study-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The study's metrics of the dataset (seed offset 0).")
@click.option("--dir", "comparison_dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@output_file("--out")
@output_file("--summary", "summary_path")
@params_file()
@params_file("--comparison", "comparison_path", "comparison.yaml")
def main(dataset: str, loss: str, source: str, study_dir: Path, comparison_dir: Path, out: Path, summary_path: Path,
         params_path: Path, comparison_path: Path) -> None:
    params = load_params(params_path)
    cfg = load_comparison(comparison_path, dataset, params.scale)
    names = {"aaa": f"ae_{loss}-{source}", "madry": f"{source}_adv"}
    alone = read(study_dir / "evaluate" / f"{source}.json")   # the natural classifier behind every AAA seed
    sides, raw = {}, {}
    for key, name in names.items():
        raw[key] = {0: {"evaluate": read(study_dir / "evaluate" / f"{name}.json"),
                        "robustness": read(study_dir / "robustness" / f"{name}.json"),
                        "autoattack": read(comparison_dir / "s0" / f"autoattack_{name}.json")}}
        for offset in cfg.seed_offsets:
            d = comparison_dir / f"s{offset}"
            raw[key][offset] = {"evaluate": read(d / f"evaluate_{name}.json"),
                                "robustness": read(d / f"robustness_{name}.json"),
                                "autoattack": read(d / f"autoattack_{name}.json")}
        seeds = {offset: seed_measurements(*(counted(r[k]) for k in ("evaluate", "robustness", "autoattack")))
                 for offset, r in raw[key].items()}
        # AutoAttack runs on the study's own pair (offset 0) only; every other measure at every seed
        needed = {o: set(MEASURES) if o == 0 else set(MEASURES) - {"autoattack"} for o in seeds}
        missing = {o: sorted(needed[o] - set(m)) for o, m in seeds.items() if needed[o] - set(m)}
        if missing:
            raise AAAError(f"{comparison_dir}: {name} lacks metrics at seed offset(s) {sorted(missing)} ("
                           + "; ".join(f"{o}: {', '.join(k)}" for o, k in sorted(missing.items()))
                           + "); run `dvc repro comparison/dvc.yaml`")
        sides[key] = Side(name, seeds)
    aaa, madry = sides["aaa"], sides["madry"]
    result = summary(aaa, madry)
    verdicts = paired_verdicts(aaa, madry, raw, alone, params.seed)
    for k, v in verdicts.items():   # the paired verdict replaces the interval rule of comparison.summary
        result[k]["verdict"] = v.text
        result[k].update({f: v.as_dict()[f] for f in ("outcome", "p") if f in v.as_dict()})
        if v.counts is not None:
            result[k].update(aaa_only=v.counts.first_only, madry_only=v.counts.second_only)

    def n_of(key: str) -> str:
        ns = sorted({m.n for side in (aaa, madry) for m in side.measure(key)})
        return "/".join(map(str, ns)) if ns else "-"

    header = ["pipeline", "seed"] + [f"{COLUMNS[k]} (n={n_of(k)})" for k in MEASURES]
    lines = [f"# {dataset}: AAA against Madry across training seeds, and under AutoAttack", "",
             f"Scale `{params.scale}`. AAA is `{aaa.name}` (the headline AE, loss `{loss}`, in front of the frozen "
             f"natural `{source}`); Madry is `{madry.name}`, trained with the same budget. Seed 0 is the study's "
             f"own models (params.yaml seed {params.seed}); seeds "
             + ", ".join(str(params.seed + o) for o in cfg.seed_offsets)
             + " re-train the AE and the Madry model at the same budget with another seed (initialisation, "
               "batches, training attack, validation split); the natural classifier is the study's. Every seed "
               "is scored on the same first test images by the same attacks: the study's PGD protocol "
               "(`evaluate`), the adaptive suite's worst case (`suite`) and AutoAttack"
             + autoattack_note(raw, names, comparison_dir) + ".",
             "",
             "Each accuracy: percent and its 95% Wilson interval over the examples; `mean +- sd` over seeds. "
             + ("The suite and AutoAttack ran on the same images, each taking its own worst case, so the "
                "lower of the two is an upper bound on their combined worst case."
                if n_of("worst") == n_of("autoattack") else
                f"The suite ran on {n_of('worst')} images and AutoAttack on {n_of('autoattack')}, both prefixes "
                "of the study's seeded random test order, so AutoAttack's images are among the suite's."), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for side in (aaa, madry):
        for seed, ms in sorted(side.seeds.items()):
            lines.append(f"| {side.name} | {params.seed + seed} | "
                         + " | ".join(pct_interval(ms.get(k)) for k in MEASURES) + " |")
        lines.append(f"| {side.name} | mean +- sd | " + " | ".join(mean_sd(side.measure(k)) for k in MEASURES) + " |")
    lines += ["", "Verdict per measure, AAA against Madry paired on the same examples at each seed and pooled over "
              "the seeds: the exact two-sided stratified McNemar test at 0.05 (the sum of the seeds' discordant "
              "counts is binomial under no difference). \"n vs m discordant\": examples only the better side "
              "(or, when inconclusive, AAA) gets right, against examples only the other does; each seed's own "
              "counts in brackets, in the same order. \"inconclusive\" says the test could not separate them, not "
              "that they are equal. " + collapse_note(alone, source), ""]
    lines += [f"- {COLUMNS[k]}: {verdicts[k].text}"
              + (f" [{', '.join(verdicts[k].notes)}]" if verdicts[k].notes else "") for k in MEASURES]
    lines += ["", f"For scale: {PUBLISHED}. That model had a far larger training budget than ours (see the "
              "study's budget caption), so only the gap between PGD and AutoAttack compares, not the levels.", ""]
    cascade = []
    for key, side in (("aaa", aaa), ("madry", madry)):
        for seed in sorted(side.seeds):
            aa = raw[key][seed]["autoattack"]
            if aa is not None:
                steps = ", ".join(f"{c['name']} {100 * c['accuracy_after']:.1f} ({c['seconds']:.0f} s)"
                                  for c in aa["cascade"])
                cascade.append(f"| {side.name} | {params.seed + seed} | {100 * aa['natural_accuracy']:.1f} | {steps} |")
    if cascade:
        lines += ["AutoAttack's cascade: accuracy after each attack (each runs on what the ones before left "
                  "correctly classified) and its time:", "", "| pipeline | seed | clean | after each attack |",
                  "|---|---|---|---|", *cascade, ""]
    section, finetuned = finetuned_section(comparison_dir / "finetuned", aaa.name, raw["aaa"][0], alone, source)
    lines += section
    result["finetuned_madry"] = finetuned
    write_json({dataset: {"seeds": 1 + len(cfg.seed_offsets), **result}}, summary_path)
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    click.echo(f"wrote {out}")


def autoattack_run(record: dict) -> AutoAttackRun | None:
    """What AutoAttack metrics ``record`` (stages/autoattack.py) ran: its ``attack.version`` and, from its
    ``cascade``'s settings, APGD-CE's iterations, APGD-T's target classes and Square's queries; None where the
    record lacks any of them."""
    settings = {step.get("name"): step.get("settings") or {} for step in record.get("cascade") or []}
    run_ = AutoAttackRun((record.get("attack") or {}).get("version"), settings.get("apgd-ce", {}).get("steps"),
                         settings.get("apgd-t", {}).get("targets"), settings.get("square", {}).get("queries"))
    return None if None in run_ else run_


def autoattack_note(raw: dict[str, dict[int, dict]], names: dict[str, str], comparison_dir: Path) -> str:
    """The report's parenthesis on the AutoAttack that every record of ``raw`` (side -> seed offset -> records)
    ran, as the records give it (``autoattack_run``); "" where none records it. Raises ``AAAError`` naming the
    records when they ran different settings, or only some record them."""
    runs = {f"{names[key]} at seed offset {offset}": autoattack_run(r["autoattack"])
            for key, seeds in raw.items() for offset, r in sorted(seeds.items()) if r["autoattack"] is not None}
    found = set(runs.values())
    if found <= {None}:
        return ""
    if len(found) > 1:
        raise AAAError(f"{comparison_dir}: the AutoAttack records differ in version or settings ("
                       + "; ".join(f"{where}: {describe_run(run_)}" for where, run_ in runs.items())
                       + "); run `dvc repro comparison/dvc.yaml`")
    run_ = found.pop()
    return ((" (standard version: " if run_.version == "standard"
             else " (REDUCED, not the standard version's 100 iterations and 5,000 queries: ")
            + f"APGD-CE, APGD-T and FAB-T on {run_.targets} target classes at {run_.steps} iterations, Square with "
              f"{run_.queries:,} queries; torchattacks, the cascade of Croce & Hein)")


def describe_run(run_: AutoAttackRun | None) -> str:
    """``run_`` in a few words for an error message; "not recorded" for None."""
    if run_ is None:
        return "not recorded"
    return f"{run_.version}, {run_.steps} iterations, {run_.targets} targets, {run_.queries} queries"


FINETUNED = "dnn_adv_ft"


def finetuned_section(folder: Path, aaa_name: str, aaa_records: dict, alone: dict | None,
                      source: str) -> tuple[list[str], dict]:
    """The second baseline: Madry fine-tuned from the natural ``source`` classifier the AE stands on, against
    the study's AAA (seed 0) on the same examples, per measure by the exact McNemar test. Returns the report's
    lines and the summary's record ({} where the stage has not run)."""
    ev, rb = read(folder / f"evaluate_{FINETUNED}.json"), read(folder / f"robustness_{FINETUNED}.json")
    title = f"## Madry fine-tuned from the natural `{source}`"
    if ev is None and rb is None:
        return [title, "", "Not run: `dvc repro comparison/dvc.yaml:finetune_madry`.", ""], {}
    train = read(folder / f"train_{FINETUNED}.json") or {}
    collapsed = collapse_reason(aaa_records["evaluate"]["natural_accuracy"], alone["natural_accuracy"]) \
        if aaa_records.get("evaluate") and alone else None
    a = scores(f"AAA ({aaa_name})", aaa_records, collapsed)
    f = scores(f"fine-tuned Madry ({FINETUNED})", {"evaluate": ev, "robustness": rb, "autoattack": None}, None)
    measures = [k for k in MEASURES if k in a and k in f]
    verdicts = {k: judge(a[k], f[k]) for k in measures}
    attack = train.get("attack") or {}
    lines = [title, "",
             f"Madry's training started from the weights of the natural `{source}` the AE stands on (instead of a "
             f"random initialisation), with Madry's own budget: {train.get('train', {}).get('epochs', '?')} epochs of "
             f"{train.get('train', {}).get('epoch_images', '?')} images, PGD-{attack.get('steps', '?')} at eps "
             f"{attack.get('eps', '?')}. So AAA (which inherits that classifier) and this Madry start from the same "
             "natural training. Both are scored on the same examples by the same attacks; verdicts by the exact "
             "two-sided McNemar test at 0.05.", "",
             "| measure | AAA | fine-tuned Madry | verdict |", "|---|---|---|---|"]
    lines += [f"| {COLUMNS[k]} (n={a[k].n}) | {a[k].interval} | {f[k].interval} | {verdicts[k].text} |"
              for k in measures]
    return lines + [""], {k: {"aaa": a[k].accuracy, "finetuned_madry": f[k].accuracy, "n": a[k].n,
                              **verdicts[k].as_dict()} for k in measures}


def collapse_note(alone: dict | None, source: str) -> str:
    if alone is None:
        return (f"Collapse not checked: no metrics of the natural `{source}` alone "
                f"(evaluate/{source}.json of the study).")
    return (f"A seed whose AAA has collapsed (natural accuracy below half of the natural `{source}` alone, "
            f"{percent(alone['natural_accuracy'])}) is left out of the pooled test and named.")


def paired_verdicts(aaa: Side, madry: Side, raw: dict[str, dict[int, dict]], alone: dict | None,
                    base_seed: int) -> dict[str, Verdict]:
    """Per measure, AAA against Madry by ``judge_pooled``: one stratum per seed, AAA at that seed (left out where
    collapsed against the natural classifier alone) against Madry at that seed."""
    clf = alone["natural_accuracy"] if alone else None
    per_seed = {}
    for seed in sorted(raw["aaa"]):
        ev = raw["aaa"][seed]["evaluate"]
        collapsed = collapse_reason(ev["natural_accuracy"], clf) if ev else None
        per_seed[seed] = (scores(f"AAA ({aaa.name})", raw["aaa"][seed], collapsed),
                          scores(f"Madry ({madry.name})", raw["madry"][seed], None))
    return {k: judge_pooled([(f"seed {base_seed + seed}", a[k], m[k]) for seed, (a, m) in per_seed.items()
                             if k in a and k in m],
                            f"AAA ({aaa.name})", f"Madry ({madry.name})")
            for k in MEASURES}


if __name__ == "__main__":
    run(main)
