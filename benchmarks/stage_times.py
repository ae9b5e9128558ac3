"""What each stage cost when it last ran: the wall time its metrics file records, per stage family and
dataset, for every pipeline (dvc.yaml, blackbox/, comparison/, ablations/), and the totals.

    python benchmarks/stage_times.py            # the table
    python benchmarks/stage_times.py --stages   # every stage

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", action="store_true", help="every stage, not only the families")
    args = parser.parse_args()
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
