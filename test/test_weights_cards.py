"""The weights index and cards describe the files that actually ship.

superpoint_training/pretrained/README.md is the index (file, sha256, date, headline metric,
licence, card); each shipped file has a card of 40-60 lines beside it. A retrained file whose card
was not updated fails here: its sha256 or parameter count no longer matches.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from superpoint_training import load_superpoint
from superpoint_training.model.loading import NAMED_WEIGHTS

PRETRAINED = Path(__file__).resolve().parents[1] / "superpoint_training" / "pretrained"
SHIPPED = sorted(path.stem for path in PRETRAINED.glob("*.pth"))
CARD_SECTIONS = ("## Model and data", "## Command", "## Evaluation", "## Limits")


def _index_rows() -> dict[str, list[str]]:
    """The index's table of shipped files: file stem -> its cells."""
    rows = {}
    for line in (PRETRAINED / "README.md").read_text().splitlines():
        match = re.match(r"\| `([\w.]+)\.pth`", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in line.strip("|").split("|")]
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_index_lists_every_shipped_file_with_its_sha256_and_card():
    rows = _index_rows()
    assert SHIPPED and sorted(rows) == SHIPPED
    for name in SHIPPED:
        cells = rows[name]
        assert cells[1] == f"`{_sha256(PRETRAINED / f'{name}.pth')}`", name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cells[2]), cells[2]
        assert cells[4] == "MIT"
        assert cells[5] == f"[{name}.md]({name}.md)"
    index = (PRETRAINED / "README.md").read_text()
    for name in NAMED_WEIGHTS:  # the names the loader knows that do not ship are listed too
        assert f"`{name}" in index, name
    assert "(HISTORY.md)" in index and (PRETRAINED / "HISTORY.md").stat().st_size > 10_000


@pytest.mark.parametrize("name", SHIPPED)
def test_card_reads_as_a_card_of_its_file(name):
    card = (PRETRAINED / f"{name}.md").read_text()
    assert 40 <= len(card.splitlines()) <= 60
    positions = [card.index(section) for section in CARD_SECTIONS]
    assert positions == sorted(positions)
    assert _sha256(PRETRAINED / f"{name}.pth") in card
    parameters = sum(p.numel() for p in load_superpoint(name).model.parameters()) / 1e6
    assert f"{parameters:.2f} M parameters" in card


def test_descriptor_cards_compare_with_sift_and_orb_from_the_same_run():
    for name in SHIPPED:
        card = (PRETRAINED / f"{name}.md").read_text()
        evaluation = card[card.index("## Evaluation"):card.index("## Limits")]
        if load_superpoint(name).model.config.descriptor_dim:
            assert "| sift |" in evaluation and "| orb |" in evaluation and "20 RANSAC orders" in evaluation
        else:  # a detector only: the card says why there is no classical row
            assert "No SIFT or ORB row" in evaluation
