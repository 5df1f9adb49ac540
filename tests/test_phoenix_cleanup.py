"""Phoenix gloss clean-up rules, checked on hand-made strings."""

import pytest

from utils.errors import ConfigurationError, DataError
from utils.phoenix_cleanup import (
    PHOENIX_2014_RULES,
    PREPROCESS_SH_RULES,
    apply_rules,
    clean_phoenix_2014,
    clean_phoenix_2014t,
    get_gloss_cleaner,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # lower-case prefixes are dropped
        ("loc-REGION cl-KOMMEN poss-EUCH qu-DU lh-HOCH", "REGION KOMMEN EUCH DU HOCH"),
        # non-sign markers go, __ON__/__OFF__ stay; whitespace is normalised
        (
            "__ON__ __EMOTION__ WETTER __PU__  __LEFTHAND__ MORGEN __OFF__",
            "__ON__ WETTER MORGEN __OFF__",
        ),
        ("S0NNE HABEN2", "SONNE HABEN"),
        ("ZEIGEN WETTER ZEIGEN", "ZEIGEN-BILDSCHIRM WETTER ZEIGEN-BILDSCHIRM"),
        ("WIE AUSSEHEN", "WIE-AUSSEHEN"),
        # two capitals before RAUM are needed; -PLUSPLUS is dropped
        ("NORDRAUM RAUM loc-ORT-PLUSPLUS", "NORD RAUM ORT"),
        # fingerspelled letters are joined with '+'
        ("WETTER A B C", "WETTER A+B+C"),
        ("A B WETTER", "A+B WETTER"),
        # repeated glosses collapse
        ("REGEN REGEN REGEN SONNE", "REGEN SONNE"),
        ("  WETTER  ", "WETTER"),
    ],
)
def test_phoenix_2014_rules(raw: str, expected: str) -> None:
    assert clean_phoenix_2014(raw) == expected


def test_phoenix_2014_rejects_epenthesis_marker() -> None:
    with pytest.raises(DataError, match="__EPENTHESIS__"):
        clean_phoenix_2014("WETTER __EPENTHESIS__ MORGEN")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # every __X__ marker is removed, unlike the Phoenix-2014 variant
        ("__ON__ WETTER __EPENTHESIS__ __OFF__", "WETTER"),
        # only loc- and cl- prefixes are removed
        ("loc-REGION cl-KOMMEN poss-EUCH neg-HABEN", "REGION KOMMEN poss-EUCH neg-HABEN"),
        ("loc-SUEDRAUM RAUM ORT-PLUSPLUS", "SUED RAUM ORT"),
        ("WETTER A B C", "WETTER A+B+C"),
        ("WIE AUSSEHEN MORGEN MORGEN", "WIE-AUSSEHEN MORGEN"),
        # consecutive repeats of any token collapse
        ("poss-EUCH poss-EUCH", "poss-EUCH"),
        # Phoenix-2014-only rules do not apply
        ("S0NNE ZEIGEN", "S0NNE ZEIGEN"),
    ],
)
def test_phoenix_2014t_rules(raw: str, expected: str) -> None:
    assert clean_phoenix_2014t(raw) == expected


def test_cleaner_lookup_by_exact_name() -> None:
    assert get_gloss_cleaner("phoenix-2014") is clean_phoenix_2014
    assert get_gloss_cleaner("phoenix-2014t") is clean_phoenix_2014t
    assert get_gloss_cleaner("csl-daily")("loc-A  A A") == "loc-A  A A"


@pytest.mark.parametrize("name", ["Phoenix-2014T", "phoenix2014", "cslr", ""])
def test_cleaner_lookup_lists_valid_names(name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        get_gloss_cleaner(name)
    for valid in ("phoenix-2014", "phoenix-2014t", "csl-daily"):
        assert valid in str(info.value)


@pytest.mark.parametrize(
    "raw",
    ["loc-REGION A B C REGEN REGEN", "WIE AUSSEHEN ZEIGEN", "__PU__ S0NNE NORDRAUM-PLUSPLUS"],
)
def test_preprocess_sh_rules_are_the_clean_up_without_space_normalisation(raw: str) -> None:
    """The release's sed/perl chain: the same rewrites, spaces left as they come."""
    assert apply_rules(raw, PREPROCESS_SH_RULES) == apply_rules(raw, PHOENIX_2014_RULES)
    # __PU__ leaves two spaces that only the Python clean-up closes
    assert apply_rules("A __PU__ B", PREPROCESS_SH_RULES) == "A  B"
    assert apply_rules("A __PU__ B", PHOENIX_2014_RULES) == "A B"
