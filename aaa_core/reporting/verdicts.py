"""Verdicts of one pipeline against another, from the per-example flags their metrics keep.

Two pipelines scored on the same test examples are compared by the exact two-sided McNemar test: only the
discordant examples (right under one pipeline, wrong under the other) carry information about which is
better; under H0 (the two are equally good on these examples) the number of examples only the first gets
right is Binomial(b + c, 1/2), b and c being the two discordant counts. Comparing the two accuracies' 95%
intervals instead throws the pairing away: two intervals can overlap while the paired test separates the
pipelines, and overlapping intervals never show that a difference is small. So a verdict here is one of

- ``"<A> better (p = 0.0005; 15 vs 1 discordant)"``: the test rejects H0 at ``ALPHA`` (0.05); the counts are
  the better side's first (examples only it gets right, then examples only the other gets right);
- ``"inconclusive (p = 0.17; 13 vs 6 discordant)"``: it does not; the counts are in the order the two sides
  were named (first against second). Never "tie": failing to separate two pipelines is not showing them
  equal;
- ``"no per-example flags: not compared"``: metrics from before the flags were recorded; nothing invented;
- ``"not paired: different examples"``: the flags are on different example sets (the ``indices_sha256`` of
  their example-set records differ, or one does not record its set: ``example_set``), so no paired test is
  possible and the two intervals are printed instead;
- ``"not compared: <name> collapsed: natural X% vs classifier alone Y%"``: a degenerate defence (``collapse_reason``)
  is left out of every verdict.

Across training seeds the test is stratified (``pooled``): each seed is a stratum with its own discordant
counts, and the pooled count is tested exactly. This module imports nothing of the project but ``aaa_core.stats``
and ``aaa_core.errors``, so every renderer (and a test) can use it without models or data.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from aaa_core.stats import Discordant, mcnemar, percent_with_interval, pooled

ALPHA = 0.05                # the significance level of every verdict
COLLAPSE_RATIO = 0.5        # an AE pipeline below this share of its classifier's natural accuracy has collapsed
NO_FLAGS = "no per-example flags: not compared"
NOT_PAIRED = "not paired: different examples"


# ---- formatting ----

def percent(value: float, digits: int = 1) -> str:
    """An accuracy (a share in [0, 1]) in percent: ``percent(0.9721) == "97.2%"``; the one percent formatter of
    the verdicts."""
    return f"{100 * value:.{digits}f}%"


def format_p(p: float) -> str:
    """A p-value to read, never rounded across the significance level: two decimals from 0.1 up ("0.17", "1"
    for 1), two significant digits between 0.001 and 0.1 ("0.048", "0.0052"), one below ("0.0005", "2e-09")."""
    if p >= 0.995:
        return "1"
    if p >= 0.1:
        return f"{p:.2f}"
    if p >= 0.001:
        text = f"{p:.2g}"
        return f"{p:.3g}" if float(text) == ALPHA and p != ALPHA else text   # 0.0498 is not "0.05"
    return f"{p:.1g}"


# ---- the collapse rule ----

def collapse_reason(natural: float | None, classifier_alone: float | None) -> str | None:
    """``"collapsed: natural 8.5% vs classifier alone 97.9%"`` where an AE pipeline's natural accuracy is below
    half (``COLLAPSE_RATIO``) of its classifier's natural accuracy alone: the AE has destroyed the input, and
    any "robust" accuracy it shows measures the wreck, not a defence. None where it is not collapsed or either
    accuracy is unknown (the caller says so where that matters)."""
    if natural is None or classifier_alone is None:
        return None
    if natural < COLLAPSE_RATIO * classifier_alone:
        return f"collapsed: natural {percent(natural)} vs classifier alone {percent(classifier_alone)}"
    return None


def collapsed_mark(reason: str | None) -> str:
    """What a table appends to a collapsed pipeline's label: `` [collapsed: natural ... vs classifier alone ...]``,
    nothing where ``reason`` is None."""
    return f" [{reason}]" if reason else ""


# ---- reading the metrics ----

def _subset_record(metrics: dict | None) -> dict | None:
    """The example-set record ({"n", "seed", "indices_sha256", ...}, ``aaa_core.data.describe_subset``) of a
    metrics record, wherever its stage puts it: ``examples`` (evaluate, kNN), ``subset`` (the suite) or
    ``attack.subset`` (AutoAttack); None for metrics from before the records were written."""
    m = metrics or {}
    for found in (m.get("examples"), m.get("subset"), (m.get("attack") or {}).get("subset")):
        if isinstance(found, dict):
            return found
    return None


def example_set(metrics: dict | None) -> str | None:
    """The identity of the example set a metrics record was scored on: the ``indices_sha256`` of its
    example-set record (equal hashes: the same examples in the same order, so per-example flags pair); None
    where the record names none."""
    record = _subset_record(metrics)
    return record.get("indices_sha256") if record else None


def example_count(metrics: dict) -> int:
    """How many examples a metrics record was scored on: a bare ``examples`` count (the suite's, AutoAttack's,
    older metrics'), else ``n`` of its example-set record, else ``attack.examples`` (the evaluate stage's)."""
    examples = metrics.get("examples")
    if isinstance(examples, int) and not isinstance(examples, bool) and examples:
        return examples
    record = _subset_record(metrics)
    if record is not None:
        return record["n"]
    return metrics["attack"]["examples"]


def classifier_of(metrics: dict) -> str | None:
    """The classifier file of a record's pipeline: ``pipeline.classifier``, else the last part of
    ``pipeline.spec`` (``ae.pt+classifier.pt`` or ``classifier.pt``); None where neither is recorded."""
    p = metrics.get("pipeline") or {}
    if p.get("classifier"):
        return p["classifier"]
    return p["spec"].split("+")[-1] if p.get("spec") else None


def has_ae(metrics: dict) -> bool:
    """Whether a record's pipeline puts an AE in front of its classifier."""
    p = metrics.get("pipeline") or {}
    return bool(p.get("ae") or p.get("ae_loss") or "+" in (p.get("spec") or ""))


def classifier_naturals(records: Iterable[dict]) -> dict[str, float]:
    """``{classifier file: natural accuracy}`` of the records that are a classifier alone (no AE)."""
    return {classifier_of(m): m["natural_accuracy"] for m in records
            if not has_ae(m) and classifier_of(m) and m.get("natural_accuracy") is not None}


def collapse_of(metrics: dict, alone: dict[str, float]) -> str | None:
    """``collapse_reason`` of one record against its classifier's natural accuracy alone (``classifier_naturals``);
    None for a classifier alone, or where that classifier was not measured alone."""
    if not has_ae(metrics):
        return None
    return collapse_reason(metrics.get("natural_accuracy"), alone.get(classifier_of(metrics)))


# ---- the verdicts ----

@dataclass(frozen=True)
class Scored:
    """One pipeline under one measure: its accuracy over ``n`` examples and, where its metrics keep them, the
    per-example flags (a '0'/'1' string or a 0/1 list) and the identity of their example set; ``collapsed``
    is its ``collapse_reason`` (None: not collapsed, or not checked)."""
    name: str
    accuracy: float
    n: int
    flags: str | Sequence[int] | None = None
    examples: str | None = None
    collapsed: str | None = None

    @property
    def interval(self) -> str:
        return percent_with_interval(self.accuracy, self.n)


@dataclass(frozen=True)
class Verdict:
    """A verdict and what it rests on. ``outcome``: "better" (``better`` names the side), "inconclusive",
    "no flags", "not paired" or "collapsed"; ``counts`` are in the order the sides were given."""
    text: str
    outcome: str
    better: str | None = None
    counts: Discordant | None = None
    p: float | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        out: dict = {"verdict": self.text, "outcome": self.outcome}
        if self.counts is not None:
            out.update(p=self.p, first_only=self.counts.first_only, second_only=self.counts.second_only)
        if self.better is not None:
            out["better"] = self.better
        return out


def words(first: str, second: str, counts: Discordant, alpha: float = ALPHA) -> Verdict:
    """The verdict of the paired counts of ``first`` against ``second``: "<better> better (p = ...; b vs c
    discordant)", the better side's count first, where p < ``alpha``; else "inconclusive (p = ...; b vs c
    discordant)", in the order given."""
    p = counts.p_value
    if p < alpha and counts.first_only != counts.second_only:
        better, ahead = (first, counts) if counts.first_only > counts.second_only else (second, counts.swapped())
        return Verdict(f"{better} better (p = {format_p(p)}; {ahead.first_only} vs {ahead.second_only} discordant)",
                       "better", better, counts, p)
    return Verdict(f"inconclusive (p = {format_p(p)}; {counts.first_only} vs {counts.second_only} discordant)",
                   "inconclusive", None, counts, p)


def _intervals(first: Scored, second: Scored) -> str:
    return f"{first.name} {first.interval} on {first.n}, {second.name} {second.interval} on {second.n}"


def _unpaired(first: Scored, second: Scored) -> Verdict | None:
    """The verdict where the two cannot be paired (collapsed, no flags, different examples), else None."""
    for side in (first, second):
        if side.collapsed:
            return Verdict(f"not compared: {side.name} {side.collapsed}", "collapsed")
    if first.flags is None or second.flags is None:
        return Verdict(NO_FLAGS, "no flags")
    if first.examples is None or second.examples is None or first.examples != second.examples:
        why = ("" if first.examples and second.examples else
               f"; {first.name if first.examples is None else second.name} does not record its example set")
        return Verdict(f"{NOT_PAIRED}{why} ({_intervals(first, second)})", "not paired")
    return None


def judge(first: Scored, second: Scored, alpha: float = ALPHA) -> Verdict:
    """``first`` against ``second`` under one measure: the exact McNemar test where both keep per-example flags
    on the same example set (equal ``examples``), else the reason there is no verdict (see the module)."""
    unpaired = _unpaired(first, second)
    if unpaired is not None:
        return unpaired
    return words(first.name, second.name, mcnemar(first.flags, second.flags), alpha)


def judge_pooled(strata: Sequence[tuple[str, Scored, Scored]], first: str, second: str, alpha: float = ALPHA,
                 unit: str = "seed") -> Verdict:
    """``first`` against ``second`` across strata (label, first's score, second's score), e.g. training seeds
    (``unit``): each stratum paired on its own examples, the discordant counts pooled (``pooled``) and tested
    exactly. A stratum with a collapsed side is left out and named in the text; a stratum without flags, or
    on different example sets, leaves the whole measure without a verdict (a pool of the other strata would
    answer another question). ``notes`` holds each kept stratum's own counts, in the order of the text's."""
    kept, left_out, missing = [], [], {}
    for label, a, b in strata:
        unpaired = _unpaired(a, b)
        if unpaired is None:
            kept.append((label, mcnemar(a.flags, b.flags)))
        elif unpaired.outcome == "collapsed":
            left_out.append(f"{label} ({unpaired.text.removeprefix('not compared: ')})")
        else:
            missing.setdefault(unpaired.outcome, []).append(label)
    for outcome, head in (("no flags", NO_FLAGS), ("not paired", NOT_PAIRED)):
        if outcome in missing:
            return Verdict(f"{head} ({', '.join(missing[outcome])})", outcome)
    if not kept:
        return Verdict("not compared: every " + unit + " left out, " + "; ".join(left_out), "collapsed")
    verdict = words(first, second, pooled(d for _, d in kept), alpha)
    text = verdict.text + f" over {len(kept)} {unit}{'' if len(kept) == 1 else 's'}"
    if left_out:
        text += "; left out: " + "; ".join(left_out)
    # each stratum's counts in the order the text gives the pooled ones (the better side's first)
    flip = verdict.better is not None and verdict.better == second and first != second
    notes = tuple(f"{label}: {(d.swapped() if flip else d).first_only} vs {(d.swapped() if flip else d).second_only}"
                  for label, d in kept)
    return Verdict(text, verdict.outcome, verdict.better, verdict.counts, verdict.p, notes)
