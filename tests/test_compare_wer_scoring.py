"""scripts/compare_wer_scoring.py: its hypothesis makers and the two scorers side by side."""

import argparse
import random

import pytest

from scripts.compare_wer_scoring import (
    both_wers,
    repeat_rates,
    split_compounds,
    with_errors,
    with_repeats,
)
from utils.official_wer import StmSegment


def test_repeat_rates_count_words_written_twice_in_a_row():
    rates = repeat_rates([["REGEN", "REGEN", "SONNE"], ["REGEN", "WIND"]])
    assert rates == {"REGEN": pytest.approx(1 / 3)}
    assert with_repeats(["REGEN", "SONNE"], random.Random(0), {"REGEN": 1.0}) == [
        "REGEN",
        "REGEN",
        "SONNE",
    ]


def test_split_compounds_writes_the_forms_the_clean_up_joins():
    assert split_compounds(["WIE-AUSSEHEN", "A+B", "NICHT-VIEL"]) == [
        "WIE",
        "AUSSEHEN",
        "A",
        "B",
        "NICHT-VIEL",
    ]


def test_error_rates_are_per_reference_word():
    args = argparse.Namespace(deletions=1.0, substitutions=0.0, insertions=0.0)
    assert with_errors(["A", "B"], random.Random(0), ["X"], args) == []
    args = argparse.Namespace(deletions=0.0, substitutions=1.0, insertions=1.0)
    assert with_errors(["A"], random.Random(0), ["X"], args) == ["X", "X"]


def test_the_original_joins_and_merges_what_the_official_scorer_counts():
    segments = (StmSegment("u1", "s", ("WIE-AUSSEHEN", "REGEN")),)
    original, official = both_wers(
        segments, [["WIE", "AUSSEHEN", "REGEN", "REGEN"]], True, "phoenix-2014t"
    )
    assert original == 0.0
    assert official == pytest.approx(100 * 3 / 2)  # 1 substitution, 2 insertions
