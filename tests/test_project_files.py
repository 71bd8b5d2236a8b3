"""Project metadata: licence, citation, and the pins the notebooks need."""

from __future__ import annotations

import yaml

from conftest import ROOT


def test_license_is_mit():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 The compact-resnets-cifar10 authors" in text


def test_citation_cff_parses_and_credits_the_seed_report():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"] and cff["message"] and cff["authors"]
    seed = cff["references"][0]
    assert seed["title"] == "ECE-GY 7123 Introduction to Deep Learning Mini-Project"
    assert [a["given-names"] + " " + a["family-names"] for a in seed["authors"]] == [
        "Lorenzo Schellack", "Siddharth Shah", "Sikang Yang"]


def test_ipywidgets_is_pinned_for_notebook_progress_bars():
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert any(p.startswith("ipywidgets==") for p in pins)
