"""The README is short (issue 28, point 6): at most 1,500 words before its first link to a deeper
document, and those words hold the quick start, a measured time per command on a CPU and a GPU, one
results table with its provenance in a sentence, and two figures; the rest lives in docs/."""

from __future__ import annotations

import re

from conftest import ROOT

# A link to a deeper document: a Markdown link (not an image) to a .md file (docs/*.md, bench/README.md, ...).
DEEPER_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)#\s]+\.md)(#[^)]*)?\)")
MAX_WORDS = 1_500


def before_first_deeper_link(text: str) -> str:
    m = DEEPER_LINK.search(text)
    assert m, "the README links no deeper document"
    return text[: m.start()]


def test_the_readme_says_its_essentials_in_at_most_1500_words_before_its_first_deeper_link():
    head = before_first_deeper_link((ROOT / "README.md").read_text())
    words = len(head.split())  # every whitespace-separated token, code and table cells included
    assert words <= MAX_WORDS, f"{words} words before the README's first link to a deeper document"
    assert head.index("## Quick start") < head.index("## Results")
    assert "make run     # creates .venv" in head and "make test    # creates .venv" in head
    assert "| command | on a CPU | on a GPU |" in head  # a time per command, or "not measured yet"
    assert head.count("| Run | Optimizer |") == 1 and "**What produced these numbers:**" in head
    assert len(re.findall(r"!\[[^\]]*\]\(figures/[^)]+\.png\)", head)) == 2


def test_every_deeper_document_the_readme_links_exists():
    for target, _ in DEEPER_LINK.findall((ROOT / "README.md").read_text()):
        assert (ROOT / target).is_file(), target


def test_word_count_stops_at_the_first_link_to_a_document_not_at_an_image():
    text = "one two ![fig](figures/a.png) three [docs](docs/usage.md) four five"
    assert before_first_deeper_link(text).split() == ["one", "two", "![fig](figures/a.png)", "three"]
