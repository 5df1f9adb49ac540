"""Seeded hypothesis sets on the real Phoenix references, to check the official WER with.

``tests/test_official_wer.py`` and ``tests/fixtures/make_official_wer_counts.py`` build the
same sets from the annotation files in ``../shared/data``: every set is a function of the
references and a seed only (``random.Random`` seeded with a string), so the recorded sclite
counts in ``tests/fixtures/official_wer_counts.json`` stay valid without storing a
hypothesis. A hypothesis is a word list; ``None`` leaves the utterance out of the file.
"""

from __future__ import annotations

import os
import random
import string
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from dataset.annotations import load_annotations
from utils.official_wer import StmSegment, ctm_lines, ground_truth

REAL_SPLITS = (
    ("phoenix-2014", "dev"),
    ("phoenix-2014", "test"),
    ("phoenix-2014t", "dev"),
    ("phoenix-2014t", "test"),
)
SEED = 2027
SPECIAL_TOKENS = (
    "<unk>", "<s>", "</s>", "<pad>", "<mask>", "de_DE", "de_DGS", "__ON__", "__OFF__",
    "__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__", "S0NNE", "HABEN2", "ZEIGEN",
    "WIE", "AUSSEHEN", "IX", "SCH", "NN",
)  # fmt: skip
PREFIXES = ("loc-", "cl-", "qu-", "poss-", "lh-", "neg-", "LOC-", "POSS-")
REMOVABLE = ("__EMOTION__", "__PU__", "__LEFTHAND__", "__EPENTHESIS__", "loc-", "cl-")

Hypothesis = list[str] | None
Perturb = Callable[[Sequence[str], random.Random, Sequence[str]], Hypothesis]


def real_ground_truth(data_dir: Path, dataset: str, split: str) -> tuple[StmSegment, ...]:
    """The STM segments of a real split, generated from its annotation file."""
    samples = load_annotations(data_dir / dataset / f"{dataset}.{split}")
    return ground_truth(((s.name, s.gloss, s.signer) for s in samples), dataset)


def _exact(words, rng, vocabulary) -> Hypothesis:
    return [w.upper() for w in words]  # what a lower-case vocabulary decodes


def _as_annotated(words, rng, vocabulary) -> Hypothesis:
    return list(words)


def _realistic(words, rng, vocabulary) -> Hypothesis:
    """About 9 % deletions, 9 % substitutions, 5 % insertions; half the utterances upper-cased."""
    out = []
    for word in words:
        draw = rng.random()
        if draw >= 0.09:
            out.append(rng.choice(vocabulary) if draw < 0.18 else word)
        if rng.random() < 0.05:
            out.append(rng.choice(vocabulary))
    return [w.upper() for w in out] if rng.random() < 0.5 else out


def _special_tokens(words, rng, vocabulary) -> Hypothesis:
    out = []
    for word in words:
        draw = rng.random()
        if draw < 0.15:
            word = rng.choice(PREFIXES) + word
        elif draw < 0.22:
            word = word + rng.choice(("-PLUSPLUS", "RAUM", "2", "*"))
        elif draw < 0.27:
            word = word.lower()
        out.append(word)
        if rng.random() < 0.3:
            out.append(rng.choice(SPECIAL_TOKENS))
    return out


def _spelled_letters(words, rng, vocabulary) -> Hypothesis:
    out = []
    for word in words:
        letters = [c for c in word if c in string.ascii_uppercase]
        draw = rng.random()
        if draw < 0.2 and letters:
            out.extend(letters[: rng.randrange(1, 6)])
        elif draw < 0.3:
            out.append("+".join(rng.choice(string.ascii_uppercase) for _ in range(2)))
        else:
            out.append(word)
        if rng.random() < 0.15:
            out.extend(rng.choice(string.ascii_uppercase) for _ in range(rng.randrange(1, 5)))
    return out


def _repeats(words, rng, vocabulary) -> Hypothesis:
    out = []
    for word in words:
        times = rng.choice((1, 1, 1, 2, 3))
        out.extend([word] * times)
        if rng.random() < 0.1:
            out.append(word.lower())
    return out


def _empty(words, rng, vocabulary) -> Hypothesis:
    draw = rng.random()
    if draw < 0.3:
        return None
    if draw < 0.55:
        return []
    if draw < 0.75:
        return [rng.choice(REMOVABLE) for _ in range(rng.randrange(1, 4))]
    return _realistic(words, rng, vocabulary)


def _shuffled(words, rng, vocabulary) -> Hypothesis:
    """Permuted words, some replaced: many alignments of equal cost."""
    out = list(words)
    rng.shuffle(out)
    return [rng.choice(vocabulary) if rng.random() < 0.3 else w for w in out]


def _long(words, rng, vocabulary) -> Hypothesis:
    out = []
    for word in words:
        out.extend(rng.choice(vocabulary) for _ in range(rng.randrange(0, 4)))
        if rng.random() < 0.8:
            out.append(word)
    return out


PERTURBATIONS: dict[str, Perturb] = {
    "exact": _exact,
    "as_annotated": _as_annotated,
    "realistic": _realistic,
    "special_tokens": _special_tokens,
    "spelled_letters": _spelled_letters,
    "repeats": _repeats,
    "empty": _empty,
    "shuffled": _shuffled,
    "long": _long,
}


def perturbed(name: str, segments: Sequence[StmSegment], seed: int = SEED) -> dict[str, list[str]]:
    """Utterance -> hypothesis words of the set ``name``; utterances left out are absent."""
    rng = random.Random(f"{name}/{seed}")
    vocabulary = sorted({w for s in segments for w in s.words})
    hypotheses = {}
    for segment in segments:
        words = PERTURBATIONS[name](segment.words, rng, vocabulary)
        if words is not None:
            hypotheses[segment.utterance] = words
    return hypotheses


def synthetic_ground_truth(count: int = 300, seed: int = SEED) -> tuple[StmSegment, ...]:
    """Short utterances over a five-gloss alphabet: ties in nearly every alignment."""
    rng = random.Random(f"synthetic/{seed}")
    alphabet = ("REGEN", "SONNE", "loc-NORD", "A", "B")
    return tuple(
        StmSegment(
            f"utt{i:04d}",
            "signer01",
            tuple(rng.choice(alphabet) for _ in range(rng.randrange(1, 9))),
        )
        for i in range(count)
    )


# -- the official scripts, where a checkout of them is given -----------------------------------
SLR_EVAL_STM = {
    "phoenix-2014": "phoenix2014-groundtruth",
    "phoenix-2014t": "phoenix2014-T-groundtruth",
}


def official_stm(slr_eval: Path, dataset: str, split: str) -> Path | None:
    """The official STM file of a split in an ``evaluation/slr_eval`` folder, if it is there."""
    prefix = SLR_EVAL_STM.get(dataset)
    path = slr_eval / f"{prefix}-{split}.stm" if prefix else None
    return path if path is not None and path.is_file() else None


def run_official_scripts(
    slr_eval: Path, raw_ctm: Path, stm: Path, workdir: Path
) -> tuple[Path, Path]:
    """VAC's and CorrNet's ``wer_calculation.evaluate`` up to sclite: the CTM and STM it scores.

    ``preprocess.sh`` on the hypothesis, ``sort -k1,1`` of the ground truth, then
    ``mergectmstm.py`` (C locale, so that both sorts agree byte-wise).
    """
    env = {**os.environ, "LC_ALL": "C"}
    ctm, sorted_stm = workdir / "tmp2.ctm", workdir / "tmp.stm"
    subprocess.run(
        ["bash", str(slr_eval / "preprocess.sh"), str(raw_ctm), str(workdir / "tmp.ctm"), str(ctm)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    lines = stm.read_text(encoding="utf-8").splitlines()
    ordered = subprocess.run(
        ["sort", "-k1,1"], input="\n".join(lines) + "\n", env=env, check=True,
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    sorted_stm.write_text(ordered, encoding="utf-8")
    subprocess.run(
        [sys.executable, str(slr_eval / "mergectmstm.py"), str(ctm), str(sorted_stm)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    return ctm, sorted_stm


def write_raw_ctm(path: Path, hypotheses: dict[str, list[str]]) -> Path:
    """The hypothesis file as CorrNet writes it (before any rule)."""
    lines = [
        line for utterance, words in hypotheses.items() for line in ctm_lines(utterance, words)
    ]
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path
