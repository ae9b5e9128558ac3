"""The README's numbers come from the metrics: its headline block is what stages.render_readme renders from the
committed metrics, and no report or README calls an unshown difference a tie."""
import re
from pathlib import Path

import pytest

from aaa_core.config import load_params
from aaa_core.errors import AAAError
from stages.render_readme import END, START, headline_lines, replace_block

ROOT = Path(__file__).resolve().parents[1]


def rendered_readme(readme: str) -> str:
    params = load_params(ROOT / "params.yaml")
    return replace_block(readme, headline_lines(ROOT / "metrics", params.loss, params.scale), "README.md")


def test_the_readme_headline_block_is_rendered_from_the_committed_metrics():
    readme = (ROOT / "README.md").read_text()
    assert readme == rendered_readme(readme), "README.md's headline block is stale: python -m stages.render_readme"


def test_a_hand_edited_number_in_the_block_is_caught():
    readme = rendered_readme((ROOT / "README.md").read_text())
    block = readme.split(START)[1].split(END)[0]
    edited = readme.replace(block, re.sub(r"\d+\.\d", "99.9", block, count=1))
    assert edited != readme and edited != rendered_readme(edited) and rendered_readme(edited) == readme


def test_a_block_without_its_markers_is_refused():
    with pytest.raises(AAAError, match="headline:start"):
        replace_block("no markers here", ["x"], "README.md")


def test_no_report_and_not_the_readme_calls_a_difference_a_tie():
    texts = {p.name: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "reports").glob("*.md"))]}
    assert {name for name, text in texts.items() if re.search(r"\btie\b", text, re.IGNORECASE)} == set()
