"""Signs of life for long loops: a tqdm bar on a terminal, a short line at a fixed interval otherwise.

``dvc repro`` and CI capture stderr into a log, where a redrawn bar is noise; there a loop prints at most one
line every ``AAA_PROGRESS_SECONDS`` seconds (default 60) with how far it got, its rate and the time left.
``AAA_PROGRESS=0`` silences both; under torchrun only rank 0 reports. Only the first line of a loop waits the full interval, so a loop shorter
than that prints nothing.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("AAA_PROGRESS_SECONDS", "60")))
    except ValueError:
        return 60.0


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress(items: Iterable[T], desc: str, total: int | None = None, *, stream=None) -> Iterator[T]:
    """Iterate ``items`` (of known length, or ``total``), reporting progress on ``stream`` (stderr)."""
    stream = stream if stream is not None else sys.stderr
    if total is None:
        total = len(items)  # type: ignore[arg-type]
    if os.environ.get("AAA_PROGRESS") == "0" or os.environ.get("RANK", "0") != "0" or total == 0:
        yield from items
        return
    if getattr(stream, "isatty", lambda: False)():
        yield from tqdm(items, desc=desc, total=total, file=stream, leave=False, dynamic_ncols=True)
        return
    interval, start = _interval(), time.monotonic()
    next_report = start + interval
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now >= next_report and done < total:
            elapsed = now - start
            print(f"{desc}: {done}/{total} ({done / total:.0%}), {_clock(elapsed)} elapsed, "
                  f"about {_clock(elapsed / done * (total - done))} left", file=stream, flush=True)
            next_report = now + interval
