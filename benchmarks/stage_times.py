"""What each stage cost when it last ran: the wall time its metrics file records, per stage family and
dataset, for every pipeline (dvc.yaml, blackbox/, comparison/, ablations/), and the totals.

    python benchmarks/stage_times.py            # the table
    python benchmarks/stage_times.py --stages   # every stage
    python benchmarks/stage_times.py --changed aaa_core/knn.py   # what editing a file costs to re-run

With --changed (files, repeatable): the stages that depend on them and everything downstream (what
`dvc repro -P` re-runs), and, on a clone without the DVC cache (a fresh clone), the stages upstream of
those whose outputs they read (rebuilt first, unchanged), with their times.

Reads only committed files (each pipeline's dvc.lock for its stages and their metrics outputs, and the
`seconds` each stage writes into its metrics JSON). A stage whose metrics record no time (the renders)
counts 0. The times are those of the host the stage last ran on (see the README's "Results"), and they
leave out DVC's own work between stages (a few seconds a stage).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def stage_seconds(root: Path = ROOT) -> dict[str, dict[str, float]]:
    """Pipeline (its dvc.yaml) -> stage -> seconds, for the stages each dvc.lock records."""
    out = {}
    for lock in [root / "dvc.lock", *sorted(root.glob("*/dvc.lock"))]:
        pipeline = str((lock.parent / "dvc.yaml").relative_to(root))
        stages = {}
        for name, entry in yaml.safe_load(lock.read_text())["stages"].items():
            seconds = 0.0
            for o in entry.get("outs", []):
                path = root / o["path"]
                if path.suffix == ".json" and path.is_file():
                    data = json.loads(path.read_text())
                    if isinstance(data, dict) and isinstance(data.get("seconds"), (int, float)):
                        seconds += data["seconds"]
            stages[name] = seconds
        out[pipeline] = stages
    return out


def _within(path: str, dep: str) -> bool:
    """``path`` is the dependency ``dep`` or lies in that folder."""
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def rebuild(changed: list[str], root: Path = ROOT) -> tuple[list[str], list[str]]:
    """(stale stages, upstream stages a clone without the cache rebuilds first) for files ``changed``."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stages = {stage.addressing: stage for stage in repo.index.stages}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", action="store_true", help="every stage, not only the families")
    parser.add_argument("--changed", action="append", default=[], metavar="FILE",
                        help="a file whose edit to price (repeatable)")
    args = parser.parse_args()
    if args.changed:
        times = {(name if pipeline == "dvc.yaml" else f"{pipeline}:{name}"): seconds
                 for pipeline, stages in stage_seconds().items() for name, seconds in stages.items()}
        stale, upstream = rebuild(args.changed)
        for label, names in (("re-run (changed or downstream)", stale), ("rebuilt first on a fresh clone", upstream)):
            print(f"{label}: {len(names)} stage(s), {sum(times.get(n, 0) for n in names) / 60:.1f} minutes")
            if args.stages:
                print("".join(f"  {n} {times.get(n, 0) / 60:.1f}\n" for n in names), end="")
        print(f"in all: {sum(times.get(n, 0) for n in stale + upstream) / 60:.1f} minutes of stage time "
              f"(plus about 3.5 s a stage of Python and DVC)")
        return
    grand = 0.0
    for pipeline, stages in stage_seconds().items():
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


if __name__ == "__main__":
    main()
