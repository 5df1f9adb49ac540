"""Recognition and translation metrics, computed as the published evaluation does.

* WER: word-level Levenshtein alignment with the published edit costs
  (substitution 4, insertion 3, deletion 3), summed over the corpus.
* BLEU-1..4: cumulative corpus BLEU of order n from ``sacrebleu`` with no tokenisation
  and no smoothing (see :func:`bleu` for the exact semantics).
* ROUGE-L: sentence-level LCS F-measure with the published ``beta = P / R``,
  averaged over sentences (see :func:`rouge`).

All scores are percentages (0..100).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sacrebleu.metrics import BLEU

from utils.errors import ConfigurationError
from utils.phoenix_cleanup import get_gloss_cleaner

logger = logging.getLogger(__name__)

WER_COST_SUB = 4
WER_COST_INS = 3
WER_COST_DEL = 3

TEXT_LEVELS = ("word", "char")
BLEU_MAX_ORDER = 4


@dataclass(frozen=True)
class EditCounts:
    """Alignment statistics of one hypothesis against its reference."""

    correct: int
    substitutions: int
    insertions: int
    deletions: int
    ref_len: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.insertions + self.deletions


def _edit_cost_table(ref: Sequence[str], hyp: Sequence[str]) -> list[list[int]]:
    """Weighted edit-distance table, shape ``(len(ref) + 1, len(hyp) + 1)``.

    Plain Python ints: the published version stored this table as ``uint8``, which
    silently wraps around once a cost exceeds 255 (``len(ref) + len(hyp) > 85`` words);
    we keep exact costs instead, so long sentences may differ from the published numbers.
    """
    above = [j * WER_COST_INS for j in range(len(hyp) + 1)]
    table = [above]
    for i, ref_word in enumerate(ref, start=1):
        left = i * WER_COST_DEL  # the cell being filled, then the one left of the next
        row = [left]
        for j, hyp_word in enumerate(hyp, start=1):
            if ref_word == hyp_word:
                left = above[j - 1]
            else:  # plain comparisons: this loop is the cost of scoring a split
                left = min(above[j - 1] + WER_COST_SUB, left + WER_COST_INS)
                if above[j] + WER_COST_DEL < left:
                    left = above[j] + WER_COST_DEL
            row.append(left)
        table.append(row)
        above = row
    return table


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[str]:
    """Edit operations aligning ``hyp`` to ``ref``, in sentence order.

    Returns a list of ``'C'`` (correct), ``'S'``, ``'I'``, ``'D'``. Ties in the back-trace
    are broken in the published order: match, substitution, insertion, deletion.
    """
    table = _edit_cost_table(ref, hyp)
    i, j = len(ref), len(hyp)
    operations = []
    while i > 0 or j > 0:
        cost = table[i][j]
        if i > 0 and j > 0 and ref[i - 1] == hyp[j - 1] and cost == table[i - 1][j - 1]:
            operations.append("C")
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and cost == table[i - 1][j - 1] + WER_COST_SUB:
            operations.append("S")
            i, j = i - 1, j - 1
        elif j > 0 and cost == table[i][j - 1] + WER_COST_INS:
            operations.append("I")
            j -= 1
        else:
            operations.append("D")
            i -= 1
    operations.reverse()
    return operations


def sentence_edits(reference: str, hypothesis: str) -> EditCounts:
    """Count correct words and S/I/D errors of one whitespace-tokenised sentence pair."""
    ref, hyp = reference.split(), hypothesis.split()
    operations = align_words(ref, hyp)
    return EditCounts(
        correct=operations.count("C"),
        substitutions=operations.count("S"),
        insertions=operations.count("I"),
        deletions=operations.count("D"),
        ref_len=len(ref),
    )


def _check_pairs(references: Sequence[str], hypotheses: Sequence[str]) -> None:
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("cannot score an empty corpus")


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus word error rate: total (S + I + D) over total reference words, in percent.

    Returns:
        ``{'wer', 'sub', 'ins', 'del', 'error', 'ref_len'}``; ``wer`` in percent, the rest counts.
    """
    _check_pairs(references, hypotheses)
    totals = {"sub": 0, "ins": 0, "del": 0, "ref_len": 0}
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        counts = sentence_edits(reference, hypothesis)
        totals["sub"] += counts.substitutions
        totals["ins"] += counts.insertions
        totals["del"] += counts.deletions
        totals["ref_len"] += counts.ref_len
    if totals["ref_len"] == 0:
        raise ValueError("all references are empty; WER is undefined")
    errors = totals["sub"] + totals["ins"] + totals["del"]
    return {"wer": 100.0 * errors / totals["ref_len"], "error": errors, **totals}


def recognition_wer(
    references: Sequence[str], hypotheses: Sequence[str], dataset_name: str
) -> dict[str, float]:
    """WER after the dataset's published gloss clean-up of references and hypotheses.

    The clean-up rules are case-sensitive: pass glosses in the annotation's own case
    (the published pipeline upper-cases Phoenix-2014T glosses from a lower-case vocabulary).

    Args:
        dataset_name: ``phoenix-2014``, ``phoenix-2014t`` or ``csl-daily`` (no clean-up).
    """
    clean = get_gloss_cleaner(dataset_name)
    return wer([clean(r) for r in references], [clean(h) for h in hypotheses])


def _check_level(level: str) -> None:
    if level not in TEXT_LEVELS:
        raise ConfigurationError(
            f"unknown text level {level!r}; expected one of {list(TEXT_LEVELS)}"
        )


def _space_characters(text: str) -> str:
    """Write every character as its own token (character-level scoring of Chinese)."""
    return " ".join(text)


def bleu(
    references: Sequence[str], hypotheses: Sequence[str], level: str = "word"
) -> dict[str, float]:
    """Corpus BLEU-1..4 in percent, as the published evaluation reported them.

    The published code read ``.scores`` of a vendored sacrebleu 1.x ``raw_corpus_bleu``
    (``tokenize='none'``, ``'floor'`` smoothing with value 0, i.e. none). ``scores[n-1]``
    is the *cumulative* BLEU-n: brevity penalty times the geometric mean of the n-gram
    precisions of orders 1..n. Although ``raw_corpus_bleu`` passed
    ``use_effective_order=True``, that flag did not reach ``.scores``: an order with no
    hypothesis n-grams (or no matches) has precision 0 and makes BLEU-n exactly 0.
    sacrebleu 2.x gives the same number with ``max_ngram_order=n`` and
    ``effective_order=False`` (``force=True`` as published: no detokenisation check).

    Args:
        level: ``'word'`` (whitespace tokens) or ``'char'`` (every character a token,
            spaces dropped, as published for CSL-Daily).
    """
    _check_level(level)
    _check_pairs(references, hypotheses)
    if level == "char":
        references = [_space_characters(r) for r in references]
        hypotheses = [_space_characters(h) for h in hypotheses]
    scores = {}
    for order in range(1, BLEU_MAX_ORDER + 1):
        metric = BLEU(
            tokenize="none",
            smooth_method="floor",
            smooth_value=0.0,
            effective_order=False,
            max_ngram_order=order,
            force=True,  # as published; also silences the "tokenized period" warning
        )
        scores[f"bleu{order}"] = metric.corpus_score(list(hypotheses), [list(references)]).score
    return scores


def _published_lcs_f(precision: float, recall: float) -> float:
    """LCS F-measure of the published ROUGE-L: ``beta = P / R`` (not rouge-score's F1).

    The small constants match the published implementation, which adds them to avoid
    dividing by zero.
    """
    beta = precision / (recall + 1e-12)
    numerator = (1 + beta**2) * recall * precision
    denominator = recall + beta**2 * precision
    return numerator / (denominator + 1e-12)


def _published_rouge_tokens(text: str, level: str) -> str:
    """Re-join a sentence the way the published scorer did before splitting it on ' '.

    Word level normalises whitespace. Character level joins *every* character with a
    space, so a space character becomes two empty tokens after the split on single
    spaces; we keep that quirk to reproduce the published numbers.
    """
    return _space_characters(text) if level == "char" else " ".join(text.split())


def rouge(references: Sequence[str], hypotheses: Sequence[str], level: str = "word") -> float:
    """Published ROUGE-L F in percent: mean over sentences of the sentence-level LCS F.

    LCS, precision (LCS / hypothesis length) and recall (LCS / reference length) come
    from ``rouge-score`` with a tokenizer that splits on single spaces (its default one
    lower-cases and drops everything outside ``[a-z0-9]``, which would erase umlauts and
    Chinese). The F-measure is recomputed with the published ``beta = P / R``.
    """
    # rouge-score imports nltk (seconds); load it only when ROUGE is actually computed.
    from rouge_score import rouge_scorer, tokenizers

    class _SingleSpaceTokenizer(tokenizers.Tokenizer):
        def tokenize(self, text: str) -> list[str]:
            return text.split(" ")

    _check_level(level)
    _check_pairs(references, hypotheses)
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_SingleSpaceTokenizer())
    total = 0.0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        lcs_score = scorer.score(
            target=_published_rouge_tokens(reference, level),
            prediction=_published_rouge_tokens(hypothesis, level),
        )["rougeL"]
        total += _published_lcs_f(lcs_score.precision, lcs_score.recall)
    return 100.0 * total / len(references)


def translation_scores(
    references: Sequence[str], hypotheses: Sequence[str], level: str = "word"
) -> dict[str, float]:
    """Score a whole split: ``{'bleu1', 'bleu2', 'bleu3', 'bleu4', 'rouge'}`` in percent."""
    scores = bleu(references, hypotheses, level=level)
    scores["rouge"] = rouge(references, hypotheses, level=level)
    return scores
