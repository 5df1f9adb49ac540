"""The field's official WER: the Phoenix evaluation scripts and NIST sclite, in Python.

VAC, CorrNet, SlowFastSign and SignGraph report recognition WER with the evaluation that
ships with Phoenix-2014 (``evaluation/slr_eval`` of their code: ``preprocess.sh``,
``mergectmstm.py`` and sclite), for Phoenix-2014, Phoenix-2014T and CSL-Daily (glosses)
alike. The original TwoStream release, and :func:`utils.metrics.recognition_wer`, clean
both sides instead; the two figures differ (see ``docs/evaluation.md``). The steps:

1. the hypothesis is written as a CTM file, one word per line:
   ``<utterance> 1 <i / 100> <(i + 1) / 100> <word i>`` (:func:`ctm_lines`);
2. ``preprocess.sh`` rewrites each *line* with the Phoenix-2014 sed and perl rules
   (:data:`utils.phoenix_cleanup.PREPROCESS_SH_RULES`), drops the lines that still hold
   ``__LEFTHAND__``, ``__EPENTHESIS__`` or ``__EMOTION__`` and those whose word was rewritten
   away. The rules that join two words (``WIE AUSSEHEN``, spelled letters, repeats) never
   match a line of one word, and they are case-sensitive: ``poss-EUCH`` loses its prefix,
   ``POSS-EUCH`` keeps it;
3. an utterance left without a line, or without one to begin with, gets the one word
   ``[EMPTY]`` (the awk line of ``preprocess.sh``, then ``mergectmstm.py``);
4. ``sclite -h <ctm> ctm -r <stm> stm -f 0 -o sgml sum rsum pra`` aligns every utterance
   with its line of the STM ground truth, which nothing rewrites.

What sclite (SCTK 2.4) does there, and this module with it:

* it reads both files case-insensitively: the ASCII letters of every line are lower-cased;
* a word's text ends at its first ``;`` not escaped by a backslash (the rest are tags),
  backslashes are dropped, and a trailing ``*`` is cut from a word of two or more bytes; a
  segment whose text starts with a token beginning with ``<`` has a label, not a word;
* it aligns with the costs correct 0, substitution 4, insertion and deletion 3, keeping in
  every cell the diagonal step when it is no worse than both others, else the deletion when
  strictly cheaper than the insertion, else the insertion, and traces those choices back
  from the last cell: the back-trace of the original release's WER, so
  :func:`utils.metrics.align_words` is reused;
* it counts per utterance correct words, substitutions, deletions and insertions; the WER
  is (S + D + I) / (C + S + D).

The ground truth is one STM line per utterance, ``<utterance> 1 <speaker> 0.0 1.79769e+308
<glosses>``, generated from the annotation files (:func:`ground_truth`) or read from an
official file (:func:`read_stm`). Not modelled, and refused with :class:`DataError`:
alternations ``{ a / b }``, the null word ``@``, ``<ALT`` markers in hypotheses and several
segments of one utterance (none of which the Phoenix and CSL-Daily files hold). A segment
whose text holds ``IGNORE_TIME_SEGMENT_IN_SCORING`` (or ``IGNORETIMESEGMENTINSCORING``) in
any case, even inside a word, is not scored, as sclite skips it.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.errors import DataError
from utils.metrics import EditCounts, align_words
from utils.phoenix_cleanup import PREPROCESS_SH_DROPPED, PREPROCESS_SH_RULES, apply_rules

OFFICIAL_DATASETS = ("phoenix-2014", "phoenix-2014t", "csl-daily")
EMPTY_WORD = "[EMPTY]"
STM_TIMES = "0.0 1.79769e+308"  # one segment spanning the whole utterance, as the files write it
CHANNEL = "1"
SPLIT_FOLDERS = ("train", "dev", "test")
# sclite's command line in the official scripts (the reports they ask for)
SCLITE_OPTIONS = ("-f", "0", "-o", "sgml", "sum", "rsum", "pra")
SCLITE_INSTALL_HINT = (
    "NIST sclite is not installed: on Debian/Ubuntu `apt-get install sctk` "
    "(the binary is /usr/lib/sctk/bin/sclite or `sctk sclite`), elsewhere build "
    "https://github.com/usnistgov/SCTK and put sclite on PATH"
)

_FIELD_SEPARATORS = re.compile(r"[ \t\n]+")  # awk's and sclite's (strtok " \t\n") fields
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_UNESCAPED_SEMICOLON = re.compile(r"(?<!\\);")
_IGNORE_MARKERS = ("ignore_time_segment_in_scoring", "ignoretimesegmentinscoring")
_INERT_PREFIX = "0 1 0.00 0.01"  # the four fields of a CTM line, without a letter


@dataclass(frozen=True)
class StmSegment:
    """One line of the ground truth: the utterance, its speaker and its gloss words."""

    utterance: str
    speaker: str
    words: tuple[str, ...]

    def line(self) -> str:
        return " ".join((self.utterance, CHANNEL, self.speaker, STM_TIMES, *self.words))


# -- the ground truth ------------------------------------------------------------------------
def utterance_id(name: str) -> str:
    """The id the official files give a sample, from its name in the annotation files.

    Phoenix names hold the split folder and the id follows it (``dev/<id>`` for
    Phoenix-2014T, ``fullFrame-210x260px/dev/<id>/1/<...>`` for Phoenix-2014); any other
    name is the id itself (CSL-Daily's ``S000020_P0000_T00``).
    """
    parts = name.split("/")
    for position, part in enumerate(parts[:-1]):
        if part in SPLIT_FOLDERS:
            return _checked_id(parts[position + 1], name)
    return _checked_id(name, name)


def _checked_id(utterance: str, name: str) -> str:
    if not utterance or _FIELD_SEPARATORS.search(utterance):
        raise DataError(f"sample name {name!r} gives no usable utterance id (empty or spaced)")
    return utterance


def stm_speaker(signer: str, dataset_name: str) -> str:
    """The speaker field as the official files write it (it does not change the counts).

    Phoenix-2014's file writes ``signer05``, Phoenix-2014T's ``Signer05`` (the annotation's
    own), CorrNet's CSL-Daily file ``unknown``.
    """
    if dataset_name == "csl-daily" or not signer:
        return "unknown"
    return signer.lower() if dataset_name == "phoenix-2014" else signer


def ground_truth(
    samples: Iterable[tuple[str, str, str]], dataset_name: str
) -> tuple[StmSegment, ...]:
    """STM segments of ``(name, glosses, signer)`` samples; samples without glosses are left out."""
    segments = [
        StmSegment(utterance_id(name), stm_speaker(str(signer), dataset_name), tuple(gloss.split()))
        for name, gloss, signer in samples
        if gloss.strip()
    ]
    _check_unique(segments, "the annotations")
    return tuple(segments)


def read_stm(path: str | Path) -> tuple[StmSegment, ...]:
    """An STM ground-truth file (``;;`` comment lines and blank lines are skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read the STM file {path}: {error}") from error
    segments = []
    for number, line in enumerate(lines, start=1):
        if line.strip() and not line.startswith(";;"):
            segments.append(_parse_stm_line(line, f"{path}:{number}"))
    if not segments:
        raise DataError(f"STM file {path} holds no segment")
    _check_unique(segments, str(path))
    return tuple(segments)


def _parse_stm_line(line: str, where: str) -> StmSegment:
    fields = [f for f in _FIELD_SEPARATORS.split(line) if f]
    if len(fields) < 5:
        raise DataError(f"{where}: an STM line needs file, channel, speaker, begin, end: {line!r}")
    if fields[1] != CHANNEL:
        raise DataError(f"{where}: channel {fields[1]!r}; the CTM files of the scripts use 1")
    words = fields[5:]
    if words and words[0].startswith("<"):
        words = words[1:]  # sclite takes it for the segment's label
    return StmSegment(fields[0], fields[2], tuple(words))


def _check_unique(segments: Sequence[StmSegment], where: str) -> None:
    seen: set[str] = set()
    for segment in segments:
        key = _ascii_lower(segment.utterance)
        if key in seen:
            raise DataError(
                f"{where}: utterance {segment.utterance} has several segments "
                "(sclite ids are case-insensitive; one segment per utterance is modelled)"
            )
        seen.add(key)


def write_stm(path: str | Path, segments: Iterable[StmSegment]) -> Path:
    """The STM file, sorted by utterance (the order of the CTM that :func:`write_ctm` writes)."""
    lines = [s.line() for s in sorted(segments, key=lambda s: _ascii_lower(s.utterance))]
    return _write_lines(path, lines)


# -- the hypothesis side: CTM lines and preprocess.sh ----------------------------------------
def ctm_lines(utterance: str, words: Sequence[str]) -> list[str]:
    """One CTM line per word, as CorrNet and VAC write ``output-hypothesis-<split>.ctm``."""
    return [f"{utterance} 1 {i / 100:.2f} {(i + 1) / 100:.2f} {w}" for i, w in enumerate(words)]


def preprocess_line(line: str) -> str | None:
    """One CTM line through ``preprocess.sh``: the rules, its ``grep -v``, its awk test.

    Returns the rewritten line, or None when the script drops it.
    """
    rewritten = apply_rules(line, PREPROCESS_SH_RULES)
    if any(marker in rewritten for marker in PREPROCESS_SH_DROPPED):
        return None
    rewritten = rewritten.rstrip(" \t\r\f\v")  # sed 's,\s*$,,'
    fields = _fields(rewritten)
    if fields[:4] != _fields(line)[:4]:
        raise DataError(f"the preprocess rules rewrite the utterance id or times of {line!r}")
    return rewritten if len(fields) >= 5 else None


def scored_ctm_lines(utterance: str, words: Sequence[str]) -> list[str]:
    """The CTM lines of one utterance that sclite reads: rewritten, or ``[EMPTY]``.

    Equal to :func:`preprocess_line` on every line of :func:`ctm_lines`, computed once per
    distinct word: no rule can match across the fourth field (a number) into the word, so a
    line is its untouched first four fields and the rewritten word, once the rules are
    checked to leave the utterance id alone.
    """
    _check_untouched_id(utterance)
    kept = []
    for i, word in enumerate(words):
        rewritten = _rewritten_word(word)
        if rewritten is not None:
            kept.append(f"{utterance} 1 {i / 100:.2f} {(i + 1) / 100:.2f} {rewritten}")
    return kept or [f"{utterance} 1 0.000 0.030 {EMPTY_WORD}"]  # mergectmstm.py's line


@functools.lru_cache(maxsize=1 << 16)
def _check_untouched_id(utterance: str) -> None:
    prefix = f"{utterance} 1 0.00 0.01"
    if apply_rules(prefix, PREPROCESS_SH_RULES) != prefix:
        raise DataError(f"the preprocess rules rewrite the utterance id {utterance!r}")


@functools.lru_cache(maxsize=1 << 16)
def _rewritten_word(word: str) -> str | None:
    """The word of a CTM line after ``preprocess.sh``; None when the line is dropped."""
    line = preprocess_line(f"{_INERT_PREFIX} {word}")
    return None if line is None else line[len(_INERT_PREFIX) + 1 :]


def scored_hypotheses(
    hypotheses: Mapping[str, Sequence[str]], segments: Sequence[StmSegment]
) -> dict[str, list[str]]:
    """Utterance -> its CTM lines for sclite, for every segment of the ground truth.

    ``hypotheses`` maps utterance ids (matched case-insensitively, as sclite does) to their
    words; an utterance of the ground truth without one is scored as ``[EMPTY]``.

    Raises:
        DataError: a hypothesis names an utterance the ground truth does not hold.
    """
    by_key = {_ascii_lower(u): words for u, words in hypotheses.items()}
    known = {_ascii_lower(s.utterance) for s in segments}
    unknown = sorted(set(by_key) - known)
    if unknown:
        raise DataError(
            f"{len(unknown)} hypotheses name utterances the ground truth does not hold, "
            f"e.g. {unknown[:3]}"
        )
    return {
        s.utterance: scored_ctm_lines(s.utterance, by_key.get(_ascii_lower(s.utterance), ()))
        for s in segments
    }


def write_ctm(path: str | Path, scored: Mapping[str, Sequence[str]]) -> Path:
    """The CTM file sclite reads, in the order of :func:`write_stm`."""
    ordered = sorted(scored, key=_ascii_lower)
    return _write_lines(path, [line for u in ordered for line in scored[u]])


# -- sclite ----------------------------------------------------------------------------------
def ctm_word(line: str) -> str:
    """The word of a CTM line (its fifth field)."""
    fields = _fields(line)
    if len(fields) < 5:
        raise DataError(f"a CTM line needs file, channel, begin, duration, word: {line!r}")
    return fields[4]


def sclite_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """sclite's counts of one utterance: STM words against the words of its CTM lines."""
    ref = [_sclite_word(w, "reference") for w in reference]
    hyp = [_sclite_word(w, "hypothesis") for w in hypothesis]
    operations = align_words(ref, hyp)
    return EditCounts(
        correct=operations.count("C"),
        substitutions=operations.count("S"),
        insertions=operations.count("I"),
        deletions=operations.count("D"),
        ref_len=len(ref),
    )


@functools.lru_cache(maxsize=1 << 16)
def _sclite_word(token: str, side: str) -> str:
    """A token as sclite compares it (see the module docstring)."""
    token = _ascii_lower(token)
    if "{" in token or token == "@" or (side == "hypothesis" and token[:4] == "<alt"):
        raise DataError(f"{side} word {token!r}: sclite's alternations are not modelled")
    end = _UNESCAPED_SEMICOLON.search(token)
    text = (token if end is None else token[: end.start()]).replace("\\", "")
    if len(text.encode("utf-8")) > 1 and text.endswith("*"):
        text = text[:-1]
    return text


def official_counts(
    hypotheses: Mapping[str, Sequence[str]], segments: Sequence[StmSegment]
) -> dict[str, EditCounts]:
    """Utterance -> sclite's counts, for every segment of the ground truth."""
    scored = scored_hypotheses(hypotheses, segments)
    return {
        s.utterance: sclite_counts(s.words, [ctm_word(line) for line in scored[s.utterance]])
        for s in segments
        if not is_ignored(s)
    }


def is_ignored(segment: StmSegment) -> bool:
    """Whether sclite skips the segment (a case-insensitive search in its text)."""
    text = _ascii_lower(" ".join(segment.words))
    return any(marker in text for marker in _IGNORE_MARKERS)


def total_counts(counts: Iterable[EditCounts]) -> dict[str, float]:
    """Sums of per-utterance counts: ``{'wer', 'sub', 'del', 'ins', 'error', 'ref_len', 'correct'}``.

    ``wer`` in percent, as sclite's Sum/Avg Err: (S + D + I) / (C + S + D).
    """
    totals = {"sub": 0, "del": 0, "ins": 0, "ref_len": 0, "correct": 0}
    for c in counts:
        totals["sub"] += c.substitutions
        totals["del"] += c.deletions
        totals["ins"] += c.insertions
        totals["ref_len"] += c.ref_len
        totals["correct"] += c.correct
    if totals["ref_len"] == 0:
        raise DataError("the ground truth holds no word; WER is undefined")
    errors = totals["sub"] + totals["del"] + totals["ins"]
    return {"wer": 100.0 * errors / totals["ref_len"], "error": errors, **totals}


def official_wer(hypotheses: Mapping[str, str], segments: Sequence[StmSegment]) -> dict[str, float]:
    """The official WER of hypothesis strings keyed by utterance id (see :func:`total_counts`)."""
    words = {utterance: text.split() for utterance, text in hypotheses.items()}
    return total_counts(official_counts(words, segments).values())


def find_sclite() -> list[str] | None:
    """The command that runs NIST sclite here (``sclite``, or Debian's ``sctk sclite``)."""
    if shutil.which("sclite"):
        return ["sclite"]
    debian = Path("/usr/lib/sctk/bin/sclite")
    if debian.is_file():
        return [str(debian)]
    if shutil.which("sctk"):
        return ["sctk", "sclite"]
    return None


def sclite_command(ctm: Path, stm: Path, output_dir: Path, sclite: Sequence[str]) -> list[str]:
    """sclite's command line as the official scripts run it, reports into ``output_dir``."""
    return [
        *sclite,
        "-h",
        str(ctm),
        "ctm",
        "-r",
        str(stm),
        "stm",
        *SCLITE_OPTIONS,
        "-O",
        str(output_dir),
    ]


def run_sclite(ctm: Path, stm: Path, output_dir: Path) -> dict[str, EditCounts]:
    """Run sclite on a CTM/STM pair; its per-utterance counts, keyed by lower-cased utterance.

    Raises:
        DataError: sclite is not installed, fails, or reports nothing.
    """
    sclite = find_sclite()
    if sclite is None:
        raise DataError(SCLITE_INSTALL_HINT)
    output_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        sclite_command(ctm, stm, output_dir, sclite), capture_output=True, text=True, check=False
    )
    report = output_dir / f"{ctm.name}.pra"
    if done.returncode != 0 or not report.is_file():
        raise DataError(f"sclite failed ({done.returncode}): {done.stdout[-500:]}{done.stderr}")
    return parse_pra(report.read_text(encoding="utf-8", errors="replace"))


def parse_pra(text: str) -> dict[str, EditCounts]:
    """Per-utterance counts from sclite's ``pra`` report (``File:`` and ``Scores:`` lines)."""
    counts: dict[str, EditCounts] = {}
    utterance = None
    for line in text.splitlines():
        if line.startswith("File: "):
            utterance = line[len("File: ") :].strip()
        elif line.startswith("Scores: (#C #S #D #I)") and utterance is not None:
            c, s, d, i = (int(v) for v in line.split(")")[1].split())
            counts[utterance] = EditCounts(
                correct=c, substitutions=s, insertions=i, deletions=d, ref_len=c + s + d
            )
            utterance = None
    if not counts:
        raise DataError("sclite's pra report holds no utterance")
    return counts


# -- helpers ---------------------------------------------------------------------------------
def _fields(line: str) -> list[str]:
    return [f for f in _FIELD_SEPARATORS.split(line) if f]


def _ascii_lower(text: str) -> str:
    """sclite's case folding: ASCII letters only (``tolower`` of each byte, C locale)."""
    return text.translate(_ASCII_LOWER)


def _write_lines(path: str | Path, lines: Sequence[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path
