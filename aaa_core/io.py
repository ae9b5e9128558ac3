"""Files: atomic writes, JSON, byte-deterministic torch archives, content hashes and the certification TSV
(Cohen's format, read here so that a renderer reads it without torch or scipy).

The bottom layer of aaa_core: it imports nothing else of the project (torch only inside the two functions
that need it), so a renderer that writes a JSON does not load model code. Every file is written to a
temporary name and renamed into place, so an interrupted stage never leaves an output that looks complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import secrets
import textwrap
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence



REDO = "re-run the stage that writes it"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary file is created as ``open(path, "w")`` would create it (mode 0666 less the umask), not
    with mkstemp's 0600, so outputs get the usual modes; a random name and O_EXCL keep writers apart.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj: Any, path: str | Path) -> None:
    """``torch.save``, atomic and byte-deterministic: the same content always gives the same file.

    Saved to a file, torch names the archive's records after the file (here a random temporary name), so
    every re-run changed the bytes and DVC's lock; saved to a buffer it names them ``archive/``, and its zip
    records carry no timestamp.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def load_torch(path: str | Path, *, what: str, error: type[Exception]) -> Any:
    """``torch.load`` (``weights_only=True``: a file never runs code) failing with one ``error`` line naming the file.

    torch fails on a damaged file in many ways: EOFError on an empty one (which click reports as a bare
    "Aborted!"), a miniz RuntimeError on a truncated one, KeyError or UnicodeDecodeError on a flipped byte,
    and a flipped byte in a tensor loads silently. The zip archive's own CRC-32s are checked first, so all
    of these become "truncated or corrupt".
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: missing; expected a {what}; {REDO}")
    _check_archive(path, what, error)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise error(f"{path}: refused by torch.load(weights_only=True): it holds more than tensors and plain "
                    f"data, or its pickle is damaged; expected a {what}; {REDO}") from err
    except Exception as err:  # an intact archive torch cannot read: any of its failure modes means the same
        raise error(f"{path}: unreadable {what} ({type(err).__name__}: {_one_line(err)}); {REDO}") from err


def _check_archive(path: Path, what: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``path`` is a complete zip archive (torch's format) whose records match their CRC-32s."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as err:  # a damaged archive fails in many ways: BadZipFile, EOFError, NotImplementedError...
        raise error(f"{path}: truncated or corrupt {what} ({path.stat().st_size} bytes, not a readable torch "
                    f"zip archive: {_one_line(err)}); {REDO}") from err
    if damaged is not None:
        raise error(f"{path}: corrupt {what} (record {damaged} fails its CRC-32 check); {REDO}")


def _one_line(err: BaseException, width: int = 200) -> str:
    """Another library's (often multi-line) message, folded and shortened to fit one line of ours."""
    return textwrap.shorten(str(err), width) or type(err).__name__


def write_json(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | Path) -> str:
    """The file's content hash: what decides whether a resume state still fits its inputs (a path or an mtime
    would not see a classifier replaced in place)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---- the certification TSV (Cohen's format; aaa_core.evaluation.certify writes it) ----

ABSTAIN = -1        # the predict column of an example on which the smoothed classifier abstained
TSV_HEADER = ("idx", "label", "predict", "radius", "correct", "time")


def read_certify_tsv(path: str | Path) -> list[dict]:
    """The rows of a certification TSV in Cohen's format at ``path``: per example {"idx", "label", "predict"
    (int, ``ABSTAIN`` = -1), "radius" (float), "correct" (bool)}, in the file's order; the time column is left
    out. Raises ``ValueError`` naming the file when the header is not Cohen's."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].split("\t") != list(TSV_HEADER):
        raise ValueError(f"{path}: expected the header {' '.join(TSV_HEADER)}")
    rows = []
    for line in lines[1:]:
        idx, label, pred, radius, correct, _ = line.split("\t")
        rows.append({"idx": int(idx), "label": int(label), "predict": int(pred), "radius": float(radius),
                     "correct": correct == "1"})
    return rows


def certified_flags(rows: Sequence[dict], radius: float) -> list[int]:
    """Per row of ``read_certify_tsv`` (in order), 1 where the smoothed pipeline is certified correct at L2
    ``radius`` (not abstained, correct, certified radius at least ``radius``), else 0: the flags a paired test
    reads."""
    return [int(r["correct"] and r["predict"] != ABSTAIN and r["radius"] >= radius) for r in rows]
