"""Tables laid out like the paper's, ours beside the paper's numbers, and the figures. Reads metrics only."""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import pandas as pd

from aaa_core.config import AE_LOSSES
from aaa_core.reporting.verdicts import (
    Scored,
    classifier_naturals,
    classifier_of,
    collapse_of,
    collapse_reason,
    collapsed_mark,
    example_count,
    example_set,
    judge,
)
from aaa_core.stats import wilson_interval


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, imported where a figure is drawn (not by every table)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

PAPER_KEYS = {"natural": "natural", "pgd40": "pgd40", "pgd200": "pgd200"}


def load_metrics(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def row_key(m: dict) -> str:
    """The paper's row label of one evaluated pipeline (keys of paper/reported_results.yaml)."""
    p = m["pipeline"]
    if p["ae_loss"]:
        return f"aaa_{p['ae_loss']}"
    return "adversarial_training" if p["classifier_mode"] == "adversarial" else "natural_training"


ROW_LABELS = {"natural_training": "Natural training", "adversarial_training": "Adversarial training (Madry)",
              "aaa_ce": "AAA, L_ce", "aaa_mse": "AAA, L_mse", "aaa_ce_mse": "AAA, L_ce+mse"}
ROW_LABELS.update({f"aaa_{loss}": f"AAA, L_{loss}" for loss in AE_LOSSES if f"aaa_{loss}" not in ROW_LABELS})


def fmt_eps(eps: float) -> str:
    frac = Fraction(eps).limit_denominator(255)
    return f"{eps:g}" if frac.denominator in (1, 10, 100) else f"{frac.numerator}/{frac.denominator}"


def model_name(arch: str, kwargs: dict | None = None) -> str:
    """A model's name in every table and caption: the paper's name, with its constructor arguments when smaller."""
    return arch.upper() + (f"({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else "")


def pipeline_model_name(m: dict) -> str:
    """``model_name`` of one metrics record's classifier."""
    return model_name(m["pipeline"]["classifier_arch"], m["pipeline"].get("classifier_kwargs"))


def paper_value(reported: dict, steps: int) -> float | None:
    """The paper's number for PGD-``steps``; where its step count is illegible (CIFAR-10), its one PGD column."""
    return reported.get(f"pgd{steps}", reported.get("pgd"))


def n_examples(m: dict) -> int:
    """How many test examples one metrics record's accuracies were measured on (``examples.n`` of the
    stages' example-set record, or the bare count of older metrics)."""
    return example_count(m)


def pct(value: float | None, n: int | None = None) -> str:
    """An accuracy in percent; with ``n`` (its examples), its 95% Wilson interval beside it: 77.20 [67.8, 84.2]."""
    if value is None:
        return "n/a"
    if n is None:
        return f"{100 * value:.2f}"
    lo, hi = wilson_interval(round(value * n), n)
    return f"{100 * value:.2f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def scored(name: str, m: dict, accuracy: float, flags, alone: dict[str, float] | None = None) -> Scored:
    """One pipeline (metrics record ``m``) under one measure, for ``verdicts.judge``: its accuracy, its
    per-example flags (None where the record keeps none), its example set, and whether it has collapsed
    against its classifier alone (``alone``: ``verdicts.classifier_naturals``)."""
    return Scored(name, accuracy, n_examples(m), flags, example_set(m), collapse_of(m, alone or {}))


PAIRED_NOTE = ("Verdicts pair the two pipelines on the same test examples: exact two-sided McNemar test at 0.05 "
               "(\"n vs m discordant\": examples only the better side, or for an inconclusive verdict the side "
               "named first, gets right, against examples only the other does); \"inconclusive\" says the test "
               "could not separate them, not that they are equal. A collapsed AE pipeline (natural accuracy below "
               "half of its classifier's alone) is marked and left out of the verdicts.")


def paper_pct(value: float | None) -> str:
    """A number of reported_results.yaml (already in percent), or n/a where the paper has none."""
    return "n/a" if value is None else f"{value:.2f}"


def pipeline_spec(m: dict) -> str:
    """The pipeline of one metrics record as the suite names it: ``ae.pt+classifier.pt`` or ``classifier.pt``."""
    p = m["pipeline"]
    if "spec" in p:
        return p["spec"]
    return f"{p['ae']}+{p['classifier']}" if p.get("ae") else p["classifier"]


def suite_by_pipeline(robustness_rows: list[dict]) -> dict[str, dict]:
    """The adaptive suite's records (metrics/<ds>/robustness) keyed by ``pipeline_spec``."""
    return {pipeline_spec(m): m for m in robustness_rows}


WORST = "Worst case (ours)"


def worst_cell(m: dict, suite: dict[str, dict]) -> str:
    """The suite's worst case of the pipeline of evaluate record ``m``, with its interval; where the suite did
    not run on it, say so (the cpu budget runs it on the source classifiers' pipelines only)."""
    found = suite.get(pipeline_spec(m))
    return pct(found["worst_case_accuracy"], n_examples(found)) if found else "not run"


def worst_caption(suite: dict[str, dict]) -> str:
    """What the worst-case column measured: the suite's attacks and examples, read from its records."""
    if not suite:
        return ""
    first = next(iter(suite.values()))
    names = [a["name"] for a in first["attacks"]]
    return (f"*{WORST}*: the adaptive suite's per-example worst case over {len(names)} attacks "
            f"({', '.join(names)}) on {n_examples(first)} test images, the first of the PGD columns' seeded "
            f"random order (aaa_core.data.test_order, seed {first['seed']}); per attack in reports/robustness.md. "
            f"\"not run\": the suite runs on each dataset's headline pair only (AAA on the source classifier, and "
            f"Madry).")


NOT_RUN = "not run: add it to params.yaml's `other_losses`"


def not_run_row(loss: str, paper: dict, steps: list[int], suffix: str = "") -> dict:
    """A table row for an AE loss the study did not train (params.yaml's ``losses``): the paper's numbers, and
    what to change to fill ours."""
    key = f"aaa_{loss}"
    reported = paper.get(key, {})
    record = {"Model": ROW_LABELS[key] + suffix, "Natural (ours)": NOT_RUN, "Natural (paper)": paper_pct(reported.get("natural"))}
    for k in steps:
        record[f"PGD-{k} (ours)"] = "-"
        record[f"PGD-{k} (paper)"] = paper_pct(paper_value(reported, k))
    return record


def table(rows: list[dict], paper: dict, headline: str, classifier_arch: str, steps: list[int],
          suite: dict[str, dict] | None = None, not_run: Sequence[str] = ()) -> pd.DataFrame:
    """One paper table: a row per pipeline on ``classifier_arch``, ours next to the paper's for each column;
    with ``suite`` (``suite_by_pipeline``), a last column with the adaptive suite's worst case; a row saying
    so for each AE loss of ``not_run`` (losses the study did not train)."""
    selected = [m for m in rows if m["pipeline"]["classifier_arch"] == classifier_arch]
    order = ["natural_training", "adversarial_training", f"aaa_{headline}"] + \
        [f"aaa_{loss}" for loss in AE_LOSSES if loss != headline]
    selected.sort(key=lambda m: order.index(row_key(m)))
    alone = classifier_naturals(rows)
    records = []
    for m in selected:
        key = row_key(m)
        label = ROW_LABELS[key] + (" (headline)" if key == f"aaa_{headline}" else "")
        constant = (m.get("sanity") or {}).get("constant_output")
        if constant:   # a collapsed pipeline: its "robust" accuracy is the share of one class, say so
            label += f" [DEGENERATE: class {constant['class']} for {constant['share']:.0%} of inputs]"
        label += collapsed_mark(collapse_of(m, alone))
        reported = paper.get(key) or paper.get(f"{classifier_arch}_natural" if key == "natural_training" else key, {})
        record = {"Model": label, "Natural (ours)": pct(m["natural_accuracy"], n_examples(m)),
                  "Natural (paper)": paper_pct(reported.get("natural"))}
        for k in steps:
            ours = m["robust_accuracy"].get(f"pgd{k}")
            theirs = paper_value(reported, k)
            record[f"PGD-{k} (ours)"] = pct(ours, n_examples(m))
            record[f"PGD-{k} (paper)"] = paper_pct(theirs)
        if suite is not None:
            record[WORST] = worst_cell(m, suite)
        records.append(record)
    for loss in not_run:
        records.append({**not_run_row(loss, paper, steps), **({WORST: "-"} if suite is not None else {})})
    return pd.DataFrame.from_records(records)


def versus_madry(rows: list[dict], suite: dict[str, dict], headline: str, classifier_arch: str,
                 steps: list[int]) -> str:
    """The verdict under a table of AAA against Madry: the headline AE against the Madry classifier under the
    strongest PGD column (the evaluate stage's ``robust_flags``) and under the suite's worst case (its
    ``worst_case_flags``), each by the exact paired test on the same examples (``verdicts.judge``)."""
    on = [m for m in rows if m["pipeline"]["classifier_arch"] == classifier_arch]
    madry = next((m for m in on if row_key(m) == "adversarial_training"), None)
    aaa = next((m for m in on if row_key(m) == f"aaa_{headline}"), None)
    if madry is None or aaa is None:
        return ""
    k = max(steps)
    alone = classifier_naturals(rows)

    def judge_one(measure: str, a: Scored, b: Scored) -> str:
        return f"under {measure}, AAA {pct(a.accuracy, a.n)} against Madry {pct(b.accuracy, b.n)}: {judge(a, b).text}"

    key = f"pgd{k}"
    parts = [judge_one(f"PGD-{k}",
                       scored("AAA", aaa, aaa["robust_accuracy"][key], (aaa.get("robust_flags") or {}).get(key), alone),
                       scored("Madry", madry, madry["robust_accuracy"][key],
                              (madry.get("robust_flags") or {}).get(key), alone))]
    s_aaa, s_madry = suite.get(pipeline_spec(aaa)), suite.get(pipeline_spec(madry))
    if s_aaa and s_madry:
        suite_alone = {**alone, **classifier_naturals(suite.values())}
        parts.append(judge_one("the suite's worst case",
                               scored("AAA", s_aaa, s_aaa["worst_case_accuracy"], s_aaa.get("worst_case_flags"),
                                      suite_alone),
                               scored("Madry", s_madry, s_madry["worst_case_accuracy"],
                                      s_madry.get("worst_case_flags"), suite_alone)))
    else:
        parts.append("the suite did not run on both, so no worst-case verdict")
    return (f"**Verdict, headline AAA ({ROW_LABELS[f'aaa_{headline}']}) against Madry, one training seed, paired "
            f"on the same examples:** " + "; ".join(parts) + ". " + PAIRED_NOTE)


def caption(rows: list[dict], scale: str) -> str:
    m = rows[0]
    a = m["attack"]
    return (f"{m['label']}, scale `{scale}`, data from {m['data_source']}. Accuracy in percent on "
            f"{a['examples']} test images, a seeded random subset shared by every pipeline (natural accuracy too; the full-test-set natural accuracy is in the "
            f"metrics JSON). Attack: white-box L-inf PGD through the whole pipeline (AE and classifier "
            f"together), eps {fmt_eps(a['eps'])}, step {fmt_eps(a['alpha'])}, {a['restarts']} restart(s), random "
            f"start, cross-entropy loss, float32, seed {a['seed']}; an example counts as robust only if no "
            f"iterate up to the step count fools the model. Beside each of our accuracies, its 95% Wilson interval "
            f"over the examples, to read the uncertainty of each number alone; which of two pipelines is better "
            f"is decided by the paired test under the table." + _sizes(rows))


def _sizes(rows: list[dict]) -> str:
    """Model sizes that differ from the paper's defaults, as recorded in the checkpoints."""
    parts = sorted({model_name("ae", m["pipeline"].get("ae_kwargs")) for m in rows if m["pipeline"].get("ae_kwargs")}
                   | {pipeline_model_name(m) for m in rows if m["pipeline"].get("classifier_kwargs")})
    return f" Model arguments: {'; '.join(parts)}." if parts else ""


def reconstruction_figure(examples: list[dict], out: Path) -> None:
    """Rows: clean, AE(clean), adversarial, AE(adversarial) for each AE loss; columns: test images."""
    n = len(examples[0]["clean"])
    plt = pyplot()
    fig, axes = plt.subplots(4 * len(examples), n, figsize=(n * 0.9, 4 * len(examples) * 0.95))
    for block, ex in enumerate(examples):
        rows = [("clean", ex["clean"]), ("AE(clean)", ex["recon_clean"]),
                (f"PGD-{ex['steps']}", ex["adversarial"]), ("AE(adv)", ex["recon_adversarial"])]
        for r, (name, images) in enumerate(rows):
            for c in range(n):
                ax = axes[4 * block + r, c]
                img = images[c].permute(1, 2, 0).squeeze(-1).float().clamp(0, 1).numpy()
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if c == 0:
                    ax.set_ylabel(f"{ex['ae_loss']}\n{name}" if r == 0 else name, fontsize=7)
                if r == 3:
                    ax.set_title(f"pred {int(ex['pred_adversarial'][c])}", fontsize=6, y=-0.35)
    fig.suptitle(f"{examples[0]['label']}: AAA reconstructions, eps {fmt_eps(examples[0]['eps'])}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def curve_figure(curves: dict[str, list[dict]], title: str, out: Path) -> None:
    """Robust accuracy against eps, one line per model; points are dicts with eps and accuracy."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, points in curves.items():
        ax.plot([p["eps"] for p in points], [100 * p["accuracy"] for p in points], marker="o", markersize=3,
                label=name)
    ax.set_xlabel("eps (L-inf, pixels in [0, 1])")
    ax.set_ylabel("robust accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def sweep_figure(sweep: dict, out: Path) -> None:
    curve_figure(sweep["curves"], f"{sweep['label']}: PGD-{sweep['attack']['steps']}, {sweep['examples']} test images",
                 out)


def load_examples(folder: Path, headline: str, classifier_arch: str) -> list[dict]:
    """The saved figure examples of every AE evaluated on ``classifier_arch``, headline loss first."""
    import torch

    examples = [torch.load(p, weights_only=True) for p in sorted(folder.glob("*.pt"))]
    examples = [e for e in examples if e["classifier_arch"] == classifier_arch]
    if not examples:
        raise FileNotFoundError(f"{folder} holds no examples for classifier {classifier_arch!r}; "
                                "run the evaluate stage (evaluate@<dataset>)")
    return sorted(examples, key=lambda e: (e["ae_loss"] != headline, e["ae_loss"]))


PIPELINE_ORDER = ["natural_training", "adversarial_training", *(f"aaa_{loss}" for loss in AE_LOSSES)]


def _pipeline_label(m: dict) -> str:
    p = m["pipeline"]
    base = ROW_LABELS[row_key(m)]
    return f"{base}, {pipeline_model_name(m)}" if p["ae_loss"] else f"{base} ({pipeline_model_name(m)})"


def _marked_label(m: dict, alone: dict[str, float]) -> str:
    """``_pipeline_label`` with the collapse mark where the pipeline has collapsed (``verdicts.collapse_of``)."""
    return _pipeline_label(m) + collapsed_mark(collapse_of(m, alone))


def robustness_section(rows: list[dict], figure: Path, alone: dict[str, float] | None = None) -> list[str]:
    """One dataset's part of reports/robustness.md: accuracy per attack, worst case, settings, checks, verdict.
    ``alone``: each classifier's natural accuracy alone (the evaluate records; ``verdicts.classifier_naturals``),
    which the collapse check reads where the suite did not run on the classifier itself."""
    rows = sorted(rows, key=lambda m: (m["pipeline"]["classifier_arch"] != "dnn", m["pipeline"]["classifier_arch"],
                                       PIPELINE_ORDER.index(row_key(m))))
    first = rows[0]
    alone = {**(alone or {}), **classifier_naturals(rows)}
    attack_names = [a["name"] for a in first["attacks"] if a["kind"] != "transfer"]
    records = []
    for m in rows:
        acc = {a["name"]: a for a in m["attacks"]}
        n = n_examples(m)
        record = {"Pipeline": _marked_label(m, alone), "Natural": pct(m["natural_accuracy"], n)}
        record.update({name: pct(acc[name]["accuracy"], n) if name in acc else "n/a" for name in attack_names})
        transfers = [a for a in m["attacks"] if a["kind"] == "transfer"]
        for i, a in enumerate(transfers, 1):
            record[f"transfer {i}"] = f"{pct(a['accuracy'], n)} (from {a['settings']['crafted_on']})"
        record["Uniform noise"] = pct(m["uniform_noise_accuracy"], n)
        record["Worst case"] = f"**{pct(m['worst_case_accuracy'], n)}**"
        records.append(record)
    settings = [{"Attack": a["name"], "Kind": a["kind"],
                 "Settings": ", ".join(f"{k} {v}" for k, v in a["settings"].items()
                                       if k not in ("examples", "crafted_on")
                                       and not (k == "seed" and v == first["seed"]))}
                for a in first["attacks"] if a["kind"] != "transfer"]
    settings.append({"Attack": "transfer i", "Kind": "transfer",
                     "Settings": ", ".join(f"{k} {v}" for k, v in next(
                         a for a in first["attacks"] if a["kind"] == "transfer")["settings"].items()
                         if k not in ("examples", "seed", "crafted_on")) + ", crafted on the named model"})
    lines = [f"## {first['label']}", "",
             f"{n_examples(first)} test images (seeded random subset), stage seed {first['seed']} (each attack "
             f"derives its own), eps {fmt_eps(first['attacks'][0]['settings']['eps'])}, "
             f"data from {first['data_source']}. `-paper` columns: the paper's protocol (one random start, one run recorded at each step count).", "",
             pd.DataFrame.from_records(records).fillna("-").to_markdown(index=False), "", verdict(rows, alone), "",
             *masking_findings(rows),
             "### Attack settings", "", pd.DataFrame.from_records(settings).to_markdown(index=False), "",
             "### Sanity checks (all passed, or the stage would have failed)", ""]
    for m in rows:
        lines.append(f"- {_pipeline_label(m)}: " + "; ".join(c["detail"] for c in m["checks"]))
    curve = first["accuracy_against_eps"]
    lines += ["", f"### Accuracy against eps (PGD-{curve[0]['steps']}, step 2.5 * eps / steps)", "",
              f"![accuracy against eps]({figure})", ""]
    return lines


def masking_findings(rows: list[dict]) -> list[str]:
    """The loud part: pipelines on which a query-only or transfer attack beat every white-box attack."""
    found = [m for m in rows if m.get("masked_gradients", {}).get("detected")]
    if not found:
        return ["No masked gradients detected: no query-only or transfer attack beat the best white-box attack "
                "by more than the tolerance on any pipeline.", ""]
    lines = ["### ⚠ MASKED GRADIENTS DETECTED", ""]
    for m in found:
        lines.append(f"- **{_pipeline_label(m)}**: " + "; ".join(m["masked_gradients"]["details"])
                     + ". Gradient-based numbers for this pipeline (including the paper's PGD protocol) overstate "
                       "its robustness; trust the worst case, which includes the stronger attack.")
    return lines + [""]


def verdict(rows: list[dict], alone: dict[str, float] | None = None) -> str:
    """AAA pipelines on the Madry baseline's classifier against Madry, under the suite's worst case: each by
    the exact paired test on the same examples (the records' ``worst_case_flags``, ``verdicts.judge``); a
    collapsed AAA pipeline is left out with its reason."""
    madry = [m for m in rows if row_key(m) == "adversarial_training"]
    aaa = [m for m in rows if m["pipeline"]["ae_loss"] and madry
           and m["pipeline"]["classifier_arch"] == madry[0]["pipeline"]["classifier_arch"]]
    if not madry or not aaa:
        return "No Madry baseline and AAA pipeline on the same classifier to compare."
    alone = {**(alone or {}), **classifier_naturals(rows)}
    base = scored("Madry", madry[0], madry[0]["worst_case_accuracy"], madry[0].get("worst_case_flags"), alone)
    parts = []
    for m in sorted(aaa, key=lambda m: -m["worst_case_accuracy"]):
        ours = scored("AAA", m, m["worst_case_accuracy"], m.get("worst_case_flags"), alone)
        diff = 100 * (ours.accuracy - base.accuracy)
        parts.append(f"{_pipeline_label(m)} {pct(ours.accuracy, ours.n)} ({diff:+.2f} points): {judge(ours, base).text}")
    return (f"**Worst case, AAA against Madry adversarial training ({pct(base.accuracy, base.n)}), paired on the "
            f"same examples:** " + "; ".join(parts) + ". " + PAIRED_NOTE)


def robustness_figure(rows: list[dict], out: Path) -> None:
    first = rows[0]
    alone = classifier_naturals(rows)
    curve_figure({_marked_label(m, alone): m["accuracy_against_eps"] for m in sorted(rows, key=_pipeline_label)},
                 f"{first['label']}: PGD-{first['accuracy_against_eps'][0]['steps']}, {n_examples(first)} test images",
                 out)


def knn_table(rows: list[dict], paper: dict, headline: str, classifier_arch: str, steps: list[int],
              alone: dict[str, float] | None = None) -> pd.DataFrame:
    """Tables 9 / 10: AAA + kNN reconstruction, the paper's non-adaptive protocol beside BPDA, Square (where it
    ran) and the worst case (per example, over every attack that ran); with ``alone`` (the classifiers' natural
    accuracy alone, ``verdicts.classifier_naturals``), a collapsed pipeline is marked."""
    selected = [m for m in rows if m["pipeline"]["classifier_arch"] == classifier_arch]
    order = [f"aaa_{headline}"] + [f"aaa_{loss}" for loss in AE_LOSSES if loss != headline]
    selected.sort(key=lambda m: order.index(f"aaa_{m['pipeline']['ae_loss']}"))
    records = []
    for m in selected:
        key = f"aaa_{m['pipeline']['ae_loss']}"
        reported = paper.get(key, {})
        record = {"Model": ROW_LABELS[key] + " + kNN" + collapsed_mark(collapse_of(m, alone or {})),
                  "Natural (ours)": pct(m["natural_accuracy"], n_examples(m)),
                  "Natural (paper)": paper_pct(reported.get("natural"))}
        for k in steps:
            acc = m["robust_accuracy"]
            record[f"PGD-{k} non-adaptive (ours)"] = pct(acc["non_adaptive"][f"pgd{k}"], n_examples(m))
            record[f"PGD-{k} (paper)"] = paper_pct(paper_value(reported, k))
            record[f"PGD-{k} BPDA (ours)"] = pct(acc["bpda"][f"pgd{k}"], n_examples(m))
            record[f"PGD-{k} worst (ours)"] = pct(acc["worst_case"][f"pgd{k}"], n_examples(m))
        apgd = (m.get("attacks") or {}).get("knn", {}).get("apgd_bpda")   # straight-through, scored on true kNN
        if apgd:
            record[f"APGD-CE-{apgd['settings']['steps']} BPDA x{apgd['settings']['restarts']} (ours)"] = \
                pct(apgd["accuracy"]["all"], n_examples(m))
        for budget, value in acc.get("square", {}).items():   # query-only, on the true kNN pipeline
            record[f"Square-{budget.removeprefix('queries')} (ours)"] = pct(value, n_examples(m))
        records.append(record)
    run = {m["pipeline"]["ae_loss"] for m in selected}
    for loss in [x for x in order if x.removeprefix("aaa_") not in run]:
        reported = paper.get(loss, {})
        records.append({"Model": ROW_LABELS[loss] + " + kNN",
                        "Natural (ours)": "not run: kNN runs on the headline AE (params.yaml's `loss`)",
                        "Natural (paper)": paper_pct(reported.get("natural")),
                        **{f"PGD-{k} (paper)": paper_pct(paper_value(reported, k)) for k in steps}})
    return pd.DataFrame.from_records(records).fillna("-")


def knn_versus_plain(rows: list[dict], headline: str, classifier_arch: str, steps: list[int],
                     alone: dict[str, float] | None = None) -> pd.DataFrame:
    """Does kNN help? Per AE, on the same test images: the plain AE under white-box PGD (the non-adaptive
    attack's adversarial examples, crafted on the plain AE: final iterate), AE + kNN on those very examples,
    AE + kNN's worst case (every attack that ran on it) and, where the record has it (``worst_case.plain_ae``),
    the plain AE's worst case under the same attacks. The verdict compares kNN's worst case with the plain AE's
    (or, without it, with the plain AE under PGD) by the exact paired test: both sets of flags
    come from one record, so they are on the same examples by construction. It reads the record's per-example
    ``flags`` (or ``robust_flags``) laid out like its ``robust_accuracy`` (``worst_case`` and
    ``plain_ae_same_examples``, each by ``pgd<steps>``); a record without them gets no verdict, said so. With ``alone`` (the classifier's
    natural accuracy alone), a collapsed kNN pipeline or plain AE is marked and left out."""
    selected = [m for m in rows if m["pipeline"]["classifier_arch"] == classifier_arch
                and "plain_ae_same_examples" in m["robust_accuracy"]]
    order = [f"aaa_{headline}"] + [f"aaa_{loss}" for loss in AE_LOSSES if loss != headline]
    selected.sort(key=lambda m: order.index(f"aaa_{m['pipeline']['ae_loss']}"))
    records = []
    for m in selected:
        n, acc, flags = n_examples(m), m["robust_accuracy"], m.get("flags") or m.get("robust_flags") or {}
        clf_alone = (alone or {}).get(classifier_of(m))
        knn_collapse = collapse_reason(m["natural_accuracy"], clf_alone)
        plain_collapse = collapse_reason(m["plain_ae_natural_accuracy"], clf_alone)
        record = {"Model": ROW_LABELS[f"aaa_{m['pipeline']['ae_loss']}"] + collapsed_mark(knn_collapse or plain_collapse),
                  "Natural, plain AE": pct(m["plain_ae_natural_accuracy"], n),
                  "Natural, + kNN": pct(m["natural_accuracy"], n)}
        for k in steps:
            plain, same = acc["plain_ae_same_examples"][f"pgd{k}"], acc["non_adaptive"][f"pgd{k}"]
            worst = acc["worst_case"][f"pgd{k}"]
            record[f"PGD-{k}, plain AE"] = pct(plain, n)
            record[f"PGD-{k}, + kNN, same examples"] = pct(same, n)
            record[f"PGD-{k}, + kNN, worst case"] = pct(worst, n)
            same_record = "the examples of this record"   # both flags come from it
            with_knn = Scored("kNN", worst, n, (flags.get("worst_case") or {}).get(f"pgd{k}"), same_record,
                              knn_collapse)
            plain_worst = (m.get("worst_case") or {}).get("plain_ae", {}).get(f"pgd{k}")
            if plain_worst:   # the plain AE under the same attacks as kNN: the verdict compares the worst cases
                record[f"PGD-{k}, plain AE, worst case"] = pct(plain_worst["accuracy"], n)
                without = Scored("plain AE", plain_worst["accuracy"], n, plain_worst["flags"], same_record,
                                 plain_collapse)
            else:
                without = Scored("plain AE", plain, n, (flags.get("plain_ae_same_examples") or {}).get(f"pgd{k}"),
                                 same_record, plain_collapse)
            record[f"PGD-{k} verdict"] = judge(with_knn, without).text
        records.append(record)
    return pd.DataFrame.from_records(records)


def training_cost(train: dict) -> tuple[int, float]:
    """(optimizer iterations, wall seconds) of one training stage, from its metrics JSON."""
    cfg = train["train"]
    per_epoch = -(-(cfg["epoch_images"] or train["n_train"]) // cfg["batch_size"])
    return len(train["history"]) * per_epoch, train["seconds"]


def ensemble_table(natural: dict[str, dict], adversarial: dict[str, dict], ensemble: dict[str, dict],
                   paper: dict, steps: list[int], suite: dict[str, dict] | None = None) -> pd.DataFrame:
    """Table 8: per classifier, natural training, Madry adversarial training and the one ensemble AE (marked
    where it has collapsed against the natural classifier alone)."""
    alone = classifier_naturals(natural.values())
    records = []
    for arch in ensemble:
        reported = paper.get(arch, {})
        for key, m in (("natural_training", natural.get(arch)), ("adversarial_training", adversarial.get(arch)),
                       ("aaa_ensemble", ensemble[arch])):
            if m is None:
                continue
            theirs = reported.get(key, {})
            record = {"Classifier": pipeline_model_name(m),
                      "Model": {"natural_training": "Natural training",
                                "adversarial_training": "Adversarial training (Madry)",
                                "aaa_ensemble": "AAA ensemble AE (one AE for all)"}[key]
                      + collapsed_mark(collapse_of(m, alone)),
                      "Natural (ours)": pct(m["natural_accuracy"], n_examples(m)),
                      "Natural (paper)": paper_pct(theirs.get("natural"))}
            for k in steps:
                record[f"PGD-{k} (ours)"] = pct(m["robust_accuracy"].get(f"pgd{k}"), n_examples(m))
                record[f"PGD-{k} (paper)"] = paper_pct(paper_value(theirs, k))
            if suite is not None:
                record[WORST] = worst_cell(m, suite)
            records.append(record)
    return pd.DataFrame.from_records(records)


def budget_caption(madry: dict, ae: dict) -> str:
    """The training budgets of the Madry baseline and the headline AE, from their training metrics: optimizer
    iterations, eps ramp, training attack and learning-rate schedule, and whether they are equal."""
    def describe(train: dict) -> tuple:
        cfg, attack = train["train"], train["attack"]
        return (training_cost(train)[0], cfg["eps_ramp"], attack["steps"], attack["alpha"], cfg["lr"],
                cfg["lr_patience"])

    def fired(train: dict) -> str:
        lrs = [h["lr"] for h in train["history"]]
        return "it halved the rate" if any(b < a for a, b in zip(lrs, lrs[1:])) else "it never fired"

    its, ramp, steps, alpha, lr, patience = describe(madry)
    equal = describe(madry) == describe(ae)
    text = (f"Training budget: Madry's classifier and the headline AE each get {its} optimizer iterations "
            f"(batch {madry['train']['batch_size']}), the training eps ramped linearly over the first {ramp} "
            f"iterations, training attack PGD-{steps} with step {fmt_eps(alpha)}, Adam at {lr:g} halved after "
            f"{patience} epochs without validation improvement (Madry: {fired(madry)}; AE: {fired(ae)}).")
    if not equal:
        its_ae, ramp_ae, steps_ae, alpha_ae, lr_ae, patience_ae = describe(ae)
        text += (f" UNEQUAL: the AE had {its_ae} iterations, ramp {ramp_ae}, PGD-{steps_ae} step "
                 f"{fmt_eps(alpha_ae)}, Adam {lr_ae:g}, patience {patience_ae}.")
    return text
