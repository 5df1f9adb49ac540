"""Gloss clean-up applied before scoring WER on the Phoenix corpora.

The published evaluation normalises both references and hypotheses with a fixed,
ordered list of regular-expression rewrites (a Python port of the sed script that
ships with Phoenix-2014), then removes consecutive repetitions. Phoenix-2014 and
Phoenix-2014T use different lists. Each list below is a table of
``(pattern, replacement, times)`` rows applied top to bottom; ``times`` repeats a
rewrite whose matches can overlap (e.g. joining a run of single letters).

Which clean-up applies is chosen by dataset name with :func:`get_gloss_cleaner`.
"""

import logging
import re
from collections.abc import Callable
from itertools import groupby

from utils.errors import ConfigurationError, DataError

logger = logging.getLogger(__name__)

# A rule: compiled pattern, replacement, and how many times to apply the substitution.
Rule = tuple[re.Pattern[str], str, int]


def _rules(*rows: tuple[str, str] | tuple[str, str, int]) -> tuple[Rule, ...]:
    """Compile ``(pattern, replacement[, times])`` rows into an immutable rule table."""
    table = []
    for row in rows:
        pattern, replacement = row[0], row[1]
        times = row[2] if len(row) == 3 else 1
        table.append((re.compile(pattern), replacement, times))
    return tuple(table)


# Fingerspelled letters come out of the recogniser as separate glosses ("A B C");
# the annotation writes them joined with '+' ("A+B+C"). Both corpora share this block.
_JOIN_SPELLED_LETTERS = (
    (r"^([A-Z]) ([A-Z][+ ])", r"\1+\2"),
    (r"[ +]([A-Z]) ([A-Z]) ", r" \1+\2 "),
    # Each pass joins every other pair of a run, so three passes join runs of letters.
    (r"([ +][A-Z]) ([A-Z][ +])", r"\1+\2", 3),
    (r"([ +]SCH) ([A-Z][ +])", r"\1+\2"),
    (r"([ +]NN) ([A-Z][ +])", r"\1+\2"),
    (r"([ +][A-Z]) (NN[ +])", r"\1+\2"),
    (r"([ +][A-Z]) ([A-Z])$", r"\1+\2"),
)

# Collapse an upper-case gloss immediately repeated as a whole word ("REGEN REGEN"): the
# release's script runs this perl substitution four times.
_MERGE_REPEATS_PERL = ((r"(?<![\w-])(\b[A-Z]+(?![\w-])) \1(?![\w-])", r"\1", 4),)
# The Python clean-up also normalises the spaces around it.
_MERGE_REPEATS = ((r" +", " "), *_MERGE_REPEATS_PERL, (r" +", " "))

_PHOENIX_2014_REWRITES = (
    # Drop lower-case prefixes that mark location, classifier, question, possessive, left hand.
    (r"loc-", ""),
    (r"cl-", ""),
    (r"qu-", ""),
    (r"poss-", ""),
    (r"lh-", ""),
    # Spelling variants that the annotation merged.
    (r"S0NNE", "SONNE"),
    (r"HABEN2", "HABEN"),
    # Non-sign events.
    (r"__EMOTION__", ""),
    (r"__PU__", ""),
    (r"__LEFTHAND__", ""),
    (r"WIE AUSSEHEN", "WIE-AUSSEHEN"),
    (r"ZEIGEN ", "ZEIGEN-BILDSCHIRM "),
    (r"ZEIGEN$", "ZEIGEN-BILDSCHIRM"),
    *_JOIN_SPELLED_LETTERS,
    (r"([A-Z][A-Z])RAUM", r"\1"),
    (r"-PLUSPLUS", ""),
)

PHOENIX_2014_RULES: tuple[Rule, ...] = _rules(*_PHOENIX_2014_REWRITES, *_MERGE_REPEATS)

# The sed and perl chain of the release's ``preprocess.sh`` exactly: the same rewrites, no
# space normalisation (the official scorer applies it to each line of a CTM file).
PREPROCESS_SH_RULES: tuple[Rule, ...] = _rules(*_PHOENIX_2014_REWRITES, *_MERGE_REPEATS_PERL)

PHOENIX_2014T_RULES: tuple[Rule, ...] = _rules(
    # Non-sign events, none of which is in the Phoenix-2014T gloss vocabulary.
    (r"__LEFTHAND__", ""),
    (r"__EPENTHESIS__", ""),
    (r"__EMOTION__", ""),
    (r"\b__[^_ ]*__\b", ""),
    (r"\bloc-([^ ]*)\b", r"\1"),
    (r"\bcl-([^ ]*)\b", r"\1"),
    (r"\b([^ ]*)-PLUSPLUS\b", r"\1"),
    (r"\b([A-Z][A-Z]*)RAUM\b", r"\1"),
    (r"WIE AUSSEHEN", "WIE-AUSSEHEN"),
    *_JOIN_SPELLED_LETTERS,
    *_MERGE_REPEATS,
)

# Markers that must be gone after the Phoenix-2014 clean-up: the original release asserts
# this; the release's ``preprocess.sh`` drops every line that still holds one (``grep -v``).
PREPROCESS_SH_DROPPED = ("__LEFTHAND__", "__EPENTHESIS__", "__EMOTION__")


def apply_rules(text: str, rules: tuple[Rule, ...]) -> str:
    """Apply a rule table to ``text`` in order (after stripping it)."""
    text = text.strip()
    for pattern, replacement, times in rules:
        for _ in range(times):
            text = pattern.sub(replacement, text)
    return text


def _drop_consecutive_repeats(text: str) -> str:
    """Remove immediately repeated tokens, then normalise whitespace.

    Repeats are found on a split at single spaces (as published), so ``"A A"`` becomes
    ``"A"``; the result is re-split on any whitespace and joined with single spaces.
    """
    deduplicated = " ".join(token for token, _ in groupby(text.split(" ")))
    return " ".join(deduplicated.split())


def clean_phoenix_2014(glosses: str) -> str:
    """Normalise a Phoenix-2014 gloss string (reference or hypothesis) before WER.

    Raises:
        DataError: if a non-sign marker that the published clean-up forbids survives.
    """
    text = apply_rules(glosses, PHOENIX_2014_RULES)
    for marker in PREPROCESS_SH_DROPPED:
        if marker in text:
            raise DataError(
                f"gloss string still contains {marker} after Phoenix-2014 clean-up: {glosses!r}"
            )
    return _drop_consecutive_repeats(text)


def clean_phoenix_2014t(glosses: str) -> str:
    """Normalise a Phoenix-2014T gloss string (reference or hypothesis) before WER."""
    return _drop_consecutive_repeats(apply_rules(glosses, PHOENIX_2014T_RULES))


def _no_cleanup(glosses: str) -> str:
    """Identity clean-up (CSL-Daily, the synthetic demo and own data are scored as they are)."""
    return glosses


def get_gloss_cleaner(dataset_name: str) -> Callable[[str], str]:
    """Return the gloss clean-up for a dataset, looked up by its exact name.

    Args:
        dataset_name: one of ``phoenix-2014``, ``phoenix-2014t``, ``csl-daily``, ``demo``
            (the synthetic dataset), ``custom`` (own data).

    Raises:
        ConfigurationError: for any other name; the message lists the valid ones.
    """
    cleaners: dict[str, Callable[[str], str]] = {
        "phoenix-2014": clean_phoenix_2014,
        "phoenix-2014t": clean_phoenix_2014t,
        "csl-daily": _no_cleanup,
        "demo": _no_cleanup,
        "custom": _no_cleanup,
    }
    if dataset_name not in cleaners:
        raise ConfigurationError(
            f"unknown dataset name {dataset_name!r} for gloss clean-up; "
            f"expected one of {sorted(cleaners)}"
        )
    return cleaners[dataset_name]
