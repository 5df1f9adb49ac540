"""The original release's WER beside the official one, on hypotheses made from real references.

    python scripts/compare_wer_scoring.py --data ../shared/data --seeds 10

For the dev and test splits of Phoenix-2014 and Phoenix-2014T it scores, with both scorers,
hypotheses made from the references (decoded as the published configs decode: upper case
for Phoenix-2014T, whose gloss vocabulary is lower-case; the annotation's case for
Phoenix-2014):

* ``reference``: the references themselves;
* ``annotation case``: the references in the annotation's case, as VAC and CorrNet decode
  (the original's WER then keeps the references' case too);
* ``random errors``: seeded deletions, substitutions and insertions (``--deletions``,
  ``--substitutions``, ``--insertions`` per reference word; substitutes and insertions drawn
  from the split's glosses), mean over ``--seeds`` seeds with the standard deviation;
* ``train repeats``: every word written twice as often as the training annotation repeats
  it (Phoenix-2014's train split writes ``REGEN REGEN`` 1371 times, its dev and test
  references were cleaned of repeats), mean over the seeds;
* ``split compounds``: ``WIE-AUSSEHEN`` written ``WIE AUSSEHEN`` and ``A+B`` as ``A B`` (the
  forms the original's clean-up joins, and Phoenix-2014's train split writes letters apart).

The original's WER cleans both sides (``utils.metrics.recognition_wer``); the official one
rewrites the hypothesis one word per line and takes sclite's counts against the STM as
annotated (``utils.official_wer``).
"""

from __future__ import annotations

import argparse
import collections
import random
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.annotations import load_annotations  # noqa: E402
from utils.metrics import recognition_wer  # noqa: E402
from utils.official_wer import StmSegment, ground_truth, official_wer  # noqa: E402

SPLITS = (
    ("phoenix-2014", "dev"),
    ("phoenix-2014", "test"),
    ("phoenix-2014t", "dev"),
    ("phoenix-2014t", "test"),
)
DECODES_UPPER = {"phoenix-2014": False, "phoenix-2014t": True}

Hypotheses = Callable[[random.Random], list[list[str]]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--deletions", type=float, default=0.10)
    parser.add_argument("--substitutions", type=float, default=0.08)
    parser.add_argument("--insertions", type=float, default=0.03)
    return parser.parse_args(argv)


# -- hypotheses ------------------------------------------------------------------------------
def with_errors(
    words: Sequence[str], rng: random.Random, vocabulary: Sequence[str], args: argparse.Namespace
) -> list[str]:
    """Each word deleted, substituted or kept, then maybe a word inserted after it."""
    out = []
    for word in words:
        draw = rng.random()
        if draw >= args.deletions:
            substituted = draw < args.deletions + args.substitutions
            out.append(rng.choice(vocabulary) if substituted else word)
        if rng.random() < args.insertions:
            out.append(rng.choice(vocabulary))
    return out


def repeat_rates(train: Sequence[Sequence[str]]) -> dict[str, float]:
    """Gloss -> how often the training annotation writes it twice in a row, per occurrence."""
    totals = collections.Counter(w for words in train for w in words)
    repeats = collections.Counter(
        a for w in train for a, b in zip(w, w[1:], strict=False) if a == b
    )
    return {word: count / totals[word] for word, count in repeats.items()}


def with_repeats(words: Sequence[str], rng: random.Random, rates: dict[str, float]) -> list[str]:
    out = []
    for word in words:
        out.extend([word, word] if rng.random() < rates.get(word, 0.0) else [word])
    return out


def split_compounds(words: Sequence[str]) -> list[str]:
    return " ".join(words).replace("WIE-AUSSEHEN", "WIE AUSSEHEN").replace("+", " ").split()


# -- scoring ---------------------------------------------------------------------------------
def both_wers(
    segments: Sequence[StmSegment], hypotheses: Sequence[list[str]], upper: bool, dataset: str
) -> tuple[float, float]:
    """(the original's WER, the official WER); ``upper``: the decoder writes upper case."""
    references = [" ".join(s.words) for s in segments]
    decoded = [[w.upper() for w in h] if upper else list(h) for h in hypotheses]
    original = recognition_wer(
        [r.upper() for r in references] if upper else references,
        [" ".join(h) for h in decoded],
        dataset,
    )["wer"]
    texts = {s.utterance: " ".join(h) for s, h in zip(segments, decoded, strict=True)}
    return original, official_wer(texts, segments)["wer"]


def scenarios(
    segments: Sequence[StmSegment], rates: dict[str, float], args: argparse.Namespace
) -> dict[str, tuple[Hypotheses, bool]]:
    """Name -> (hypotheses from a random generator, whether a seed changes them)."""
    vocabulary = sorted({w for s in segments for w in s.words})
    return {
        "reference": (lambda rng: [list(s.words) for s in segments], False),
        "random errors": (
            lambda rng: [with_errors(s.words, rng, vocabulary, args) for s in segments],
            True,
        ),
        "train repeats": (lambda rng: [with_repeats(s.words, rng, rates) for s in segments], True),
        "split compounds": (lambda rng: [split_compounds(s.words) for s in segments], False),
    }


def report(dataset: str, split: str, args: argparse.Namespace) -> None:
    samples = load_annotations(args.data / dataset / f"{dataset}.{split}")
    segments = ground_truth(((s.name, s.gloss, s.signer) for s in samples), dataset)
    train = [s.gloss.split() for s in load_annotations(args.data / dataset / f"{dataset}.train")]
    upper = DECODES_UPPER[dataset]
    rows = {}
    for name, (make, seeded) in scenarios(segments, repeat_rates(train), args).items():
        seeds = range(args.seeds if seeded else 1)
        rows[name] = [
            both_wers(segments, make(random.Random(f"{dataset}/{split}/{seed}")), upper, dataset)
            for seed in seeds
        ]
    if upper:  # what a decoder keeping the annotation's case gets
        rows["annotation case"] = [
            both_wers(segments, [list(s.words) for s in segments], False, dataset)
        ]
    for name, pairs in rows.items():
        _print_row(dataset, split, name, pairs)


def _print_row(dataset: str, split: str, name: str, pairs: list[tuple[float, float]]) -> None:
    original = statistics.mean(p[0] for p in pairs)
    official = statistics.mean(p[1] for p in pairs)
    differences = [p[1] - p[0] for p in pairs]
    spread = (
        f" (sd {statistics.stdev(differences):.2f}, {len(pairs)} seeds)" if len(pairs) > 1 else ""
    )
    print(
        f"{dataset:14s}{split:5s} {name:16s} original {original:6.2f}  official {official:6.2f}"
        f"  official - original {statistics.mean(differences):+.2f}{spread}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for dataset, split in SPLITS:
        report(dataset, split, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
