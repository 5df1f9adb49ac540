"""Score a hypothesis file with the field's official WER and write the CTM/STM pair for sclite.

    python scripts/official_wer.py --dataset phoenix-2014t \\
        --hypotheses experiments/outputs/phoenix-2014t/s2g/prediction/test/hypotheses.jsonl \\
        --head ensemble --annotations data/phoenix-2014t/phoenix-2014t.test --output scored/
    python -m scripts.official_wer --dataset phoenix-2014 --hypotheses output-hypothesis-dev.ctm \\
        --stm phoenix2014-groundtruth-dev.stm --output scored/ --sclite

Hypotheses: ``prediction.py``'s ``hypotheses.jsonl`` (``--head`` picks ``gloss_<head>``; it
may be left out when there is one), a CTM file (``.ctm``: ``<utterance> <channel> <begin>
<duration> <word>``, as VAC and CorrNet write ``output-hypothesis-<split>.ctm``) or a text
file, one ``<name> <glosses ...>`` per line (tab or space after the name). Ground truth:
``--annotations`` (an annotation file: the STM is generated from it, as the official files
are) or ``--stm`` (an official STM file). Printed: the official WER with its counts (see
``utils/official_wer.py`` and docs/evaluation.md), and the original release's WER of the
same hypotheses (both sides cleaned; references upper-cased with ``--reference-case upper``,
the default where the published configs decode upper case). ``--output`` writes:

    hypothesis.ctm      the hypotheses as CorrNet writes them: the official scripts' input
    scored.ctm          after preprocess.sh and mergectmstm.py: what sclite reads
    groundtruth.stm     the ground truth, in the order of scored.ctm
    per_utterance.tsv   utterance, correct, substitutions, deletions, insertions, reference words

``--sclite`` runs NIST sclite (Debian package ``sctk``) on scored.ctm and groundtruth.stm
with the scripts' options and compares its counts with the Python port, utterance by
utterance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dataset.annotations import load_annotations  # noqa: E402
from utils.cli import EXIT_USER_ERROR  # noqa: E402
from utils.errors import DataError, SignLanguageError  # noqa: E402
from utils.metrics import recognition_wer  # noqa: E402
from utils.official_wer import (  # noqa: E402
    OFFICIAL_DATASETS,
    StmSegment,
    ctm_lines,
    ctm_word,
    find_sclite,
    ground_truth,
    official_counts,
    read_stm,
    run_sclite,
    sclite_command,
    scored_hypotheses,
    total_counts,
    utterance_id,
    write_ctm,
    write_stm,
)

# the published configs' gloss vocabularies: lower-case (decoded upper) but for Phoenix-2014
UPPER_CASE_DEFAULT = {"phoenix-2014": False, "phoenix-2014t": True, "csl-daily": True}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, choices=OFFICIAL_DATASETS)
    parser.add_argument("--hypotheses", required=True, type=Path, help=".jsonl, .ctm or text")
    parser.add_argument("--head", help="hypotheses.jsonl: score gloss_<head>")
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument("--annotations", type=Path, help="annotation file of the split")
    truth.add_argument("--stm", type=Path, help="official STM ground truth of the split")
    parser.add_argument("--output", type=Path, help="folder for the CTM/STM pair and counts")
    parser.add_argument("--sclite", action="store_true", help="run sclite and compare")
    parser.add_argument(
        "--reference-case",
        choices=("upper", "annotation"),
        help="the original's WER: upper-case the references (default: as published configs)",
    )
    return parser.parse_args(argv)


# -- reading -----------------------------------------------------------------------------------
def read_hypotheses(path: Path, head: str | None) -> dict[str, list[str]]:
    """Utterance id -> hypothesis words, from any of the three formats."""
    if not path.is_file():
        raise DataError(f"hypothesis file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".jsonl":
        return _from_jsonl(lines, head, path)
    if path.suffix == ".ctm":
        return _from_ctm(lines, path)
    return _from_text(lines)


def _from_jsonl(lines: list[str], head: str | None, path: Path) -> dict[str, list[str]]:
    records = [json.loads(line) for line in lines if line.strip()]
    heads = sorted({k[len("gloss_") :] for r in records for k in r if k.startswith("gloss_")})
    if head is None and len(heads) == 1:
        head = heads[0]
    if head not in heads:
        raise DataError(f"{path}: choose --head among {heads} (gloss_<head> keys)")
    return {utterance_id(r["name"]): r[f"gloss_{head}"].split() for r in records}


def _from_ctm(lines: list[str], path: Path) -> dict[str, list[str]]:
    hypotheses: dict[str, list[str]] = {}
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.startswith(";;"):
            try:
                word = ctm_word(line)
            except DataError as error:
                raise DataError(f"{path}:{number}: {error}") from error
            hypotheses.setdefault(line.split()[0], []).append(word)
    return hypotheses


def _from_text(lines: list[str]) -> dict[str, list[str]]:
    hypotheses = {}
    for line in lines:
        if line.strip():
            name, *words = line.split()
            hypotheses[utterance_id(name)] = words
    return hypotheses


def read_ground_truth(args: argparse.Namespace) -> tuple[StmSegment, ...]:
    if args.stm is not None:
        return read_stm(args.stm)
    samples = load_annotations(args.annotations)
    return ground_truth(((s.name, s.gloss, s.signer) for s in samples), args.dataset)


# -- scoring -----------------------------------------------------------------------------------
def original_wer(
    hypotheses: dict[str, list[str]], segments: tuple[StmSegment, ...], args: argparse.Namespace
) -> float:
    """The original release's WER of the same hypotheses (missing ones are empty)."""
    upper = UPPER_CASE_DEFAULT[args.dataset] if args.reference_case is None else None
    if args.reference_case is not None:
        upper = args.reference_case == "upper"
    references = [" ".join(s.words) for s in segments]
    references = [r.upper() for r in references] if upper else references
    by_id = {u.lower(): words for u, words in hypotheses.items()}
    texts = [" ".join(by_id.get(s.utterance.lower(), ())) for s in segments]
    return recognition_wer(references, texts, args.dataset)["wer"]


def write_outputs(
    folder: Path,
    hypotheses: dict[str, list[str]],
    scored: dict[str, list[str]],
    segments: tuple[StmSegment, ...],
    counts: dict,
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    raw = [line for utterance, words in hypotheses.items() for line in ctm_lines(utterance, words)]
    (folder / "hypothesis.ctm").write_text("".join(f"{line}\n" for line in raw), encoding="utf-8")
    ctm = write_ctm(folder / "scored.ctm", scored)
    stm = write_stm(folder / "groundtruth.stm", segments)
    rows = ["utterance\tcorrect\tsubstitutions\tdeletions\tinsertions\treference_words"]
    rows += [
        f"{u}\t{c.correct}\t{c.substitutions}\t{c.deletions}\t{c.insertions}\t{c.ref_len}"
        for u, c in sorted(counts.items())
    ]
    (folder / "per_utterance.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return ctm, stm


def compare_with_sclite(ctm: Path, stm: Path, counts: dict) -> None:
    """Run sclite on the pair and compare its counts with the port's, utterance by utterance.

    Raises:
        DataError: sclite is missing or fails, or counts an utterance differently.
    """
    theirs = run_sclite(ctm, stm, ctm.parent / "sclite")
    differing = [u for u, c in counts.items() if theirs.get(u.lower()) != c]
    print(f"sclite: {len(counts) - len(differing)} of {len(counts)} utterances counted alike")
    if differing:
        first = differing[0]
        raise DataError(
            f"sclite counts {len(differing)} utterances differently from the port, e.g. "
            f"{first}: port {counts[first]}, sclite {theirs.get(first.lower())}"
        )


def run(args: argparse.Namespace) -> None:
    segments = read_ground_truth(args)
    hypotheses = read_hypotheses(args.hypotheses, args.head)
    scored = scored_hypotheses(hypotheses, segments)
    counts = official_counts(hypotheses, segments)
    totals = total_counts(counts.values())
    print(
        f"official WER {totals['wer']:.2f} (sub {totals['sub']}, del {totals['del']}, "
        f"ins {totals['ins']} of {totals['ref_len']} words, {len(counts)} utterances, "
        f"{len(segments) - len(hypotheses)} without a hypothesis)"
    )
    print(f"original WER {original_wer(hypotheses, segments, args):.2f}")
    if args.output is not None:
        ctm, stm = write_outputs(args.output, hypotheses, scored, segments, counts)
        command = sclite_command(ctm, stm, args.output / "sclite", find_sclite() or ["sclite"])
        print(f"wrote {args.output}; sclite's figure: {' '.join(command)}")
        if args.sclite:
            compare_with_sclite(ctm, stm, counts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sclite and args.output is None:
        print("error: --sclite needs --output (sclite reads and writes files)", file=sys.stderr)
        return 2
    try:
        run(args)
    except SignLanguageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
