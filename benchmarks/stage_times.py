"""What each stage cost when it last ran: the wall time its metrics file records, per stage family and
dataset, for every pipeline (dvc.yaml, blackbox/, comparison/, ablations/), and the totals.

    python benchmarks/stage_times.py            # the table
    python benchmarks/stage_times.py --stages   # every stage
    python benchmarks/stage_times.py --changed aaa_core/evaluation/knn.py   # what editing a file costs to re-run
    python benchmarks/stage_times.py --budget   # exit 1 when the committed times exceed the budgets

With --changed (files, repeatable): the stages that depend on them and everything downstream (what
`dvc repro -P` re-runs), and, on a clone without the DVC cache (a fresh clone), the stages upstream of
those whose outputs they read (rebuilt first, unchanged), with their times.

With --budget: the study (dvc.yaml) must fit in STUDY_BUDGET_MIN minutes of stage time and all pipelines
together in ALL_BUDGET_MIN (override with --study-minutes, --all-minutes); it prints the totals against the
budgets and exits 0, or one line per exceeded budget and per stage without a recorded time, and exits 1.

Reads only committed files: every pipeline's stages and their metrics outputs as the dvc.yaml files
define them (DVC expands foreach/matrix), and the `seconds` each metrics JSON records. A stage's time is
the sum over its metrics outputs (a stage may write several, or a folder of them under metrics/, each
record timing its own share of the stage). The render and summarize stages (those whose commands run only
`stages.render_*` or `stages.summarize`, one by one or chained by `stages.chain`) record no time by design
and count 0;
any other stage that lacks a metrics output, or whose metrics file is missing or records no `seconds`,
is "missing": it counts 0 in the table (flagged below it) and fails --budget. The times are those of the
host the stage last ran on (each metrics file's `runtime`), and they leave out DVC's own work between stages
(a few seconds a stage).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY_PIPELINE = "dvc.yaml"   # the study; every other dvc.yaml is a pipeline beside it
# Ceilings on the committed stage times, as rebuilt on the slower 2-core host (AMD EPYC, AVX2 only): `make repro`
# in 30 minutes and every pipeline in 60 leave these for the stages, the rest for set-up and DVC.
STUDY_BUDGET_MIN = 25         # minutes of stage time for the study (dvc.yaml)
ALL_BUDGET_MIN = 50           # minutes of stage time for all pipelines together
# a command that runs only these modules (one by one, or chained) renders or summarizes metrics and records no
# time by design
UNTIMED_MODULE = re.compile(r"render_\w+|summarize|chain")
_MODULE = re.compile(r"\bstages\.(\w+)")


@dataclass
class StageTime:
    """One stage's recorded time: the sum of the ``seconds`` of its metrics outputs."""
    seconds: float = 0.0
    metrics: list[str] = field(default_factory=list)   # its metrics outputs (repository paths)
    folders: list[str] = field(default_factory=list)   # its folders of records (their JSONs are in metrics)
    missing: list[str] = field(default_factory=list)   # why a part of its time is unknown, if it is
    untimed: bool = False                               # a render/summarize stage: no time by design


def _untimed(cmd) -> bool:
    """Every command of the stage runs only render/summarize modules of ``stages``."""
    cmds = [cmd] if isinstance(cmd, str) else list(cmd or [])
    modules = [_MODULE.findall(c) for c in cmds]
    return bool(cmds) and all(ms and all(UNTIMED_MODULE.fullmatch(m) for m in ms) for ms in modules)


def _recorded(path: Path) -> float | str:
    """The ``seconds`` a metrics JSON records, or why there is none."""
    if not path.is_file():
        return "no such file"
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        return f"not JSON ({err})"
    seconds = data.get("seconds") if isinstance(data, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds < 0:
        return f"records no seconds ({seconds!r})"
    return float(seconds)


def _pipelines(repo, root: Path) -> dict[str, list]:
    """Pipeline (its dvc.yaml, relative to ``root``) -> its stages, dvc.yaml first, the others by path."""
    out = defaultdict(list)
    for stage in repo.index.stages:
        out[Path(stage.dvcfile.path).resolve().relative_to(root.resolve()).as_posix()].append(stage)
    return {p: out[p] for p in sorted(out, key=lambda p: (p != STUDY_PIPELINE, p))}


def label(pipeline: str, name: str) -> str:
    """A stage as `dvc repro` names it from the repository root."""
    return name if pipeline == STUDY_PIPELINE else f"{pipeline}:{name}"


def stage_times(root: Path = ROOT) -> dict[str, dict[str, StageTime]]:
    """Pipeline (its dvc.yaml) -> stage -> its recorded time, for every stage the dvc.yaml files define."""
    from dvc.repo import Repo

    root = Path(root)
    out = {}
    with Repo(str(root), uninitialized=True) as repo:
        for pipeline, stages in _pipelines(repo, root).items():
            times = {}
            for stage in stages:
                t = StageTime(untimed=_untimed(stage.cmd))
                for o in stage.outs:
                    rel = Path(o.fs_path).resolve().relative_to(root.resolve()).as_posix()
                    if o.metric or rel.endswith(".json"):
                        t.metrics.append(rel)
                    elif not o.use_cache and rel.startswith("metrics/"):   # a folder of per-pipeline records
                        t.folders.append(rel)
                        t.metrics += sorted(p.relative_to(root).as_posix() for p in (root / rel).rglob("*.json"))
                for rel in t.metrics:
                    seconds = _recorded(root / rel)
                    if isinstance(seconds, float):
                        t.seconds += seconds
                    elif not t.untimed:
                        t.missing.append(f"{rel}: {seconds}")
                if not t.metrics and not t.untimed:
                    t.missing.append("no metrics output to record its time")
                times[stage.name] = t
            out[pipeline] = times
    return out


def stage_seconds(root: Path = ROOT) -> dict[str, dict[str, float]]:
    """Pipeline (its dvc.yaml) -> stage -> seconds (a missing time counts 0 here)."""
    return {p: {n: t.seconds for n, t in ts.items()} for p, ts in stage_times(root).items()}


def budget_report(root: Path = ROOT, study_min: float = STUDY_BUDGET_MIN, all_min: float = ALL_BUDGET_MIN,
                  times: dict[str, dict[str, StageTime]] | None = None) -> list[str]:
    """The violations of the budgets, one line each (none: the committed times fit): the study (dvc.yaml)
    over ``study_min`` minutes, all pipelines over ``all_min``, and every stage whose time is missing."""
    times = stage_times(root) if times is None else times
    study = sum(t.seconds for t in times.get(STUDY_PIPELINE, {}).values())
    every = sum(t.seconds for ts in times.values() for t in ts.values())
    problems = []
    if study > study_min * 60:
        problems.append(f"over budget: the study ({STUDY_PIPELINE}) takes {study / 60:.1f} minutes of stage time, "
                        f"over its budget of {study_min:g} minutes")
    if every > all_min * 60:
        problems.append(f"over budget: all pipelines ({', '.join(times)}) take {every / 60:.1f} minutes of stage "
                        f"time, over their budget of {all_min:g} minutes")
    for pipeline, ts in times.items():
        for name, t in ts.items():
            if t.missing:
                problems.append(f"missing time: {label(pipeline, name)} ({'; '.join(t.missing)}); "
                                f"its time is unknown, not 0")
    return problems


def _within(path: str, dep: str) -> bool:
    """``path`` is the dependency ``dep`` or lies in that folder."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def rebuild(changed: list[str], root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(stale stages, upstream stages a clone without the cache rebuilds first) for files ``changed``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = {label(pipeline, stage.name): stage
                  for pipeline, in_pipeline in _pipelines(repo, root).items() for stage in in_pipeline}
        rel = lambda p: str(Path(p).resolve().relative_to(root.resolve()))   # noqa: E731
        outs = {rel(o.fs_path): (name, o.use_cache) for name, stage in stages.items() for o in stage.outs}
        deps = {name: [rel(d.fs_path) for d in stage.deps] for name, stage in stages.items()}
    # per stage, the stages whose outputs it reads, and those of them whose outputs a clone lacks (git holds
    # the rest: metrics and reports)
    feeds = {name: {(outs[o][0], outs[o][1]) for d in ds for o in outs if _within(o, d)} for name, ds in deps.items()}
    touched = {rel(root / c) for c in changed}
    stale = {n for n, ds in deps.items() if any(_within(t, d) for t in touched for d in ds)}
    grew = True
    while grew:   # everything downstream of a stale stage
        more = {n for n, fed in feeds.items() if n not in stale and any(p in stale for p, _ in fed)}
        stale |= more
        grew = bool(more)
    upstream, todo = set(), list(stale)
    while todo:   # the unchanged stages whose cached outputs the stale ones read, transitively
        for p, cached in feeds[todo.pop()]:
            if cached and p not in stale and p not in upstream:
                upstream.add(p)
                todo.append(p)
    return sorted(stale), sorted(upstream)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", action="store_true", help="every stage, not only the families")
    parser.add_argument("--changed", action="append", default=[], metavar="FILE",
                        help="a file whose edit to price (repeatable)")
    parser.add_argument("--budget", action="store_true",
                        help="exit 1 when the committed times exceed the budgets or a stage records no time")
    parser.add_argument("--study-minutes", type=float, default=STUDY_BUDGET_MIN, metavar="MIN",
                        help=f"the study's ({STUDY_PIPELINE}) budget with --budget (default {STUDY_BUDGET_MIN})")
    parser.add_argument("--all-minutes", type=float, default=ALL_BUDGET_MIN, metavar="MIN",
                        help=f"all pipelines' budget with --budget (default {ALL_BUDGET_MIN})")
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    root = args.root
    if args.budget and args.changed:
        parser.error("--budget and --changed are separate questions: ask one at a time")
    if args.budget:
        times = stage_times(root)
        problems = budget_report(root, args.study_minutes, args.all_minutes, times=times)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        study = sum(t.seconds for t in times.get(STUDY_PIPELINE, {}).values())
        every = sum(t.seconds for ts in times.values() for t in ts.values())
        print(f"study ({STUDY_PIPELINE}): {study / 60:.1f} of {args.study_minutes:g} minutes")
        print(f"all pipelines ({len(times)}): {every / 60:.1f} of {args.all_minutes:g} minutes")
        return 0
    if args.changed:
        times = {label(pipeline, name): seconds
                 for pipeline, stages in stage_seconds(root).items() for name, seconds in stages.items()}
        stale, upstream = rebuild(args.changed, root)
        for heading, names in (("re-run (changed or downstream)", stale), ("rebuilt first on a fresh clone", upstream)):
            print(f"{heading}: {len(names)} stage(s), {sum(times.get(n, 0) for n in names) / 60:.1f} minutes")
            if args.stages:
                print("".join(f"  {n} {times.get(n, 0) / 60:.1f}\n" for n in names), end="")
        print(f"in all: {sum(times.get(n, 0) for n in stale + upstream) / 60:.1f} minutes of stage time "
              f"(plus about 3.5 s a stage of Python and DVC)")
        return 0
    grand = 0.0
    missing = []
    for pipeline, timed in stage_times(root).items():
        stages = {name: t.seconds for name, t in timed.items()}
        missing += [label(pipeline, name) for name, t in timed.items() if t.missing]
        families: dict[tuple[str, str], list[float]] = defaultdict(list)
        for name, seconds in stages.items():
            family, _, key = name.partition("@")
            dataset = next((d for d in ("fashion_mnist", "mnist", "cifar10") if key.startswith(d)), "")
            families[(family, dataset)].append(seconds)
            if args.stages:
                print(f"{pipeline}:{name:50s} {seconds / 60:7.1f} min")
        total = sum(stages.values())
        grand += total
        print(f"\n{pipeline}: {len(stages)} stages, {total / 60:.1f} minutes")
        for (family, dataset), times in sorted(families.items(), key=lambda kv: -sum(kv[1])):
            print(f"  {family:28s} {dataset:14s} {len(times):3d} stage(s) {sum(times) / 60:7.1f} min")
    print(f"\nall pipelines: {grand / 60:.1f} minutes of stage time")
    if missing:
        print(f"missing: {len(missing)} stage(s) record no time (counted 0 above; --budget fails): "
              + ", ".join(missing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
